"""Fingerprints: what produced a result, so results from different set-ups are never compared
as if they were alike."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from . import __version__

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "bitsandbytes", "torchao", "torch-pruning",
            "pyiqa", "torchmetrics", "open-clip-torch", "nvidia-ml-py", "numpy", "pillow")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def project_commit() -> dict[str, Any]:
    """The git commit of the qie-bench source in use, and whether it had local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def environment() -> dict[str, Any]:
    """GPU, driver, CUDA, library versions, CPU and the project commit. Imports torch (for its
    CUDA build) but does not initialise CUDA, so it is safe in the parent process."""
    import torch

    from .nvml import Nvml

    nvml = Nvml()
    gpu = nvml.describe()
    env: dict[str, Any] = {
        "qie_bench": __version__,
        "project": project_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_cuda": torch.version.cuda,
        "gpu_name": gpu.get("gpu_name"),
        "gpu_memory_bytes": gpu.get("gpu_memory_bytes"),
        "driver": gpu.get("driver"),
        "packages": {p: _version(p) for p in PACKAGES},
    }
    env["hardware_class"] = f"gpu:{env['gpu_name']}" if env["gpu_name"] else f"cpu:{env['cpu']}"
    return env


def file_sha256_hex(path: Path, chunk: int = 8 * 2**20) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights files are GiBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The same as "sha256:<hex>", the form result files and manifests record."""
    return "sha256:" + file_sha256_hex(path)

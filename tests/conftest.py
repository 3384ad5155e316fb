"""Shared fixtures: suite files written into tmp_path that point at the shipped case set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "suites" / "cases" / "edit-v1"

# Test support that is not part of the package: the gate's noise model lives beside the benchmark
# that is its main user (benchmarks/noise_model.py).
sys.path.insert(0, str(ROOT / "benchmarks"))

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_SUITE = """
schema_version = 1
name = "{name}"
baseline_variant = "{baseline}"

[model]
source = "tiny"
device = "cpu"

[model.tiny]
reference_area = 4096
condition_area = 3136

[cases]
path = "{cases}"
select = {select}

[generation]
steps = {steps}
true_cfg_scale = 4.0
width = 64
height = 64

[measurement]
warmup_runs = 0
repeats = {repeats}
case_timeout_s = {timeout}
build_timeout_s = 300
max_child_restarts = 3

[metrics]
{metrics}
"""

VARIANT = """
[[variants]]
name = "{name}"
kind = "dtype"
dtype = "{dtype}"
"""


@pytest.fixture
def write_suite(tmp_path: Path):
    """write_suite(variants={"fp32": "fp32"}, select=[...], ...) -> path of a tiny CPU suite."""

    def _write(variants: dict[str, str] | None = None, *, name: str = "t", select: list[str] | None = None,
               steps: int = 2, repeats: int = 1, timeout: float = 60, metrics: str = 'names = ["psnr", "ssim"]\nweights = "random"',
               extra: str = "") -> Path:
        variants = variants or {"fp32": "fp32"}
        text = TINY_SUITE.format(name=name, baseline=next(iter(variants)), cases=CASES.as_posix(),
                                 select=repr(select if select is not None else []).replace("'", '"'),
                                 steps=steps, repeats=repeats, timeout=timeout, metrics=metrics)
        text += "".join(VARIANT.format(name=n, dtype=d) for n, d in variants.items()) + extra
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        return path

    return _write


@pytest.fixture(autouse=True)
def isolated_variant_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Built variants (pruning scores, students) are cached per test, never in ~/.cache."""
    monkeypatch.setenv("QIE_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def torch_one_thread():
    """The tiny model's ops are too small for intra-op threads; on a busy 2-core machine two
    threads make every op wait (about 10x slower, measured)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)

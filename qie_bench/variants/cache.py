"""On-disk cache of built variants: their weights as safetensors plus a JSON record.

For variants that are expensive to BUILD — pruning with importance scores, distilled students —
so that a second run (or the next child process after a crash) loads the result instead of
recomputing it. The quantization kinds do not use it: converting takes about a second even at
full size, less than verifying and reading back a cache entry (see ``quantize.py``).

Layout: ``<root>/<key>/weights.safetensors`` and ``<root>/<key>/entry.json``, where ``root`` is
``$QIE_BENCH_CACHE`` or ``~/.cache/qie-bench/variants`` and ``key`` is the sha256 of:

- the base model's identity (``LoadedModel.identity``: source, seed and config hash, or Hugging
  Face id and revision),
- the variant's kind and options (canonical JSON),
- the versions of qie-bench and the libraries that build and hold the weights,
- anything else the variant passes as ``extra`` (e.g. its algorithm's own version).

Real weights whose revision is unknown (a local folder that is no Hugging Face snapshot) are
never cached: the same key could name different weights (``cacheable`` says so).

Integrity: ``entry.json`` records the size and sha256 of the weights file; ``lookup`` checks both
before handing the entry out. A mismatch (a truncated or corrupted file) removes the entry and
reports a miss, so the caller rebuilds it — it is never loaded. Writes are atomic: the entry is
written into a temporary folder beside it and renamed into place, so a crash leaves either no
entry or a whole one. Set ``QIE_BENCH_CACHE=off`` to disable the cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..fingerprint import file_sha256_hex

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
ENTRY = "entry.json"
# Packages whose versions are part of every key: they build, hold or load the weights.
KEY_PACKAGES = ("torch", "diffusers", "transformers", "safetensors")


def default_cache_dir() -> Path | None:
    """`$QIE_BENCH_CACHE`, or ~/.cache/qie-bench/variants; None when set to 'off'."""
    env = os.environ.get("QIE_BENCH_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "false", "no", "none"):
        return None
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "qie-bench" / "variants"


def library_versions(extra_packages: tuple[str, ...] = ()) -> dict[str, str]:
    from .. import __version__

    versions = {"qie_bench": __version__}
    for pkg in (*KEY_PACKAGES, *extra_packages):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def cacheable(identity: Mapping[str, Any]) -> tuple[bool, str]:
    """(whether a base with this identity can key a cache entry, why not)."""
    if identity.get("source") == "pretrained" and identity.get("revision") in (None, "", "unknown"):
        return False, "the base weights' revision is unknown (a local folder): the same key could name other weights"
    return True, ""


def cache_key(identity: Mapping[str, Any], kind: str, options: Mapping[str, Any],
              versions: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """The hex sha256 naming one built variant of one base model."""
    material = {
        "format": FORMAT_VERSION,
        "base": dict(identity),
        "kind": kind,
        "options": dict(options),
        "versions": dict(versions if versions is not None else library_versions()),
        "extra": dict(extra or {}),
    }
    blob = json.dumps(material, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _plain_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, one storage each (safetensors refuses shared or strided ones)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"cache entries hold tensors only; '{name}' is {type(t).__name__}")
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"'{name}' is a {type(t).__name__}: quantized tensor subclasses do not round-trip through safetensors")
        t = t.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident in seen:
            t = t.clone()
        seen.add(ident)
        out[name] = t
    return out


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path  # the entry's folder
    record: dict[str, Any]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.get("meta", {})


class VariantCache:
    """Built variants on disk, verified by sha256 before use."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.last_miss: str | None = None  # why the last lookup missed: "absent", "corrupt: …"

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def entry_dir(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are hex digests, not '{key}'")
        assert self.root is not None
        return self.root / key

    def entry(self, key: str) -> CacheEntry | None:
        """The verified entry for `key`, or None (absent, or corrupt and now removed)."""
        self.last_miss = None
        if not self.enabled:
            self.last_miss = "cache disabled"
            return None
        folder = self.entry_dir(key)
        record_path, weights = folder / ENTRY, folder / WEIGHTS
        if not record_path.is_file():
            self.last_miss = "absent"
            return None
        try:
            record = json.loads(record_path.read_text())
            problem = None
            if record.get("format") != FORMAT_VERSION:
                problem = f"entry format {record.get('format')} (expected {FORMAT_VERSION})"
            elif record.get("key") != key:
                problem = "entry records another key"
            elif not weights.is_file():
                problem = "weights file missing"
            elif weights.stat().st_size != record.get("size"):
                problem = f"size {weights.stat().st_size} != recorded {record.get('size')}"
            elif file_sha256_hex(weights) != record.get("sha256"):
                problem = "sha256 mismatch"
        except (OSError, ValueError) as err:
            problem, record = f"unreadable entry ({err})", {}
        if problem:
            self.last_miss = f"corrupt: {problem}"
            log.warning("variant cache entry %s is corrupt (%s); removing it, the variant is rebuilt", key[:12], problem)
            self.evict(key)
            return None
        return CacheEntry(key, folder, record)

    def lookup(self, key: str) -> Path | None:
        """Path of the verified weights file for `key`, or None."""
        found = self.entry(key)
        return found.weights_path if found else None

    def load(self, key: str, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """(state_dict, meta) of a verified entry, or None."""
        from safetensors.torch import load_file

        found = self.entry(key)
        if found is None:
            return None
        return load_file(found.weights_path, device=str(device)), found.meta

    def store(self, key: str, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> Path:
        """Write an entry atomically; returns its weights path. An existing entry is replaced."""
        from safetensors.torch import save_file

        if not self.enabled:
            raise RuntimeError("the variant cache is disabled (QIE_BENCH_CACHE=off)")
        folder = self.entry_dir(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=self.root))
        try:
            weights = tmp / WEIGHTS
            save_file(_plain_state_dict(state_dict), str(weights))
            with open(weights, "rb+") as f:
                os.fsync(f.fileno())
            record = {
                "format": FORMAT_VERSION,
                "key": key,
                "sha256": file_sha256_hex(weights),
                "size": weights.stat().st_size,
                "tensors": len(state_dict),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "meta": json.loads(json.dumps(dict(meta or {}), default=str)),
            }
            (tmp / ENTRY).write_text(json.dumps(record, indent=1, sort_keys=True))
            _fsync_dir(tmp)
            if folder.exists():
                self.evict(key)
            try:
                os.replace(tmp, folder)
            except OSError:
                # Another process stored the same key meanwhile: keep theirs if it verifies.
                if self.entry(key) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder / WEIGHTS

    def evict(self, key: str) -> None:
        """Remove an entry (renamed aside first, so a half-removed entry is never looked up)."""
        folder = self.entry_dir(key)
        if not folder.exists():
            return
        aside = folder.with_name(f".evict-{key[:12]}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.replace(folder, aside)
        except OSError:
            aside = folder
        shutil.rmtree(aside, ignore_errors=True)

    def get_or_build(
        self,
        key: str,
        build: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]],
        device: str | torch.device = "cpu",
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
        """(state_dict, meta, status): loaded from a verified entry ("hit"), or built and stored
        ("miss", or "rebuilt (corrupt: …)" when the entry failed its check)."""
        loaded = self.load(key, device)
        if loaded is not None:
            return loaded[0], loaded[1], "hit"
        if not self.enabled:
            status = "disabled"
        else:
            status = "miss" if self.last_miss == "absent" else f"rebuilt ({self.last_miss})"
        state_dict, meta = build()
        if self.enabled:
            self.store(key, state_dict, meta)
        return dict(state_dict), dict(meta), status


def variant_cache_key(variant: Any, loaded: Any, extra_packages: tuple[str, ...] = (), extra: Mapping[str, Any] | None = None) -> str | None:
    """The cache key of `variant` built on `loaded`, or None when the base is not cacheable."""
    ok, _why = cacheable(loaded.identity)
    if not ok:
        return None
    return cache_key(loaded.identity, variant.kind, variant.options.model_dump(mode="json"),
                     library_versions(extra_packages), extra)

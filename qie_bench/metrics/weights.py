"""The metric models' common machinery: where real weights are found, seeded random stand-ins, the store.

Each model-backed metric declares a :class:`ModelSpec` in its own module (pyiqa-style: the
module that uses a model owns its file names, checksums and builders): ``clip_rn50`` in
``catalog/clip_iqa.py``, ``lpips_alex`` in ``catalog/lpips.py``, ``clip_vit_l14`` in
``catalog/clip_score.py``. A model two metrics share would live in one small module both import.

Real weights are looked up, in order, in ``weights_dir`` and then in the caches the libraries
themselves download into, read at call time, so ``TORCH_HOME``, ``HF_HOME``, ``HF_HUB_CACHE``,
``XDG_CACHE_HOME`` and ``HOME`` apply as they do for the libraries (each spec's module lists its
exact places). Only files that exist are opened (``local_files_only=True`` for transformers),
so a missing file fails at once with a :class:`~qie_bench.errors.UserInputError` that lists
every place looked and how to fill it: never a download, never a silent fallback to random
weights. (``qie-bench score`` with its default metric list skips such metrics and says so; see
:class:`~qie_bench.metrics.scorer.Scorer`.)

Random weights (``weights="random"``) are a first-class mode for CI and CPU smoke runs: small
models of the *same classes*, initialised from ``random_seed`` inside a forked RNG (the caller's
global RNG is untouched), so every code path runs offline in seconds and two runs with the same
seed score identically. Their values mean nothing about image quality; every score set records
``weights_kind``.

Nothing here imports torch at module level: specs are declarations, read without torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from ..errors import UserInputError
from ..fingerprint import file_sha256_hex

WeightsKind = Literal["real", "random"]


@dataclass(frozen=True)
class LoadedModel:
    """A built metric model and what it is, for the record.

    ``model`` is the object the metric calls: pyiqa's ``CLIPIQA`` module, torchmetrics' LPIPS
    module, or a ``(CLIPModel, CLIPProcessor)`` pair.
    """

    key: str
    model: Any
    backbone: str
    weights: WeightsKind
    source: str  # the file or folder loaded, or "random init (seed N)"


# ---------------------------------------------------------------------------------------------
# Where the libraries keep their caches
# ---------------------------------------------------------------------------------------------


def torch_hub_dir() -> Path:
    """torch.hub's folder (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``), as torch resolves it now."""
    import torch

    return Path(torch.hub.get_dir())


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment *now*.

    ``huggingface_hub.constants`` freezes these paths when it is first imported; resolving them
    here honours changes made later in the process (tests, or a caller setting ``HF_HOME``).
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


# ---------------------------------------------------------------------------------------------
# Finding real weights
# ---------------------------------------------------------------------------------------------


class WeightsNotFound(Exception):
    """Internal: one model's weights are missing; collected into one UserInputError."""

    def __init__(self, looked: list[str], problems: list[str]) -> None:
        super().__init__("; ".join(problems) or "not found")
        self.looked, self.problems = looked, problems


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size/mtime in the key: a replaced file is re-hashed
    return file_sha256_hex(Path(path))


def file_hash(path: Path) -> str:
    """SHA-256 (hex) of a weights file, cached while its size and mtime stay the same."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def first_verified_file(candidates: list[Path], sha256_prefix: str) -> Path:
    """The first existing candidate whose SHA-256 starts with ``sha256_prefix``."""
    problems = []
    for path in candidates:
        if path.is_file():
            if file_hash(path).startswith(sha256_prefix):
                return path
            problems.append(f"{path} exists but its SHA-256 does not match (partial or different file)")
    raise WeightsNotFound([str(p) for p in candidates], problems)


def deduplicated(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def hf_cache_snapshots(cache_dir: Path, repo_id: str) -> list[Path]:
    """Snapshot folders of ``repo_id`` in a hub cache, the one ``refs/main`` points at first."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    ordered = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        ordered.append(snapshots / ref.read_text().strip())
    ordered += sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return deduplicated([p for p in ordered if p.is_dir()])


# ---------------------------------------------------------------------------------------------
# Building models
# ---------------------------------------------------------------------------------------------


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded, restoring the caller's RNG state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ---------------------------------------------------------------------------------------------
# The spec a metric module declares, and the store
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How to find, build and describe one metric model; declared by the metric module that uses it.

    ``locate`` finds the real weights (raising :class:`WeightsNotFound`); ``build_real`` and
    ``build_random`` return the object the metric calls. None of them runs at declaration time.
    """

    key: str  # unique model name, e.g. "clip_rn50"
    label: str  # what the user must provide, for messages
    real_backbone: str
    random_backbone: str
    locate: Callable[[Path | None], Path] = field(compare=False)
    build_real: Callable[[Path, Any], Any] = field(compare=False)  # (path, torch.device)
    build_random: Callable[[int, Any], Any] = field(compare=False)  # (seed, torch.device)
    how_to_get: str = ""  # one-line instruction for a machine with network access
    # The MetricsConfig field that names this model's location explicitly (e.g. "judge"); when
    # set, ``locate`` receives that location (or None when unset) instead of ``weights_dir``.
    config_key: str | None = None


class ModelStore:
    """Builds each metric model at most once, from real files or from a seed.

    With real weights, :meth:`locate_all` finds every needed file first, before any model is
    built; :meth:`preflight` turns what is missing into one :class:`UserInputError`.
    """

    def __init__(self, weights: WeightsKind, weights_dir: str | None, device: str, seed: int,
                 locations: dict[str, str | None] | None = None) -> None:
        self.weights = weights
        self.locations = dict(locations or {})  # a spec's config_key -> its configured location
        self.weights_dir = Path(weights_dir).expanduser() if weights_dir else None
        self.device = device
        self.seed = seed
        self._located: dict[str, Path] = {}
        self._built: dict[str, LoadedModel] = {}

    def locate_all(self, needs: dict[ModelSpec, list[str]]) -> dict[ModelSpec, str]:
        """Locate the real weights of every spec in ``needs`` (spec -> metric names); return, per
        spec whose files are missing, the message saying what is missing, where it looked and how
        to get it (empty with random weights)."""
        if self.weights != "real":
            return {}
        missing = {}
        for spec, metric_names in needs.items():
            where = self.weights_dir
            if spec.config_key is not None:
                given = self.locations.get(spec.config_key)
                where = Path(given).expanduser() if given else None
            try:
                self._located[spec.key] = spec.locate(where)
            except WeightsNotFound as err:
                detail = "; ".join(err.problems + [f"looked in: {', '.join(err.looked)}"])
                missing[spec] = f"{spec.label} for {', '.join(metric_names)} ({detail}; to get it: {spec.how_to_get})"
        return missing

    def missing_error(self, missing: dict[ModelSpec, str]) -> UserInputError:
        """One error naming every missing model."""
        dir_note = ""
        if self.weights_dir is not None and not self.weights_dir.is_dir():
            dir_note = f" (weights_dir {self.weights_dir} does not exist)"
        return UserInputError(
            "metrics weights=real",
            f"pretrained metric weights not found{dir_note}: " + " | ".join(missing.values()),
            f"provide the files (torch hub dir is {torch_hub_dir()}, Hugging Face cache is {hf_hub_cache_dir()}) "
            "or pass weights_dir / --weights-dir; or use weights='random' (--weights random), whose scores "
            "only exercise the plumbing",
        )

    def preflight(self, needs: dict[ModelSpec, list[str]]) -> None:
        """:meth:`locate_all`, raising one :class:`UserInputError` for everything missing."""
        missing = self.locate_all(needs)
        if missing:
            raise self.missing_error(missing)

    def get(self, spec: ModelSpec) -> LoadedModel:
        """The model of ``spec``, built on first use."""
        import torch

        if spec.key not in self._built:
            device = torch.device(self.device)
            if self.weights == "real":
                if spec.key not in self._located:
                    self.preflight({spec: [spec.key]})
                path = self._located[spec.key]
                model = spec.build_real(path, device)
                loaded = LoadedModel(spec.key, model, spec.real_backbone, "real", str(path))
            else:
                model = spec.build_random(self.seed, device)
                loaded = LoadedModel(spec.key, model, spec.random_backbone, "random", f"random init (seed {self.seed})")
            self._built[spec.key] = loaded
        return self._built[spec.key]

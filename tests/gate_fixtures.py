"""Example run directories for the gate tests, written the way the runner writes them.

Each run is drawn from a seeded `NoiseModel` (qie_bench.gate.simulate): per-case latency levels
that differ between cases, repeat-to-repeat jitter with occasional slow outliers, a shift common
to the whole run, near-fixed memory peaks and deterministic-but-for-a-hair quality scores. The
records go through `RecordLog`, the summary through `summarize_variant` and `atomic_write_json`,
and `run.json` is the orchestrator's shape — so the gate reads exactly what a real run leaves.

"Same world, new seed" is an honest re-run; planting a change (`latency_factor`, `metric_shift`,
`statuses`, ...) is a regression of known size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qie_bench.cli import main
from noise_model import NoiseModel, RunMeta, write_run_dir

# A realistic [gates] table (as in docs/gate.md), with one per-variant override.
GATES: dict[str, Any] = {
    "latency_p50_s": "+5%",
    "latency_p95_s": "+8%",
    "peak_vram_bytes": "+3%",
    "oom_rate": "0",
    "ssim_vs_baseline": "-0.02",
    "lpips_vs_baseline": "+0.02",
    "clip_iqa": "-6%",
    "psnr": "±1.0",
    "nf4": {"latency_p95_s": "+25%"},
}
VARIANTS = ("bf16", "nf4")


@contextmanager
def no_fsync() -> Iterator[None]:
    """Skip fsync while writing example runs: durability is the results module's concern (and
    tested with it); here it would only make each run directory cost half a second of disk."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        yield


def make_world(seed: int = 7, *, gates: dict[str, Any] | None = None, cases: int = 12, repeats: int = 3,
               jitter_sd: float = 0.02, meta: RunMeta | None = None) -> NoiseModel:
    """The 'true' figures of a suite on one machine (seeded), and how re-runs scatter."""
    meta = meta or RunMeta(gates=GATES if gates is None else gates, baseline_variant="bf16")
    return NoiseModel.synthetic(seed, variants=VARIANTS, cases=cases, repeats=repeats, jitter_sd=jitter_sd, meta=meta)


def write_run(out: Path, world: NoiseModel, seed: int, *, meta: RunMeta | None = None,
              transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
              write_summary: bool = True, **plant: Any) -> Path:
    """Draw one run of `world` with RNG `seed` (plus any planted change) and write its directory."""
    records = world.sample(np.random.default_rng(seed), run_id=f"run{seed:04d}", **plant)
    if transform is not None:
        records = transform(records)
    return write_run_dir(out, meta or world.meta, f"run{seed:04d}", records, world.planned_keys(), write_summary=write_summary)


def promote(run_dir: Path, to: Path, *extra: str) -> int:
    return main(["baseline", "promote", str(run_dir), "--to", str(to), *extra])


def gate(run_dir: Path, baseline: Path, *extra: str) -> int:
    return main(["gate", str(run_dir), "--baseline", str(baseline), *extra])


def with_meta(world: NoiseModel, **changes: Any) -> RunMeta:
    return replace(world.meta, **changes)


def drop_metric(variant: str, metric: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """A transform that removes one metric from one variant's records (a metric that crashed)."""

    def _t(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in records:
            if r["variant"] == variant and r.get("metrics"):
                r["metrics"] = {k: v for k, v in r["metrics"].items() if k != metric}
        return records

    return _t


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())

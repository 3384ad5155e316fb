"""The Python API: what the `qie-bench` command does, for notebooks and other tools.

```python
import qie_bench

suite = qie_bench.load_suite("suites/smoke.toml")
result = qie_bench.run(suite, out="runs/api", variants=["fp32"], cases=["txt-price-mug"])
result.summary.variants["fp32"].latency_p50_s
df = result.to_pandas()                      # one row per record

verdict = qie_bench.gate(result, "baselines/smoke/cpu.json")
verdict.exit_code                            # 0 pass, 1 regression, 2 not comparable
```

A suite built in code runs the same way as one read from a file::

    from qie_bench.suite import Suite, CasesConfig, ModelConfig, VariantEntry
    suite = Suite(name="mine", model=ModelConfig(source="tiny", device="cpu"),
                  cases=CasesConfig(path="suites/cases/edit-v1"),
                  variants=(VariantEntry(name="fp32", kind="dtype", dtype="fp32"),))

Bad input raises `qie_bench.errors.UserInputError` (the CLI's exit code 2) with a one-line message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .results import Record, RunDir, RunSummary

if TYPE_CHECKING:
    import pandas as pd

    from .gate.compare import GateResult
    from .runner.executors import Executor
    from .runner.orchestrator import Progress
    from .suite import Suite


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file (torch is not imported)."""
    from .suite import load_suite as _load

    return _load(path)


@dataclass(frozen=True)
class RunResult:
    """A finished (or loaded) run directory: its typed summary and records."""

    path: Path
    summary: RunSummary
    records: list[Record]

    @classmethod
    def open(cls, path: str | Path) -> RunResult:
        rd = RunDir.load(path)
        return cls(rd.path, rd.summary, rd.latest_records())

    def to_pandas(self) -> pd.DataFrame:
        """One row per record: identity, status, timings, memory, output facts and one column per
        metric (lists such as per-step times stay lists; nested details are left out)."""
        import pandas as pd

        rows = []
        for r in self.records:
            row: dict[str, Any] = {}
            for key, value in r.model_dump(mode="json", exclude={"metrics"}).items():
                if not isinstance(value, dict):
                    row[key] = value
            for name in (r.metrics or {}):
                row[name] = r.metric(name)
            rows.append(row)
        return pd.DataFrame(rows)


def run(suite: Suite | str | Path, out: str | Path | None = None, *, variants: Sequence[str] | None = None,
        cases: Sequence[str] | None = None, resume: bool = False, without_baseline: bool = False,
        memory_budget: str | int | None = None, offload: str | None = None, size: str | tuple[int, int] | None = None,
        progress: Progress | None = None, executor: str | Executor = "local", address: str | None = None) -> RunResult:
    """Run a suite (a `Suite` or a suite file) and return its result; writes `out` as
    `qie-bench run` does (default `runs/<UTC time>-<suite name>/`). `variants` and `cases` select
    subsets (the baseline variant is added unless `without_baseline`); `memory_budget`, `offload`
    and `size` override the suite and enter its fingerprint. `executor` is "local" (one child process
    at a time), "ray" (units in parallel on the Ray cluster at `address`, or a local one) or an
    `Executor` instance (e.g. `RayExecutor(shards=2)`)."""
    from .plan import Overrides, apply_overrides, make_plan
    from .runner.orchestrator import Orchestrator, default_out_dir, prepare_out_dir
    from .suite import Suite, check_suite

    s = suite if isinstance(suite, Suite) else load_suite(suite)
    if isinstance(suite, Suite):
        check_suite(s, f"suite '{s.name}'")
    s = apply_overrides(s, Overrides(variants=tuple(variants) if variants is not None else None,
                                     cases=tuple(cases) if cases is not None else None,
                                     without_baseline=without_baseline, memory_budget=memory_budget,
                                     offload=offload, size=size))
    target = Path(out) if out is not None else default_out_dir(s)
    plan = make_plan(s)
    if isinstance(executor, str):
        from .runner.executor_registry import make_executor

        executor = make_executor(executor, **({"address": address} if address is not None else {}))
    prepare_out_dir(target, resume)
    Orchestrator(plan, target, resume=resume, progress=progress, executor=executor).run()
    return RunResult.open(target)


def score(output: Any, source: Any, *, reference: Any = None, mask: Any = None, caption: str | None = None,
          metrics: Sequence[str] | None = None, weights: str = "real", weights_dir: str | None = None,
          device: str = "cpu") -> dict[str, Any]:
    """Score one edited image (a path or a PIL image) against its source, as `qie-bench score`.
    Returns ``{"scores": {name: value}, "reasons": {name: why None}, "notes": [...]}``."""
    from .metrics.prepared import ScoreInputs
    from .metrics.config import MetricsConfig
    from .metrics.images import load_image, load_mask
    from .metrics.scorer import Scorer

    def image(x: Any) -> Any:
        return load_image(x) if isinstance(x, (str, Path)) else x

    src = image(source)
    fields: dict[str, Any] = {"weights": weights, "weights_dir": weights_dir, "device": device}
    if metrics is not None:
        fields["names"] = tuple(metrics)
    scorer = Scorer(MetricsConfig(**fields))
    m = load_mask(mask, src.size) if isinstance(mask, (str, Path)) else mask
    results, notes = scorer.score_detailed(ScoreInputs(output=image(output), source=src,
                                                       baseline_output=image(reference) if reference is not None else None,
                                                       mask=m, caption=caption))
    return {"scores": {k: r.value for k, r in results.items()},
            "reasons": {k: r.reason for k, r in results.items() if r.reason}, "notes": notes}


def gate(run: RunResult | str | Path, baseline: str | Path, *, latency_null: str = "threshold") -> GateResult:
    """Compare a run (a `RunResult` or a run directory) with a baseline file; `.exit_code` is what
    `qie-bench gate` exits with, `.checks` every check with its verdict."""
    from .gate import check

    return check(run, baseline, latency_null=latency_null)

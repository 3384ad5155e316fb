"""Regression gate: compare a run with a promoted baseline (see docs/gate.md).

- `thresholds`: the suite's `[gates]` table -> typed `Gates` (`parse_gates`).
- `rundata`: a run directory or baseline file -> `RunData` (validated records and fingerprints).
- `baseline`: `promote` a run into `baselines/<suite>/<hardware>.json`, `load_baseline`.
- `stats`: van Elteren's stratified rank-sum test, per-case paired changes and the tail test, intervals, `GateSettings`.
- `compare`: the rules -> `GateResult` (exit code 0 pass, 1 regression or untestable, 2 not comparable).
- `junit`, `markdown`: reports for CI.
"""

import sys
import types
from typing import Any

from .thresholds import Direction, Gates, Threshold, check_gate_variants, metric_direction, parse_gates

__all__ = ["Direction", "Gates", "Threshold", "check", "check_gate_variants", "metric_direction", "parse_gates"]


def check(run: Any, baseline: Any, *, latency_null: str = "threshold") -> Any:
    """Gate a run (a run directory, or anything with a `.path` to one, such as `qie_bench.RunResult`)
    against a baseline file: the `GateResult` whose `.exit_code` `qie-bench gate` exits with."""
    from pathlib import Path

    from .baseline import load_baseline
    from .compare import compare
    from .rundata import load_run
    from .stats import GateSettings

    path = Path(getattr(run, "path", run))
    return compare(load_baseline(Path(baseline)), load_run(path), settings=GateSettings(latency_null=latency_null))


class _GatePackage(types.ModuleType):
    """`qie_bench.gate` is both this package and the API function `qie_bench.gate(run, baseline)`:
    importing a submodule binds the package to the name, so the package itself is callable."""

    def __call__(self, run: Any, baseline: Any, **kwargs: Any) -> Any:
        return check(run, baseline, **kwargs)


sys.modules[__name__].__class__ = _GatePackage

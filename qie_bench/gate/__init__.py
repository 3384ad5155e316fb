"""Regression gate: compare a run with a promoted baseline (see docs/gate.md).

- `thresholds`: the suite's `[gates]` table -> typed `Gates` (`parse_gates`).
- `rundata`: a run directory or baseline file -> `RunData` (validated records and fingerprints).
- `baseline`: `promote` a run into `baselines/<suite>/<hardware>.json`, `load_baseline`.
- `stats`: van Elteren's stratified rank-sum test, bootstrap intervals, `GateSettings`.
- `compare`: the rules -> `GateResult` (exit code 0 pass, 1 regression, 2 not comparable).
- `junit`, `markdown`: reports for CI.
- `simulate`: a noise model of a run, for tests and the false-positive benchmark.
"""

from .thresholds import Direction, Gates, Threshold, check_gate_variants, metric_direction, parse_gates

__all__ = ["Direction", "Gates", "Threshold", "check_gate_variants", "metric_direction", "parse_gates"]

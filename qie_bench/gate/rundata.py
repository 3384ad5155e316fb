"""What the gate reads from a run directory or a baseline file, validated once into one shape.

Both sides of a comparison become a `RunData`: the fingerprints that decide comparability, the
suite's raw `[gates]` table, and every per-case/per-repeat record. The gate recomputes every
figure it compares from the records (the summary is only used for fingerprints and for the
per-variant figures that have no per-record source, such as `weights_bytes`), so a baseline and
a run are always aggregated by the same code.

Anything malformed (missing file, truncated JSON, a record with a string where a number belongs,
an unknown schema version) is a one-line `UserInputError`, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import Record, RunDir, Status, from_json_number
from ..results.summary import check_summary  # noqa: F401  (re-exported: baseline files are checked the same way)
from ..results.records import validate_records  # noqa: F401  (re-exported)



@dataclass(frozen=True)
class RunData:
    """One side of a comparison: a run directory or a baseline file."""

    label: str  # "run runs/ci" / "baseline baselines/smoke/cpu.json": how messages name it
    run_id: str
    fingerprint: dict[str, Any]
    weights: dict[str, Any]
    gates: dict[str, Any]
    baseline_variant: str | None
    variants: list[str]  # in run order
    variant_summaries: dict[str, dict[str, Any]]
    records: list[Record]
    planned_keys: list[str] | None  # None when the plan is unknown
    summary_complete: bool
    generation: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # e.g. why a baseline was promoted from an incomplete run
    # A baseline promoted from several runs: each run's latency statistics (see
    # `run_to_run_section`), so the gate can tell a regression from the machine's run-to-run wobble.
    run_to_run: dict[str, Any] | None = None
    _by_variant: dict[str, list[Record]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One record per key, the last one (a later record for the same key supersedes it).
        by_key: dict[str, Record] = {r.key: r for r in self.records}
        grouped: dict[str, list[Record]] = {}
        for r in by_key.values():
            grouped.setdefault(r.variant, []).append(r)
        object.__setattr__(self, "_by_variant", grouped)  # frozen: set once, here

    # -- identity --------------------------------------------------------------------------------

    @property
    def hardware_class(self) -> str | None:
        return (self.fingerprint.get("environment") or {}).get("hardware_class")

    @property
    def suite_name(self) -> str | None:
        return (self.fingerprint.get("suite") or {}).get("name")

    @property
    def missing_keys(self) -> list[str]:
        """Planned items that have no record."""
        if self.planned_keys is None:
            return []
        have = {r.key for rs in self._by_variant.values() for r in rs}
        return [k for k in self.planned_keys if k not in have]

    @property
    def complete(self) -> bool:
        return self.summary_complete and not self.missing_keys

    # -- values ----------------------------------------------------------------------------------

    def has_variant(self, variant: str) -> bool:
        return variant in self.variant_summaries or variant in self._by_variant

    def records_of(self, variant: str) -> list[Record]:
        return list(self._by_variant.get(variant, []))

    def cases_of(self, variant: str) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for r in self.records_of(variant):
            out.setdefault(r.case_id, []).append(r)
        return out

    def timings_by_case(self, variant: str, field_name: str) -> dict[str, list[float]]:
        """Per-repeat raw timings of OK records, grouped by case (`step_s` lists are pooled)."""
        out: dict[str, list[float]] = {}
        for r in self.records_of(variant):
            if not r.ok:
                continue
            if field_name == "step_s":
                values = [float(s) for s in (r.step_s or [])]
            else:
                v = r.value(field_name)
                values = [] if v is None else [float(v)]
            if values:
                out.setdefault(r.case_id, []).extend(values)
        return out

    def latency_statistic(self, variant: str, name: str) -> float | None:
        """A latency gate key's pooled statistic over every OK repeat (as in summary.json)."""
        from .stats import pooled_statistic
        from .thresholds import LATENCY_KEYS

        field_name, which = LATENCY_KEYS[name]
        timings = self.timings_by_case(variant, field_name)
        return pooled_statistic(timings, which) if timings else None

    def metric_by_case(self, variant: str, metric: str) -> dict[str, float]:
        """One value per case: repeat 0 of OK records (repeats of a seeded edit are the same image)."""
        out: dict[str, float] = {}
        for r in self.records_of(variant):
            if r.ok and r.repeat == 0:
                v = r.metric(metric)
                if v is not None:
                    out[r.case_id] = v
        return out

    def has_metric(self, variant: str, metric: str) -> bool:
        summary_metrics = (self.variant_summaries.get(variant) or {}).get("metrics") or {}
        return metric in summary_metrics or bool(self.metric_by_case(variant, metric))

    def memory_max(self, variant: str, key: str) -> int | None:
        values = [r.value(key) for r in self.records_of(variant) if r.ok and r.value(key) is not None]
        return max(values) if values else None

    def summary_value(self, variant: str, key: str) -> float | None:
        v = (self.variant_summaries.get(variant) or {}).get(key)
        return None if v is None else from_json_number(v)

    def oom_rate(self, variant: str) -> float | None:
        """OOM attempts / attempts (OK + OOM + ERROR + TIMEOUT), as in summary.json."""
        attempts = [r for r in self.records_of(variant) if r.status is not Status.SKIPPED]
        if not attempts:
            return None
        return sum(1 for r in attempts if r.status is Status.OOM) / len(attempts)


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# ---------------------------------------------------------------------------------------------
# Reading a run directory


def load_run(run_dir: Path) -> RunData:
    """Read and check a run directory (run.json, summary.json, cases.jsonl)."""
    return run_data_of(RunDir.load(run_dir))


def run_data_of(rd: RunDir) -> RunData:
    """The gate's view of a loaded run directory."""
    summary = rd.summary_json if rd.summary_json is not None else rd.rebuilt_summary()
    return RunData(
        label=f"run {rd.path}",
        run_id=summary["run_id"],
        fingerprint=summary["fingerprint"],
        weights=summary["weights"],
        gates=summary.get("gates") or {},
        baseline_variant=summary.get("baseline_variant"),
        variants=list(summary["variants"]),
        variant_summaries=summary["variants"],
        records=rd.records,
        planned_keys=rd.planned_keys,
        summary_complete=bool(summary["complete"]),
        generation=summary.get("generation") or {},
        measurement=summary.get("measurement") or {},
    )


def run_to_run_section(runs: list[RunData]) -> dict[str, Any]:
    """What a baseline keeps of several comparable runs for the gate's run-to-run test: which runs,
    and per variant and latency key each run's statistic (None where a run has no OK timing)."""
    from .thresholds import LATENCY_KEYS

    variants = list(dict.fromkeys(v for r in runs for v in r.variants))
    return {
        "runs": [{"run_id": r.run_id, "label": r.label} for r in runs],
        "latency": {v: {k: [r.latency_statistic(v, k) for r in runs] for k in LATENCY_KEYS} for v in variants},
    }

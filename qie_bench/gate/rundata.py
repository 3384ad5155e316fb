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

import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UserInputError
from ..results import Status, from_json_number, load_json_file, read_records, schema_text

_NONFINITE = ("inf", "-inf", "nan")


class GateRecord(BaseModel):
    """The fields of a `cases.jsonl` record the gate uses, checked for type. Other fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    key: str
    variant: str
    case_id: str
    repeat: int = Field(ge=0)
    status: Status
    error: str | None = None
    latency_s: float | None = Field(None, ge=0)
    step_s: list[float] | None = None
    output_finite: bool | None = None
    output_constant: bool | None = None
    peak_vram_bytes: int | None = Field(None, ge=0)
    peak_vram_process_bytes: int | None = Field(None, ge=0)
    torch_peak_allocated_bytes: int | None = Field(None, ge=0)
    torch_peak_reserved_bytes: int | None = Field(None, ge=0)
    rss_peak_bytes: int | None = Field(None, ge=0)
    metrics: dict[str, float | str | None] | None = None

    @field_validator("metrics")
    @classmethod
    def _metric_values(cls, v: dict[str, float | str | None] | None) -> dict[str, float | str | None] | None:
        for name, value in (v or {}).items():
            if isinstance(value, str) and value not in _NONFINITE:
                raise ValueError(f"metric {name} is the string '{value}', not a number (or \"inf\"/\"-inf\"/\"nan\")")
        return v

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def broken_output(self) -> str | None:
        """Why an OK record's image is unusable (non-finite or constant), or None."""
        if self.output_finite is False:
            return "non-finite output"
        if self.output_constant is True:
            return "constant output"
        return None

    def metric(self, name: str) -> float | None:
        """A metric value as a float (inf/nan included); None when absent."""
        value = (self.metrics or {}).get(name)
        return None if value is None else from_json_number(value)


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {e['msg'].removeprefix('Value error, ')}{more}"


def validate_records(raw: Iterable[dict[str, Any]], where: str) -> list[GateRecord]:
    """Type-check records; the first bad one is a UserInputError naming its position."""
    out: list[GateRecord] = []
    for i, rec in enumerate(raw):
        try:
            out.append(GateRecord.model_validate(rec))
        except ValidationError as err:
            raise UserInputError(f"{where}: record {i + 1} ({rec.get('key', '?')})", f"is malformed: {_first_error(err)}",
                                 "the file is corrupted or was written by another qie-bench version") from None
    return out


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
    records: list[GateRecord]
    planned_keys: list[str] | None  # None when the plan is unknown
    summary_complete: bool
    generation: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # e.g. why a baseline was promoted from an incomplete run
    # A baseline promoted from several runs: each run's latency statistics (see
    # `run_to_run_section`), so the gate can tell a regression from the machine's run-to-run wobble.
    run_to_run: dict[str, Any] | None = None
    _by_variant: dict[str, list[GateRecord]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One record per key, the last one (a later record for the same key supersedes it).
        by_key: dict[str, GateRecord] = {r.key: r for r in self.records}
        grouped: dict[str, list[GateRecord]] = {}
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

    def records_of(self, variant: str) -> list[GateRecord]:
        return list(self._by_variant.get(variant, []))

    def cases_of(self, variant: str) -> dict[str, list[GateRecord]]:
        out: dict[str, list[GateRecord]] = {}
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
                v = getattr(r, field_name)
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
        values = [getattr(r, key) for r in self.records_of(variant) if r.ok and getattr(r, key) is not None]
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
    if not run_dir.exists():
        raise UserInputError(str(run_dir), "run directory not found", "pass the --out directory of `qie-bench run`")
    if not run_dir.is_dir():
        raise UserInputError(str(run_dir), "is a file, not a run directory", "pass the --out directory of `qie-bench run`")
    run = load_json_file(run_dir / "run.json", "run.json")
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise UserInputError(str(summary_path), "summary.json not found: the run did not finish",
                             "finish it with `qie-bench run SUITE --out DIR --resume`")
    summary = load_json_file(summary_path, "summary.json")
    check_summary(summary, str(summary_path))
    if summary["run_id"] != run.get("run_id"):
        raise UserInputError(str(summary_path), f"belongs to run {summary['run_id']}, but run.json is run {run.get('run_id')}",
                             "the directory mixes two runs; re-run into a new --out")
    records = validate_records(read_records(run_dir / "cases.jsonl"), str(run_dir / "cases.jsonl"))
    foreign = next((r for r in records if r.model_extra and r.model_extra.get("run_id") not in (None, summary["run_id"])), None)
    if foreign is not None:
        raise UserInputError(str(run_dir / "cases.jsonl"), f"record {foreign.key} belongs to run {foreign.model_extra['run_id']}",  # type: ignore[index]
                             "the directory mixes two runs; re-run into a new --out")
    plan = run.get("plan") or {}
    planned = plan.get("items")
    return RunData(
        label=f"run {run_dir}",
        run_id=summary["run_id"],
        fingerprint=summary["fingerprint"],
        weights=summary["weights"],
        gates=summary.get("gates") or {},
        baseline_variant=summary.get("baseline_variant"),
        variants=list(summary["variants"]),
        variant_summaries=summary["variants"],
        records=records,
        planned_keys=list(planned) if isinstance(planned, list) else None,
        summary_complete=bool(summary["complete"]),
        generation=summary.get("generation") or {},
        measurement=summary.get("measurement") or {},
    )


@functools.lru_cache(maxsize=1)
def _summary_validator() -> Any:
    """A jsonschema validator for summary.schema.json, built once: `results.validate_summary`
    re-checks the schema itself on every call, which costs more than validating a summary."""
    import jsonschema

    schema = json.loads(schema_text("summary.schema.json"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def check_summary(summary: dict[str, Any], where: str) -> None:
    """jsonschema check of a summary (summary.schema.json), as a one-line UserInputError."""
    error = next(iter(sorted(_summary_validator().iter_errors(summary), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise UserInputError(where, f"does not match the summary schema at {at}: {error.message[:200]}",
                             "it was edited or written by another qie-bench version; re-run")


def run_to_run_section(runs: list[RunData]) -> dict[str, Any]:
    """What a baseline keeps of several comparable runs for the gate's run-to-run test: which runs,
    and per variant and latency key each run's statistic (None where a run has no OK timing)."""
    from .thresholds import LATENCY_KEYS

    variants = list(dict.fromkeys(v for r in runs for v in r.variants))
    return {
        "runs": [{"run_id": r.run_id, "label": r.label} for r in runs],
        "latency": {v: {k: [r.latency_statistic(v, k) for r in runs] for k in LATENCY_KEYS} for v in variants},
    }

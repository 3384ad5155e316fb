"""One record per case x variant x repeat: the typed form of a `cases.jsonl` line.

The worker produces the measured fields, the parent adds identity and bookkeeping, and every
reader (gate, report, baseline, noise simulation) reads records through `Record`, so a field is
typed and checked in one place. Fields a newer writer adds are kept (``extra="allow"``) but not
interpreted.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import UserInputError
from .io import from_json_number

_NONFINITE = ("inf", "-inf", "nan")


class Status(str, Enum):
    OK = "OK"
    OOM = "OOM"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    SKIPPED = "SKIPPED"


# Statuses that are attempts to edit (SKIPPED items never ran): the OOM rate's denominator.
ATTEMPTED = (Status.OK, Status.OOM, Status.ERROR, Status.TIMEOUT)


def item_key(variant: str, case_id: str, repeat: int) -> str:
    """The identity of one planned measurement; unique within a run."""
    return f"{variant}/{case_id}/{repeat}"


class Record(BaseModel):
    """A `cases.jsonl` record. Measurements absent on this machine are None, never 0."""

    model_config = ConfigDict(extra="allow", frozen=True)

    key: str
    variant: str
    case_id: str
    repeat: int = Field(ge=0)
    turn: int | None = Field(None, ge=1)  # a chained case's turn (key "<variant>/<case>@t<k>/<repeat>")
    status: Status
    run_id: str | None = None
    seed: int | None = None
    error: str | None = None
    # timing
    latency_s: float | None = Field(None, ge=0)
    encode_s: float | None = None
    denoise_s: float | None = None
    decode_s: float | None = None
    step_s: list[float] | None = None
    steps: int | None = None
    true_cfg: bool | None = None
    # output
    output_width: int | None = None
    output_height: int | None = None
    output_finite: bool | None = None
    output_constant: bool | None = None
    output_sha256: str | None = None
    output_path: str | None = None
    # memory
    peak_vram_bytes: int | None = Field(None, ge=0)
    peak_vram_process_bytes: int | None = Field(None, ge=0)
    torch_peak_allocated_bytes: int | None = Field(None, ge=0)
    torch_peak_reserved_bytes: int | None = Field(None, ge=0)
    rss_peak_bytes: int | None = Field(None, ge=0)
    cuda_context_bytes: int | None = None
    # energy (NVML's total-energy counter around the timed edit; None with the reason elsewhere)
    energy_j: float | None = Field(None, ge=0)
    mean_power_w: float | None = Field(None, ge=0)
    energy_unavailable: str | None = None
    # the GPU while the edit ran
    throttle_reasons_seen: list[str] | None = None
    other_gpu_processes: list[dict[str, Any]] | None = None
    # the transformer's work (calls; forwards that computed every block; calls a step cache served,
    # None without a cache) and, on a worker's first record, its first edit (cold start)
    transformer_calls: int | None = Field(None, ge=0)
    transformer_forwards: int | None = Field(None, ge=0)
    cache_hits: int | None = Field(None, ge=0)
    first_call_s: float | None = Field(None, ge=0)
    first_call_warmup: bool | None = None
    first_call_steps: int | None = None
    # failures: why an OOM was counted as one (the message matched, the cgroup's OOM killer fired)
    oom_evidence: str | None = None
    # quality: metric name -> value ("inf"/"-inf"/"nan" for non-finite values)
    metrics: dict[str, float | str | None] | None = None
    metric_details: dict[str, Any] | None = None  # per metric, e.g. the text OCR recognised
    # How the output was resized to be compared pixel by pixel with the source or the baseline,
    # e.g. "vs source: output resized from 160x112 to 451x300 (PIL bicubic)"; None when it was not
    # (or the record is unscored). From scores.jsonl (results/scores.py).
    scored_output_resized: str | None = None

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

    def value(self, field: str) -> Any:
        """A declared or extra field by name (None when absent)."""
        if field in type(self).model_fields:
            return getattr(self, field)
        return (self.model_extra or {}).get(field)


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {e['msg'].removeprefix('Value error, ')}{more}"


def validate_records(raw: Iterable[dict[str, Any]], where: str) -> list[Record]:
    """Type-check records; the first bad one is a UserInputError naming its position."""
    out: list[Record] = []
    for i, rec in enumerate(raw):
        try:
            out.append(Record.model_validate(rec))
        except ValidationError as err:
            raise UserInputError(f"{where}: record {i + 1} ({rec.get('key', '?')})", f"is malformed: {_first_error(err)}",
                                 "the file is corrupted or was written by another qie-bench version") from None
    return out


def latest_by_key(records: Iterable[Record]) -> dict[str, Record]:
    """One record per key, the last one (a later record for the same key supersedes it)."""
    return {r.key: r for r in records}

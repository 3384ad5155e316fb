"""Result files of a run directory, their schema and how they are written and read.

A run directory holds:
- ``run.json``: what was planned (suite and case-set fingerprints, variants, items) and the
  environment fingerprint; written once at the start, atomically.
- ``cases.jsonl``: one record per case x variant x repeat, appended and fsynced as each finishes.
  Only the parent process writes it. A torn last line (the process was killed mid-write) is
  detected and discarded on read, never parsed as data.
- ``summary.json``: per-variant aggregates, written atomically at the end.
- ``images/<variant>/<case id>.png`` and ``logs/<variant>.stderr.log``.

Measurements carry their unit in their name (``_s``, ``_bytes``) and keep raw values
(every step time, every repeat) so later aggregation never has to trust an earlier one.
Absent measurements are ``null``, never 0: a CPU run has no VRAM figures.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserInputError

SCHEMA_VERSION = 1
RESULT_FILES = ("run.json", "cases.jsonl", "summary.json")


class Status(str, Enum):
    OK = "OK"
    OOM = "OOM"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    SKIPPED = "SKIPPED"


def item_key(variant: str, case_id: str, repeat: int) -> str:
    """The identity of one planned measurement; unique within a run."""
    return f"{variant}/{case_id}/{repeat}"


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: encode them as the strings "inf", "-inf", "nan" (PSNR of identical
    images is +inf and must survive a round trip, not turn into null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def from_json_number(value: Any) -> float | None:
    """Inverse of `json_safe` for one number."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)
    return float(value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see a
    half-written file, and a failure (disk full) leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); a report or baseline is shared like any file
        # the user writes, so it gets the permissions their umask gives.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n")


class RecordLog:
    """Append-only `cases.jsonl`. Each record is one line, flushed and fsynced before the next
    item starts, so a kill loses at most the item in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_records(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read `cases.jsonl`.

    Every record ends with a newline, so bytes after the last newline are a torn write (the
    process was killed mid-line): they are dropped — and with `repair`, truncated away so that
    appends continue cleanly. A complete line that is not a record is corruption: UserInputError.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    records: list[dict[str, Any]] = []
    for i, raw in enumerate(complete.splitlines()):
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or "key" not in rec or "status" not in rec:
            raise UserInputError(f"{path}:{i + 1}", "is not a valid record (the file is corrupted)",
                                 "re-run into a new --out directory") from None
        records.append(rec)
    if repair and len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    return records


def load_json_file(path: Path, what: str) -> dict[str, Any]:
    """Read a result JSON file with a schema version this code understands."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(str(path), f"{what} not found", "is this a qie-bench run directory?") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserInputError(str(path), f"{what} is not valid JSON ({err})", "the file is truncated or corrupted; re-run") from None
    if not isinstance(obj, dict) or "schema_version" not in obj:
        raise UserInputError(str(path), f"{what} has no schema_version", "not a qie-bench file")
    if obj["schema_version"] != SCHEMA_VERSION:
        raise UserInputError(str(path), f"{what} has schema_version {obj['schema_version']}; this qie-bench reads {SCHEMA_VERSION}",
                             "use the qie-bench version that wrote it")
    return obj


# ---------------------------------------------------------------------------------------------
# Aggregation


def _percentile(values: list[float], q: float) -> float | None:
    # Linear interpolation between closest ranks (numpy's default), documented in the schema.
    return float(np.percentile(values, q)) if values else None


def _max_or_none(values: Iterable[Any]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def summarize_variant(records: list[dict[str, Any]], built: dict[str, Any] | None) -> dict[str, Any]:
    """Aggregate one variant's records. Failed items are counted, never silently dropped:
    `status_counts` and `complete` say how many of the planned items the means stand on."""
    counts = Counter(r["status"] for r in records)
    ok = [r for r in records if r["status"] == Status.OK.value]
    latencies = [r["latency_s"] for r in ok if r.get("latency_s") is not None]
    steps = [s for r in ok for s in (r.get("step_s") or [])]
    attempts = sum(counts[s.value] for s in (Status.OK, Status.OOM, Status.ERROR, Status.TIMEOUT))
    out: dict[str, Any] = {
        "status_counts": {s.value: counts.get(s.value, 0) for s in Status},
        "records": len(records),
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "latency_mean_s": float(np.mean(latencies)) if latencies else None,
        "step_p50_s": _percentile(steps, 50),
        "step_p95_s": _percentile(steps, 95),
        "peak_vram_bytes": _max_or_none(r.get("peak_vram_bytes") for r in ok),
        "peak_vram_process_bytes": _max_or_none(r.get("peak_vram_process_bytes") for r in ok),
        "torch_peak_allocated_bytes": _max_or_none(r.get("torch_peak_allocated_bytes") for r in ok),
        "torch_peak_reserved_bytes": _max_or_none(r.get("torch_peak_reserved_bytes") for r in ok),
        "rss_peak_bytes": _max_or_none(r.get("rss_peak_bytes") for r in ok),
        "oom_rate": (counts.get(Status.OOM.value, 0) / attempts) if attempts else None,
        "nonfinite_outputs": sum(1 for r in ok if r.get("output_finite") is False),
        "constant_outputs": sum(1 for r in ok if r.get("output_constant") is True),
        "weights_bytes": (built or {}).get("weights_bytes"),
        "params": (built or {}).get("params"),
        "build_s": (built or {}).get("build_s"),
        "changes": (built or {}).get("changes", {}),
    }
    # Quality: one value per case (repeat 0; repeats of a seeded edit give the same image).
    metric_values: dict[str, list[float]] = {}
    for r in ok:
        if r.get("repeat", 0) != 0:
            continue
        for name, value in (r.get("metrics") or {}).items():
            if value is None:
                continue
            metric_values.setdefault(name, []).append(from_json_number(value))
    out["metrics"] = {name: {"mean": float(np.mean(v)), "n": len(v)} for name, v in sorted(metric_values.items())}
    for name, stats in out["metrics"].items():
        out[name] = stats["mean"]
    return out


def schema_text(name: str) -> str:
    return resources.files("qie_bench").joinpath("schema", name).read_text()


def validate_summary(summary: dict[str, Any]) -> None:
    """Check a summary against `qie_bench/schema/summary.schema.json` (jsonschema)."""
    import jsonschema

    jsonschema.validate(summary, json.loads(schema_text("summary.schema.json")))

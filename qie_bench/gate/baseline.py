"""Baseline files: a promoted run, kept in the repository as the reference the gate compares with.

A baseline (`baselines/<suite>/<hardware>.json`) holds everything a later comparison needs,
so the run directory it came from can be deleted:
- `schema_version`, `kind`, when and from which run it was promoted;
- the run's fingerprints (environment with `hardware_class`, model, suite, case set) and the
  metric weights kind, which decide whether a run is comparable with it;
- the suite's `[gates]` table as it was, and the generation/measurement settings;
- the per-variant summary (for reading) AND every per-case/per-repeat record (for the gate:
  latency tests pair repeats by case, quality is paired by case id);
- `run_to_run` (when promoted from several runs of the same suite on the same machine): each
  run's latency statistics per variant, from which the gate measures how much whole runs move;
- `previous`: the baselines it replaced, newest last. Each replaced file is also kept byte for
  byte beside the new one (`<name>.replaced-<UTC time>.json`), so nothing is lost on --force.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UserInputError
from ..results import RunDir, atomic_write_bytes, atomic_write_json, validate_records
from .rundata import RunData, run_data_of, run_to_run_section

BASELINE_SCHEMA_VERSION = 1
BASELINE_KIND = "qie-bench-baseline"

# Record fields about how the item ran on that machine rather than what was measured; they would
# only make baselines larger and their diffs noisier.
_DROPPED_RECORD_FIELDS = ("stderr_tail", "traceback", "worker_pid", "output_path", "finished_at", "run_id", "schema_version")
_MAX_ERROR_CHARS = 500


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hardware_slug(hardware_class: str) -> str:
    """'gpu:NVIDIA H100 80GB HBM3' -> 'gpu-nvidia-h100-80gb-hbm3' (a file name)."""
    return re.sub(r"[^a-z0-9]+", "-", hardware_class.lower()).strip("-") or "unknown"


def default_baseline_path(suite_name: str, hardware_class: str) -> Path:
    return Path("baselines") / suite_name / f"{hardware_slug(hardware_class)}.json"


# ---------------------------------------------------------------------------------------------
# Promote


@dataclass
class Promoted:
    path: Path
    baseline: dict[str, Any]
    replaced_copy: Path | None = None
    warnings: list[str] = field(default_factory=list)


def _slim_record(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k not in _DROPPED_RECORD_FIELDS}
    if isinstance(out.get("error"), str) and len(out["error"]) > _MAX_ERROR_CHARS:
        out["error"] = out["error"][:_MAX_ERROR_CHARS] + "…"
    return out


def _previous_entry(old_bytes: bytes, copy: Path, base_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": str(copy.relative_to(base_dir)), "sha256": "sha256:" + hashlib.sha256(old_bytes).hexdigest(),
                             "replaced_at": _utc_now()}
    try:
        old = json.loads(old_bytes)
        entry.update(run_id=old["source"]["run_id"], promoted_at=old.get("promoted_at"),
                     hardware_class=old["fingerprint"]["environment"].get("hardware_class"),
                     variants={name: {k: v.get(k) for k in ("latency_p50_s", "latency_p95_s", "peak_vram_bytes", "oom_rate")}
                               | {"metrics": {m: s.get("mean") for m, s in (v.get("metrics") or {}).items()}}
                               for name, v in old["variants"].items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        entry["note"] = "the replaced file was not a readable baseline; its bytes are kept in `file`"
    return entry


def _old_previous(old_bytes: bytes) -> list[dict[str, Any]]:
    try:
        prev = json.loads(old_bytes).get("previous", [])
        return [p for p in prev if isinstance(p, dict)] if isinstance(prev, list) else []
    except (ValueError, AttributeError):
        return []


def _more_runs(first: RunData, run_dir: Path, more: list[Path]) -> dict[str, Any]:
    """The `run_to_run` section from the baseline run and further runs of it. Every run must be
    complete and comparable with the first (same suite, case set, model, metric weights and
    hardware class): the scatter between them is what the gate will allow for."""
    from .compare import comparability_problems

    runs = [first]
    seen = {run_dir.resolve()}
    for other_dir in more:
        if other_dir.resolve() in seen:
            raise UserInputError(str(other_dir), "is given twice", "pass each run directory once")
        seen.add(other_dir.resolve())
        other = run_data_of(RunDir.load(other_dir))
        problems = comparability_problems(first, other)
        if problems:
            what, b, c, _ = problems[0]
            raise UserInputError(str(other_dir), f"is not a repeat of {run_dir}: {what} differs ({b} vs {c})",
                                 "promote repeated runs of one suite on one machine class only")
        if other.missing_keys or not other.summary_complete:
            raise UserInputError(str(other_dir), "the run is incomplete",
                                 "finish it with `qie-bench run SUITE --out DIR --resume`, or leave it out")
        runs.append(other)
    return run_to_run_section(runs)


def promote(run_dir: Path, to: Path | None = None, *, force: bool = False, allow_incomplete: bool = False,
            more_runs: list[Path] | None = None) -> Promoted:
    """Turn a finished run directory into a baseline file (atomically). See the module docstring.
    `more_runs`: further runs of the same suite on the same machine; their latency statistics
    (with the first run's) let the gate measure the machine's run-to-run noise."""
    rd = RunDir.load(run_dir, require_summary=False)
    summary_path = run_dir / "summary.json"
    warnings: list[str] = []
    if rd.summary_json is not None:
        summary = rd.summary_json
    elif allow_incomplete:
        summary = {**rd.rebuilt_summary(), "finished_at": None}
        warnings.append("summary.json is missing: the summary was rebuilt from the records"
                        + ("" if rd.suite_config else " and the [gates] table is empty (run.json predates the suite copy)"))
    else:
        raise UserInputError(str(summary_path), "summary.json not found: the run did not finish, so it cannot be a baseline",
                             "finish it with `qie-bench run SUITE --out DIR --resume`, or pass --allow-incomplete")
    run_to_run = _more_runs(run_data_of(rd), run_dir, list(more_runs)) if more_runs else None
    run = rd.run
    raw_records = [r.model_dump(mode="json", exclude_unset=True) for r in rd.records]

    planned = list((run.get("plan") or {}).get("items") or [])
    have = {r["key"] for r in raw_records}
    missing = [k for k in planned if k not in have]
    complete = bool(summary.get("complete")) and not missing and summary_path.exists()
    note = None
    if not complete:
        what = (f"{len(planned) - len(missing)} of {len(planned)} planned items recorded"
                + (f" (missing e.g. {missing[0]})" if missing else "")
                + ("" if summary_path.exists() else ", no summary.json"))
        if not allow_incomplete:
            raise UserInputError(str(run_dir), f"the run is incomplete: {what}",
                                 "finish it with `qie-bench run SUITE --out DIR --resume`, or pass --allow-incomplete")
        note = f"promoted from an incomplete run with --allow-incomplete: {what}"
        warnings.append(note)
    failed = {s: sum(1 for r in raw_records if r["status"] == s) for s in ("OOM", "ERROR", "TIMEOUT", "SKIPPED")}
    if any(failed.values()):
        warnings.append("the run has failed items (" + ", ".join(f"{n} {s}" for s, n in failed.items() if n)
                        + "); the gate only holds later runs to the cases that were OK here")

    env = summary["fingerprint"]["environment"]
    to = to or default_baseline_path(summary["fingerprint"]["suite"]["name"], env["hardware_class"])
    if to.is_dir():
        raise UserInputError(str(to), "is a directory", f"pass a file name, e.g. {to / (hardware_slug(env['hardware_class']) + '.json')}")

    previous: list[dict[str, Any]] = []
    replaced_copy: Path | None = None
    if to.exists():
        if not force:
            raise UserInputError(str(to), "a baseline already exists there",
                                 "pass --force to replace it (the replaced file is kept beside it and listed in `previous`)")
        old_bytes = to.read_bytes()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        replaced_copy = to.with_name(f"{to.stem}.replaced-{stamp}{to.suffix}")
        atomic_write_bytes(replaced_copy, old_bytes)
        previous = _old_previous(old_bytes) + [_previous_entry(old_bytes, replaced_copy, to.parent)]

    baseline = {
        "schema_version": BASELINE_SCHEMA_VERSION,
        "kind": BASELINE_KIND,
        "promoted_at": _utc_now(),
        "source": {"run_dir": str(run_dir), "run_id": run["run_id"], "created_at": run.get("created_at"),
                   "finished_at": summary.get("finished_at")},
        "complete": complete,
        "incomplete_note": note,
        "fingerprint": summary["fingerprint"],
        "weights": summary["weights"],
        "gates": summary.get("gates") or {},
        "generation": summary.get("generation") or {},
        "measurement": summary.get("measurement") or {},
        "baseline_variant": summary.get("baseline_variant"),
        "variants": summary["variants"],
        "planned_keys": planned,
        "records": [_slim_record(r) for r in raw_records],
        "run_to_run": run_to_run,
        "previous": previous,
    }
    atomic_write_json(to, baseline)
    return Promoted(path=to, baseline=baseline, replaced_copy=replaced_copy, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# Load


class _Fingerprint(BaseModel):
    model_config = ConfigDict(extra="allow")
    environment: dict[str, Any]
    model: dict[str, Any]
    suite: dict[str, Any]
    case_set: dict[str, Any]


class _Source(BaseModel):
    model_config = ConfigDict(extra="allow")
    run_id: str


class BaselineFile(BaseModel):
    """The structure of a baseline file (records are checked separately, one by one)."""

    model_config = ConfigDict(extra="allow")
    schema_version: Literal[1]
    kind: Literal["qie-bench-baseline"]
    promoted_at: str
    source: _Source
    complete: bool
    incomplete_note: str | None = None
    fingerprint: _Fingerprint
    weights: dict[str, Any]
    gates: dict[str, Any]
    generation: dict[str, Any] = {}
    measurement: dict[str, Any] = {}
    baseline_variant: str | None = None
    variants: dict[str, dict[str, Any]]
    planned_keys: list[str] | None = None
    records: list[dict[str, Any]]
    run_to_run: dict[str, Any] | None = None
    previous: list[dict[str, Any]] = []


def load_baseline(path: Path) -> RunData:
    """Read and check a baseline file. Corrupted, truncated or foreign files are a one-line
    UserInputError (exit 2), never a traceback and never a pass."""
    fix = "restore it from git, or promote a new one with `qie-bench baseline promote RUN_DIR --to FILE`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(str(path), "baseline not found", "promote one with `qie-bench baseline promote RUN_DIR --to FILE`") from None
    except IsADirectoryError:
        raise UserInputError(str(path), "is a directory, not a baseline file", "pass baselines/<suite>/<hardware>.json") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(str(path), f"cannot read the baseline ({err})", fix) from None
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise UserInputError(str(path), f"baseline is not valid JSON ({err}); the file is truncated or corrupted", fix) from None
    if not isinstance(obj, dict) or obj.get("kind") != BASELINE_KIND:
        raise UserInputError(str(path), "is not a qie-bench baseline (no \"kind\": \"qie-bench-baseline\")",
                             "pass a file written by `qie-bench baseline promote` (a run's summary.json is not a baseline)")
    if obj.get("schema_version") != BASELINE_SCHEMA_VERSION:
        raise UserInputError(str(path), f"baseline has schema_version {obj.get('schema_version')!r}; this qie-bench reads "
                                        f"{BASELINE_SCHEMA_VERSION}", "use the qie-bench version that wrote it, or promote a new one")
    try:
        parsed = BaselineFile.model_validate(obj)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise UserInputError(str(path), f"baseline is malformed at {loc}: {e['msg']}", fix) from None
    if "hardware_class" not in parsed.fingerprint.environment:
        raise UserInputError(str(path), "baseline is malformed at fingerprint.environment: no hardware_class", fix)
    records = validate_records(parsed.records, str(path))
    return RunData(
        label=f"baseline {path}",
        run_id=parsed.source.run_id,
        fingerprint=parsed.fingerprint.model_dump(),
        weights=parsed.weights,
        gates=parsed.gates,
        baseline_variant=parsed.baseline_variant,
        variants=list(parsed.variants),
        variant_summaries=parsed.variants,
        records=records,
        planned_keys=parsed.planned_keys,
        summary_complete=parsed.complete,
        generation=parsed.generation,
        measurement=parsed.measurement,
        note=parsed.incomplete_note,
        run_to_run=parsed.run_to_run,
    )

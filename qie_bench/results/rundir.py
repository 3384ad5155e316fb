"""A run directory, read and checked once: what the gate, the report, `baseline promote` and the
noise simulation all read.

```
RUN_DIR/
  run.json                  plan, fingerprints, the validated suite (written first)
  cases.jsonl               one record per case x variant x repeat
  scores.jsonl              metric values per scored output (merged into the records on load)
  summary.json              per-variant aggregates (written last)
  variants/<v>.build.json   what building each variant did
  images/<v>/<case>.png     outputs (repeat 0)
```

Anything malformed (missing file, truncated JSON, a record with a string where a number belongs,
an unknown schema version, files of two different runs) is a one-line `UserInputError`, which the
CLI turns into exit code 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .io import load_json_file, read_records
from .records import Record, latest_by_key, validate_records
from .scores import apply_scores, merge_scoring, read_scores, read_scoring
from .summary import RunSummary, build_summary, check_summary


def read_builds(run_dir: Path) -> dict[str, dict[str, Any]]:
    """`variants/<name>.build.json` of every variant that was built, by variant name, with how its
    outputs were scored (`variants/<name>.scoring.json`: metric weights and descriptions) laid over."""
    builds: dict[str, dict[str, Any]] = {}
    for path in sorted((run_dir / "variants").glob("*.build.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and "variant" in info:
            builds[info["variant"]] = info
    return merge_scoring(builds, read_scoring(run_dir))


def load_records(run_dir: Path) -> list[Record]:
    """`cases.jsonl`, validated, with the scores of `scores.jsonl` merged into `metrics` and
    `metric_details` (the one place every reader looks for a metric)."""
    records = validate_records(read_records(run_dir / "cases.jsonl"), str(run_dir / "cases.jsonl"))
    return apply_scores(records, read_scores(run_dir))


def read_ended(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """`variants/<name>.ended.json`: what each worker of a variant reported when it finished (one
    entry per worker attempt: GPU state at the end, throttling, energy of the timed phase)."""
    ended: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((run_dir / "variants").glob("*.ended.json")):
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(entries, list):
            ended[path.name.removesuffix(".ended.json")] = [e for e in entries if isinstance(e, dict)]
    return ended


@dataclass(frozen=True)
class RunDir:
    """One run directory's files, validated. `summary` is None only when loaded with
    ``require_summary=False`` from a run that did not finish."""

    path: Path
    run: dict[str, Any]  # run.json
    records: list[Record]
    builds: dict[str, dict[str, Any]]
    summary_json: dict[str, Any] | None
    _latest: dict[str, Record] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_latest", latest_by_key(self.records))

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, require_summary: bool = True) -> RunDir:
        run_dir = Path(path)
        if not run_dir.exists():
            raise UserInputError(str(run_dir), "run directory not found", "pass the --out directory of `qie-bench run`")
        if not run_dir.is_dir():
            raise UserInputError(str(run_dir), "is a file, not a run directory", "pass the --out directory of `qie-bench run`")
        run = load_json_file(run_dir / "run.json", "run.json")
        summary_path = run_dir / "summary.json"
        summary: dict[str, Any] | None = None
        if summary_path.exists():
            summary = load_json_file(summary_path, "summary.json")
            check_summary(summary, str(summary_path))
            if summary["run_id"] != run.get("run_id"):
                raise UserInputError(str(summary_path), f"belongs to run {summary['run_id']}, but run.json is run {run.get('run_id')}",
                                     "the directory mixes two runs; re-run into a new --out")
        elif require_summary:
            raise UserInputError(str(summary_path), "summary.json not found: the run did not finish",
                                 "finish it with `qie-bench run SUITE --out DIR --resume`")
        records = load_records(run_dir)
        run_id = run.get("run_id")
        foreign = next((r for r in records if r.run_id not in (None, run_id)), None)
        if foreign is not None:
            raise UserInputError(str(run_dir / "cases.jsonl"), f"record {foreign.key} belongs to run {foreign.run_id}",
                                 "the directory mixes two runs; re-run into a new --out")
        return cls(run_dir, run, records, read_builds(run_dir), summary)

    # -- views -----------------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def summary(self) -> RunSummary:
        """The typed summary (the file's, or rebuilt from the records for an unfinished run)."""
        return RunSummary.model_validate(self.summary_json if self.summary_json is not None else self.rebuilt_summary())

    def rebuilt_summary(self, gates: dict[str, Any] | None = None) -> dict[str, Any]:
        """summary.json as `build_summary` makes it from this directory's run.json, records and builds."""
        return build_summary(self.run, self.records, self.builds, ended=read_ended(self.path), gates=gates,
                             validate=False)

    @property
    def planned_keys(self) -> list[str] | None:
        items = (self.run.get("plan") or {}).get("items")
        return list(items) if isinstance(items, list) else None

    @property
    def suite_config(self) -> dict[str, Any]:
        """The validated suite the run used (run.json), {} for runs written before it was kept."""
        return dict(self.run.get("suite_config") or {})

    def latest_records(self) -> list[Record]:
        return list(self._latest.values())

    def records_of(self, variant: str) -> list[Record]:
        return [r for r in self._latest.values() if r.variant == variant]

    @property
    def case_ids(self) -> list[str]:
        """Case ids in plan order, then any that only have records."""
        plan_ids = [k.split("/")[1] for k in self.planned_keys or [] if k.count("/") >= 2]
        return list(dict.fromkeys(plan_ids + [r.case_id for r in self.records]))

    def output_image(self, variant: str, case_id: str) -> Path | None:
        for r in self.records_of(variant):
            if r.case_id == case_id and r.output_path:
                p = self.path / r.output_path
                if p.is_file():
                    return p
        p = self.path / "images" / variant / f"{case_id}.png"
        return p if p.is_file() else None

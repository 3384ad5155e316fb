"""Scores kept apart from measurements: ``scores.jsonl`` and ``variants/<v>.scoring.json``.

The edit record (``cases.jsonl``) is written when the edit finishes, without metrics; the scoring
phase (``qie_bench.runner.scoring``) scores the outputs later, in a process of its own, and the
parent appends one line per scored output to ``scores.jsonl``::

    {"schema_version": 1, "run_id": ..., "key": "int8/c01/0", "output_sha256": "sha256:...",
     "metrics": {...}, "metric_details": {...}, "scored_output_resized": null, "scored_at": ...}

``scored_output_resized`` says how the output was resized to be compared pixel by pixel (the
output at its own size beside a source of another: "vs source: output resized from 160x112 to
451x300 (PIL bicubic)"), null when no metric resized it. A score line written before the key
existed leaves `UNRECORDED_RESIZE` in the record: whether that output was resized is unknown.

A later line for the same key supersedes an earlier one (``score-run`` appends or rewrites). A
score applies to a record only when it scored the very image the record wrote (same
``output_sha256``): an output made again after the score was taken is unscored, not mis-scored.

Readers never open this file themselves: :func:`apply_scores` merges the scores into
``Record.metrics`` / ``metric_details``, which stay the one place a reader looks (``RunDir.load``
and the orchestrator's summary do it). Records of runs written before the split carry their
metrics inline; a score line for them supersedes the inline values.

``variants/<v>.scoring.json`` says how a variant's outputs were scored (metric weights,
descriptions, device, the scorer's build time); :func:`merge_scoring` lays it over the variant's
build info, where the summary has always read ``metric_weights`` and ``metric_descriptions``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .records import Record

SCORES_FILE = "scores.jsonl"
# What a variant's scoring info contributes to its build info (the keys the summary reads).
SCORING_KEYS = ("metric_weights", "metric_descriptions", "metrics_device")
UNRECORDED_RESIZE = "unknown: scored before resizes were recorded (re-score with `qie-bench score-run RUN_DIR --all`)"


def scoring_path(run_dir: Path, variant: str) -> Path:
    return run_dir / "variants" / f"{variant}.scoring.json"


def read_scores(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest score line per record key ({} when the run has no ``scores.jsonl``).

    A torn last line (a kill mid-write) is ignored, like a torn record; a complete line that is
    not a score is corruption: :class:`UserInputError`.
    """
    path = run_dir / SCORES_FILE
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    out: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(complete.splitlines()):
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict) or not isinstance(line.get("key"), str) or not isinstance(line.get("metrics"), dict):
            raise UserInputError(f"{path}:{i + 1}", "is not a valid score line (the file is corrupted)",
                                 "delete scores.jsonl and re-score with `qie-bench score-run RUN_DIR`")
        out[line["key"]] = line
    return out


def repair_scores(run_dir: Path) -> None:
    """Cut a torn last line (a scoring phase killed mid-write) off ``scores.jsonl`` so appends
    continue on a line of their own; the score it was writing is re-made as missing."""
    path = run_dir / SCORES_FILE
    if path.exists():
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with open(path, "r+b") as f:
                f.truncate(keep)


def score_applies(record: Record, score: dict[str, Any]) -> bool:
    """Whether ``score`` scored this record's output (same image hash, or no hash to compare)."""
    return record.ok and (score.get("output_sha256") is None or score.get("output_sha256") == record.output_sha256)


def apply_scores(records: Iterable[Record], scores: dict[str, dict[str, Any]]) -> list[Record]:
    """``records`` with each applicable score merged into ``metrics`` and ``metric_details``."""
    out = []
    for record in records:
        score = scores.get(record.key)
        if score is not None and score_applies(record, score):
            update: dict[str, Any] = {"metrics": score["metrics"]}
            if score.get("metric_details") is not None:
                update["metric_details"] = score["metric_details"]
            if score.get("error"):
                update["scoring_error"] = score["error"]
            if score.get("metric_weights"):
                update["metric_weights"] = score["metric_weights"]  # what the scores were made with
            if "scored_output_resized" in score:
                update["scored_output_resized"] = score["scored_output_resized"]
            elif any(v is not None for v in score["metrics"].values()):
                update["scored_output_resized"] = UNRECORDED_RESIZE
            record = Record.model_validate({**record.model_dump(), **update})
        out.append(record)
    return out


def read_scoring(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``variants/<v>.scoring.json`` of every scored variant, by variant name."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((run_dir / "variants").glob("*.scoring.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and "variant" in info:
            out[info["variant"]] = info
    return out


def merge_scoring(builds: dict[str, dict[str, Any]], scoring: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Build infos with each variant's scoring info (metric weights and descriptions) laid over."""
    merged = {name: dict(info) for name, info in builds.items()}
    for name, info in scoring.items():
        if name in merged:
            merged[name].update({k: info[k] for k in SCORING_KEYS if k in info})
    return merged

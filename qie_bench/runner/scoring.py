"""The scoring phase: a variant's outputs scored in a process of its own, after its edits.

Metric models (CLIP, LPIPS, OCR, a 7B VLM judge) must never sit in the memory of the process
whose peak memory is measured, so the variant's worker only edits and writes images; this phase
then starts one child per variant (``python -m qie_bench.runner.scoring SPEC.json``) that builds
the scorer on the device ``[metrics] device`` names, reads the output PNGs from the run directory
and the case set (source, mask, caption, expected text) and sends each output's values and
details back through a pipe, as the worker does. The parent stays the only writer: it appends one
line per scored output to ``scores.jsonl`` (fsynced) and writes ``variants/<v>.scoring.json``
(metric weights and descriptions); readers see the scores in ``Record.metrics`` through
:func:`qie_bench.results.scores.apply_scores`.

What is scored: repeat 0 of each OK item (the repeat whose image is kept) that has no score for
its image yet, so a killed scoring phase re-scores exactly what is missing. Fidelity metrics read
the baseline variant's image of the same case; the baseline runs (and is scored) first.

A child that crashes or hangs leaves the output in flight scored ``null`` with the reason (its
``error``); the next items go to a fresh child, up to ``measurement.max_child_restarts`` times.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..results import RecordLog, Status, atomic_write_json, utc_now
from ..results.records import Record
from ..results.scores import SCORES_FILE, repair_scores, scoring_path


class _End(Enum):
    """How one scoring child ended."""

    DONE = "done"  # every item scored (each possibly null with its reason)
    FATAL = "fatal"  # the scorer could not be built: a fresh child would fail alike
    FAILED = "failed"  # crashed or hung on an item (written null with the reason): a fresh child goes on


@dataclass(frozen=True)
class ScoreItem:
    """One output to score: its record key and image hash, the case, the images by run-dir path."""

    key: str
    case_id: str
    output_path: str
    output_sha256: str | None
    baseline_path: str | None  # the baseline variant's output of the same case, if it exists
    turn: int | None = None  # a chained case's turn: scored as that turn (runner/chains.py)


@dataclass
class ScoringOutcome:
    """What a variant's scoring phase did (the CLI and tests read it)."""

    variant: str
    scored: int = 0
    failed: int = 0
    skipped_fresh: int = 0  # already had a score for the same image
    wall_s: float = 0.0
    messages: list[str] = field(default_factory=list)


def items_to_score(run_dir: Path, records: list[Record], variant: str, baseline: str | None, names: Sequence[str], *,
                   weights: str | None = None, rescore: bool = False) -> tuple[list[ScoreItem], int]:
    """The outputs of ``variant`` to score, and how many already have every metric in ``names``
    for their image, made with ``weights`` (left alone unless ``rescore``). ``records`` are merged with their scores
    (:func:`~qie_bench.results.rundir.load_records`); an output whose scoring failed counts as
    missing, so a resumed run or ``score-run`` tries it again."""
    latest = {r.key: r for r in records}
    todo: list[ScoreItem] = []
    fresh = 0
    for r in latest.values():
        if r.variant != variant or r.repeat != 0 or r.status is not Status.OK or not r.output_path:
            continue
        if not (run_dir / r.output_path).is_file():
            continue
        made_with = r.value("metric_weights")
        if (not rescore and r.metrics is not None and not r.value("scoring_error") and all(n in r.metrics for n in names)
                and (weights is None or made_with is None or made_with == weights)):
            fresh += 1
            continue
        base = None
        turn = r.value("turn")
        if baseline and baseline != variant:  # the baseline's output of the same case (and turn)
            p = Path("images") / baseline / (f"{r.case_id}@t{turn}.png" if turn else f"{r.case_id}.png")
            base = str(p) if (run_dir / p).is_file() else None
        todo.append(ScoreItem(r.key, r.case_id, r.output_path, r.output_sha256, base, turn))
    return todo, fresh


class ScoringPhase:
    """Scores one variant's outputs in a child process; the caller holds the only writer.

    ``metrics`` is the :class:`~qie_bench.metrics.config.MetricsConfig` as JSON (the suite's, or
    the one ``score-run`` makes from its flags); ``case_dir`` the case set's folder. A scorer that
    cannot be built for a reason the user can fix (missing real weights) is, with
    ``raise_user_errors`` (``score-run``), a :class:`UserInputError`; in a run it leaves the
    variant's outputs scored ``null`` with the reason, and the run carries on measuring.
    """

    def __init__(self, run_dir: Path, run_id: str, metrics: dict[str, Any], case_dir: Path, *,
                 max_image_pixels: int | None = None, item_timeout_s: float = 900.0, build_timeout_s: float = 3600.0,
                 max_restarts: int = 2, raise_user_errors: bool = False,
                 on_message: Callable[[str], None] = lambda text: None) -> None:
        self.run_dir, self.run_id, self.metrics, self.case_dir = run_dir, run_id, metrics, case_dir
        self.raise_user_errors = raise_user_errors
        self._previous: dict[str, tuple[dict[str, Any], dict[str, Any], str | None]] = {}
        self.max_image_pixels = max_image_pixels
        self.item_timeout_s, self.build_timeout_s, self.max_restarts = item_timeout_s, build_timeout_s, max_restarts
        self.on_message = on_message

    @classmethod
    def for_suite(cls, run_dir: Path, run_id: str, suite: Any, **kw: Any) -> ScoringPhase | None:
        """The phase a run of ``suite`` has, or None when the suite computes no metric."""
        if suite.metrics is None:
            return None
        m = suite.measurement
        metrics = suite.metrics.model_dump(mode="json")
        if metrics.get("judge") is None and suite.model.source == "pretrained":
            metrics["judge"] = suite.model.id  # the edit model's own text encoder is the judge
        return cls(run_dir, run_id, metrics, suite.case_set_dir(),
                   max_image_pixels=suite.cases.max_image_pixels, item_timeout_s=m.case_timeout_s,
                   build_timeout_s=m.build_timeout_s, max_restarts=m.max_child_restarts, **kw)

    def score_variant(self, variant: str, records: list[Record], baseline: str | None, *,
                      rescore: bool = False, keep_other_metrics: bool = False,
                      log: RecordLog | None = None) -> ScoringOutcome:
        """Score what ``variant`` lacks (everything with ``rescore``). With ``keep_other_metrics``
        (``score-run --metrics``), the values of metrics not computed now are carried into the
        new score lines, so re-scoring one metric does not drop the others."""
        started = time.perf_counter()
        todo, fresh = items_to_score(self.run_dir, records, variant, baseline, self.metrics.get("names") or (),
                                     weights=self.metrics.get("weights"), rescore=rescore)
        self._previous = {r.key: (dict(r.metrics or {}), dict(r.value("metric_details") or {}),
                                  r.value("scored_output_resized"))
                          for r in records if keep_other_metrics and r.variant == variant}
        outcome = ScoringOutcome(variant, skipped_fresh=fresh)
        if not todo:
            return outcome
        own_log = log is None
        if own_log:
            repair_scores(self.run_dir)
        log = log or RecordLog(self.run_dir / SCORES_FILE)
        try:
            remaining = list(todo)
            restarts = 0
            while remaining:
                done, end, why = self._one_child(variant, remaining, log, outcome, restarts)
                remaining = [i for i in remaining if i.key not in done]
                if not remaining or end is _End.DONE:
                    break
                if end is _End.FATAL or restarts >= self.max_restarts:
                    # the scorer cannot be built (or keeps dying): every remaining output alike
                    self.on_message(f"{variant}: {len(remaining)} output(s) not scored: {why}")
                    for item in remaining:
                        self._write(log, item, None, error=f"not scored: {why}", outcome=outcome)
                    break
                restarts += 1
                self.on_message(f"{variant}: restarting the scoring process ({why})")
        finally:
            if own_log:
                log.close()
        outcome.wall_s = time.perf_counter() - started
        return outcome

    # -- one child ----------------------------------------------------------------------------

    def _write(self, log: RecordLog, item: ScoreItem, event: dict[str, Any] | None, *, error: str | None = None,
               outcome: ScoringOutcome) -> None:
        line: dict[str, Any] = {
            "schema_version": 1, "run_id": self.run_id, "key": item.key, "output_sha256": item.output_sha256,
            "scored_at": utc_now(),
        }
        if event is not None:
            line.update(metrics=event["metrics"], metric_details=event.get("metric_details") or None,
                        # never a resized output scored without saying so (null: compared at its own size)
                        scored_output_resized=event.get("scored_output_resized"),
                        metric_weights=event.get("metric_weights"), cost_s=event.get("cost_s"))
        else:
            line.update(metrics={name: None for name in self.metrics.get("names") or ()}, error=error)
        if event is not None and event.get("error"):
            line["error"] = event["error"]
        old_metrics, old_details, old_resized = self._previous.get(item.key, ({}, {}, None))
        if old_metrics:
            line["metrics"] = {**old_metrics, **line["metrics"]}
            details = {k: v for k, v in old_details.items() if k not in (self.metrics.get("names") or ())}
            line["metric_details"] = {**details, **(line.get("metric_details") or {})} or None
            # the metrics kept may have compared a resized output: their resize stays on record
            notes = (old_resized or "").split("; ") + (line.get("scored_output_resized") or "").split("; ")
            line["scored_output_resized"] = "; ".join(n for n in dict.fromkeys(notes) if n) or None
        try:
            log.append(line)
        except OSError as err:
            raise UserInputError(str(self.run_dir / SCORES_FILE), f"cannot write scores ({err.strerror or err})",
                                 "free space, then re-score with `qie-bench score-run RUN_DIR`") from None
        if line.get("error"):
            outcome.failed += 1
        else:
            outcome.scored += 1

    def _one_child(self, variant: str, items: list[ScoreItem], log: RecordLog, outcome: ScoringOutcome,
                   attempt: int) -> tuple[set[str], _End, str]:
        """Run one scoring child over ``items``; return the keys written, how it ended and why."""
        read_fd, write_fd = os.pipe()
        spec = {
            "metrics": self.metrics,
            "case_dir": str(self.case_dir),
            "max_image_pixels": self.max_image_pixels,
            "run_dir": str(self.run_dir.resolve()),
            "variant": variant,
            "items": [item.__dict__ for item in items],
            "event_fd": write_fd,
            "parent_pid": os.getpid(),
        }
        spec_path = self.run_dir / "logs" / f"{variant}.scoring.spec.json"
        atomic_write_json(spec_path, spec)
        log_path = self.run_dir / "logs" / f"{variant}.scoring.stderr.log"
        with open(log_path, "ab") as stderr:
            stderr.write(f"\n===== scoring start {utc_now()} attempt {attempt}\n".encode())
            stderr.flush()
            proc = subprocess.Popen([sys.executable, "-m", "qie_bench.runner.scoring", str(spec_path)],
                                    stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, pass_fds=(write_fd,),
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        os.close(write_fd)
        events: queue.Queue = queue.Queue()

        def pump() -> None:
            with os.fdopen(read_fd, "r", encoding="utf-8") as f:
                for text in f:
                    try:
                        events.put(json.loads(text))
                    except ValueError:
                        events.put({"type": "garbled", "line": text[:200]})
            events.put({"type": "eof"})

        threading.Thread(target=pump, daemon=True, name=f"scoring-{variant}").start()
        by_key = {i.key: i for i in items}
        done: set[str] = set()
        in_flight: str | None = None
        deadline = time.monotonic() + self.build_timeout_s
        try:
            while True:
                try:
                    event = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    _kill(proc)
                    if in_flight is None:
                        return done, _End.FATAL, f"building the scorer took longer than {self.build_timeout_s:g} s"
                    self._write(log, by_key[in_flight], None, outcome=outcome,
                                error=f"scoring took longer than {self.item_timeout_s:g} s (measurement.case_timeout_s)")
                    done.add(in_flight)
                    return done, _End.FAILED, "an output took too long"
                kind = event["type"]
                if kind == "ready":
                    atomic_write_json(scoring_path(self.run_dir, variant),
                                      {"variant": variant, **event["info"], "scored_at": utc_now()})
                elif kind == "start":
                    in_flight = event["key"]
                    deadline = time.monotonic() + self.item_timeout_s
                elif kind == "score":
                    self._write(log, by_key[event["key"]], event, outcome=outcome)
                    done.add(event["key"])
                    in_flight = None
                elif kind == "fatal":
                    proc.wait()
                    if event.get("user_error") and self.raise_user_errors:
                        raise UserInputError("score-run", event["error"])
                    outcome.messages.append(event["error"])
                    return done, _End.FATAL, f"the scorer could not be built: {event['error']}"
                elif kind == "eof":
                    code = proc.wait()
                    if code == 0 and in_flight is None:
                        return done, _End.DONE, "done"
                    why = _exit_description(code)
                    if in_flight is not None:
                        self._write(log, by_key[in_flight], None, outcome=outcome,
                                    error=f"scoring process {why}: {_tail(log_path)}")
                        done.add(in_flight)
                    return done, _End.FAILED, f"scoring process {why}"
        finally:
            if proc.poll() is None:
                _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-lines:])


# -- the child ----------------------------------------------------------------------------------


def main(spec_path: str) -> int:
    from .worker import Events, _die_with_parent

    spec = json.loads(Path(spec_path).read_text())
    _die_with_parent(spec["parent_pid"])
    events = Events(spec["event_fd"])
    run_dir = Path(spec["run_dir"])
    started = time.perf_counter()
    try:
        from ..cases import load_case_set
        from ..metrics.config import MetricsConfig
        from ..metrics.scorer import Scorer

        config = MetricsConfig.model_validate(spec["metrics"])
        case_set = load_case_set(Path(spec["case_dir"]), max_image_pixels=spec.get("max_image_pixels"))
        cases = {c.id: c for c in case_set.cases}
        scorer = Scorer(config)
        events.send("ready", info={
            "metric_weights": scorer.weights_kind,
            "metric_descriptions": scorer.describe(),
            "metrics_device": config.device,
            "scorer_build_s": time.perf_counter() - started,
            "pid": os.getpid(),
        })
    except Exception as err:
        from ..errors import UserInputError as _UserInputError

        user_error = isinstance(err, _UserInputError)
        events.send("fatal", error=str(err)[:2000] if user_error else f"{type(err).__name__}: {str(err)[:2000]}",
                    user_error=user_error,
                    traceback=traceback.format_exc(limit=20))
        return 1
    for item in spec["items"]:
        events.send("start", key=item["key"])
        t0 = time.perf_counter()
        try:
            values, details, resized = _score_one(scorer, cases[item["case_id"]], run_dir, item)
            events.send("score", key=item["key"], metrics=values, metric_details=details,
                        scored_output_resized=resized, metric_weights=scorer.weights_kind,
                        cost_s=time.perf_counter() - t0)
        except Exception as err:  # this output cannot be scored (unreadable PNG, ...): null with the reason
            events.send("score", key=item["key"], metrics={name: None for name in config.names},
                        error=f"{type(err).__name__}: {str(err)[:1000]}", cost_s=time.perf_counter() - t0)
    return 0


def _score_one(scorer: Any, case: Any, run_dir: Path, item: dict[str, Any]) -> tuple[dict, dict, str | None]:
    """The output's metric values and details, and how it was resized to be compared pixel by
    pixel (the scorer's notes, e.g. "vs source: output resized from 160x112 to 451x300 (PIL
    bicubic)"; None when no metric resized it)."""
    from PIL import Image

    from ..metrics.scorer import ScoreInputs

    def load(rel: str) -> Image.Image:
        with Image.open(run_dir / rel) as im:
            return im.convert("RGB")

    if item.get("turn"):  # a chain's turn: its source is the chain's original, its mask the union so far
        from .chains import chain_turn

        case = chain_turn(case, item["turn"], run_dir, item["key"].split("/", 1)[0])
    inputs = ScoreInputs(output=load(item["output_path"]), source=case.load_source(),
                         baseline_output=load(item["baseline_path"]) if item.get("baseline_path") else None,
                         mask=case.load_mask(), caption=case.target_caption, expected_text=case.expected_text,
                         instruction=case.instruction)
    results, notes = scorer.score_detailed(inputs)
    return ({name: r.value for name, r in results.items()},
            {name: r.detail for name, r in results.items() if r.detail is not None},
            "; ".join(notes) or None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

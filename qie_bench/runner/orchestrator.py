"""The parent side of a run: plan items, run one child process per variant, write results.

Each variant runs in its own child (`worker.py`), so one variant's OOM, crash or cached memory
cannot distort the next. The parent is the only writer of result files. A child that crashes
or hangs past the per-case timeout is recorded (ERROR / TIMEOUT, with its exit signal and the
tail of its stderr) and a fresh child carries on with the remaining items.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import UserInputError
from ..results import (
    SCHEMA_VERSION,
    RecordLog,
    Status,
    atomic_write_json,
    build_summary,
    item_key,
    load_json_file,
    read_builds,
    read_records,
    utc_now,
    validate_records,
)
from ..plan import Item, RunPlan, make_plan  # noqa: F401  (re-exported for callers)
from ..results.rundir import load_records
from ..results.scores import merge_scoring, read_scoring
from ..suite import Suite
from .oom_kill import OomKillCount, killed_by_oom, read_oom_kills
from .worker import EXIT_RESTART


def default_out_dir(suite: Suite) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / f"{stamp}-{suite.name}"


def prepare_out_dir(out: Path, resume: bool) -> None:
    """Refuse directories that would mix runs or that cannot be written, before any work."""
    if out.exists() and not out.is_dir():
        raise UserInputError(str(out), "exists and is a file, not a directory", "choose another --out")
    if out.exists() and not resume and any((out / f).exists() for f in ("run.json", "cases.jsonl")):
        raise UserInputError(str(out), "already holds a run", "pass --resume to finish it, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserInputError(str(out), f"cannot write there ({err.strerror})", "choose a writable --out") from None


@dataclass
class Progress:
    """What the orchestrator reports as it goes; the CLI renders it (rich), tests ignore it."""

    on_item_done: Callable[[str, dict[str, Any]], None] = lambda key, rec: None
    on_variant_start: Callable[[str, int], None] = lambda variant, n: None
    on_message: Callable[[str], None] = lambda text: None


@dataclass
class _Child:
    proc: subprocess.Popen
    events: queue.Queue
    log_path: Path
    spec_path: Path
    in_flight: str | None = None
    deadline: float = 0.0
    built: dict[str, Any] | None = None
    oom_kills_before: OomKillCount | None = None  # the cgroup's OOM-kill counter when it started


class Orchestrator:
    def __init__(self, plan: RunPlan, out: Path, *, resume: bool = False, progress: Progress | None = None,
                 faults: list[dict[str, str]] | None = None) -> None:
        """`faults` is the runner's own test hook (see worker.py); nothing else sets it."""
        self.plan, self.out, self.resume = plan, out, resume
        self.faults = list(faults or [])
        self.progress = progress or Progress()
        self.suite = plan.suite
        self.build_info: dict[str, dict[str, Any]] = {}
        self._child: _Child | None = None

    # -- run directory ------------------------------------------------------------------------

    def _start_run_dir(self) -> tuple[str, set[str]]:
        from ..fingerprint import environment
        from ..models import model_identity_for_plan

        prepare_out_dir(self.out, self.resume)
        run_json = self.out / "run.json"
        done: set[str] = set()
        if self.resume and run_json.exists():
            previous = load_json_file(run_json, "run.json")
            mine = self.plan.identity()
            for key in ("suite_fingerprint", "case_set_fingerprint", "items"):
                if previous["plan"].get(key) != mine[key]:
                    what = {"items": "planned items"}.get(key, key.replace("_", " "))
                    raise UserInputError(str(run_json), f"cannot resume: the {what} changed since this run started",
                                         "run into a new --out directory to start over")
            records = read_records(self.out / "cases.jsonl", repair=True)
            done = {r["key"] for r in records}
            self.build_info.update(read_builds(self.out))
            return previous["run_id"], done
        run_id = uuid.uuid4().hex[:12]
        atomic_write_json(run_json, {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "created_at": utc_now(),
            "command": sys.argv,
            "suite": {"name": self.suite.name, "path": str(self.suite.path) if self.suite.path else None,
                      "fingerprint": self.suite.fingerprint()},
            # The validated suite itself: what the workers receive and what the summary's settings
            # come from (a suite built in code has no file to re-read).
            "suite_config": self.suite.model_dump(mode="json"),
            "case_set": {"name": self.plan.case_set.name, "fingerprint": self.plan.case_set.fingerprint,
                         "cases": len(self.plan.case_set.cases)},
            "model": model_identity_for_plan(self.suite.model),
            "baseline_variant": self.suite.baseline_variant,
            "plan": self.plan.identity(),
            "environment": environment(),
        })
        return run_id, done

    # -- children -----------------------------------------------------------------------------

    def _spawn(self, variant: str, items: list[Item], attempt: int) -> _Child:
        read_fd, write_fd = os.pipe()
        spec = {
            "suite": self.suite.model_dump(mode="json"),
            "variant": variant,
            "items": [[i.case_id, i.repeat] for i in items],
            "out_dir": str(self.out.resolve()),
            "event_fd": write_fd,
            "parent_pid": os.getpid(),
            "baseline_variant": self.suite.baseline_variant,
        }
        if self.faults:
            spec["faults"] = self.faults
        spec_path = self.out / "logs" / f"{variant}.spec.json"
        atomic_write_json(spec_path, spec)
        log_path = self.out / "logs" / f"{variant}.stderr.log"
        log = open(log_path, "ab")
        log.write(f"\n===== worker start {utc_now()} attempt {attempt}\n".encode())
        log.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        oom_kills_before = read_oom_kills()
        proc = subprocess.Popen(
            [sys.executable, "-m", "qie_bench.runner.worker", str(spec_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,), env=env,
            start_new_session=True,  # its own process group: a timeout kills it and its children
        )
        os.close(write_fd)
        log.close()
        events: queue.Queue = queue.Queue()

        def pump() -> None:
            with os.fdopen(read_fd, "r", encoding="utf-8") as f:
                for line in f:
                    try:
                        events.put(json.loads(line))
                    except ValueError:
                        events.put({"type": "garbled", "line": line[:200]})
            events.put({"type": "eof"})

        threading.Thread(target=pump, daemon=True, name=f"events-{variant}").start()
        return _Child(proc, events, log_path, spec_path, deadline=time.monotonic() + self.suite.measurement.build_timeout_s,
                      oom_kills_before=oom_kills_before)

    @staticmethod
    def _kill(child: _Child) -> None:
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.proc.wait()

    @staticmethod
    def _stderr_tail(path: Path, lines: int = 15) -> str:
        try:
            text = path.read_bytes()[-8000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _exit_description(code: int | None) -> str:
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        run_id, done = self._start_run_dir()
        log = RecordLog(self.out / "cases.jsonl")
        try:
            for variant in self.plan.variants:
                todo = [i for i in self.plan.items[variant] if i.key not in done]
                self.progress.on_variant_start(variant, len(self.plan.items[variant]) - len(todo))
                if todo:
                    self._run_variant(run_id, variant, todo, log)
                self._score_variant(run_id, variant)
        finally:
            log.close()
        return self.write_summary(run_id)

    def _score_variant(self, run_id: str, variant: str) -> None:
        """The variant's scoring phase, after its edits, in a process of its own (scoring.py);
        on a resumed run it scores only what has no score yet."""
        from .scoring import ScoringPhase

        phase = ScoringPhase.for_suite(self.out, run_id, self.suite, on_message=self.progress.on_message)
        if phase is not None:
            phase.score_variant(variant, load_records(self.out), self.suite.baseline_variant)

    def _record(self, log: RecordLog, run_id: str, item: Item, body: dict[str, Any], attempt: int, pid: int | None) -> None:
        record = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "key": item.key,
            "variant": item.variant,
            "case_id": item.case_id,
            "repeat": item.repeat,
            "attempt": attempt,
            "worker_pid": pid,
            "finished_at": utc_now(),
            **body,
        }
        try:
            log.append(record)
        except OSError as err:
            # Disk full or quota: stop cleanly. Records already written are intact (each was
            # fsynced whole); a torn tail of this one is dropped when the run is resumed.
            raise UserInputError(str(self.out / "cases.jsonl"), f"cannot write results ({err.strerror or err})",
                                 "free space, then finish the run with --resume") from None
        self.progress.on_item_done(item.key, record)

    def _run_variant(self, run_id: str, variant: str, todo: list[Item], log: RecordLog) -> None:
        try:
            self._run_variant_children(run_id, variant, todo, log)
        finally:
            # Whatever ends the loop (a record that cannot be written, SIGTERM, Ctrl-C), no
            # worker outlives it.
            if self._child is not None and self._child.proc.poll() is None:
                self._kill(self._child)

    def _run_variant_children(self, run_id: str, variant: str, todo: list[Item], log: RecordLog) -> None:
        m = self.suite.measurement
        by_key = {i.key: i for i in todo}
        remaining = list(todo)
        attempt = 0
        failures = 0
        while remaining:
            child = self._child = self._spawn(variant, remaining, attempt)
            finished: set[str] = set()
            outcome = self._drive(child, run_id, variant, by_key, finished, attempt, log)
            remaining = [i for i in remaining if i.key not in finished]
            if outcome == "done" or not remaining:
                break
            if outcome == "fatal":
                # The variant cannot be built; building again would fail the same way.
                error = child.built["error"] if child.built else "build failed"
                status = Status.OOM if child.built and child.built.get("oom") else Status.ERROR
                for item in remaining:
                    self._record(log, run_id, item, {"status": status.value, "error": error, "phase": "build",
                                                     "stderr_tail": self._stderr_tail(child.log_path)}, attempt, child.proc.pid)
                break
            if outcome != "restart":
                failures += 1
            attempt += 1
            if failures > m.max_child_restarts:
                for item in remaining:
                    self._record(log, run_id, item, {"status": Status.SKIPPED.value,
                                                     "error": f"worker failed {failures} times; remaining items skipped"},
                                 attempt, None)
                break
            self.progress.on_message(f"{variant}: restarting worker ({outcome})")

    def _drive(self, child: _Child, run_id: str, variant: str, by_key: dict[str, Item], finished: set[str],
               attempt: int, log: RecordLog) -> str:
        """Feed one child's events into records until it ends. Returns why it ended:
        'done', 'fatal' (build failed), 'restart' (asked for a fresh process), 'crash', 'timeout'."""
        m = self.suite.measurement
        while True:
            timeout = max(0.0, child.deadline - time.monotonic())
            try:
                event = child.events.get(timeout=timeout)
            except queue.Empty:
                self._kill(child)
                if child.in_flight:
                    item = by_key[child.in_flight]
                    limit = m.case_timeout_s * (1 + (m.warmup_runs if item.repeat == 0 else 0))
                    self._record(log, run_id, item, {"status": Status.TIMEOUT.value,
                                                     "error": f"no result within {limit:g} s (measurement.case_timeout_s)",
                                                     "stderr_tail": self._stderr_tail(child.log_path)}, attempt, child.proc.pid)
                    finished.add(item.key)
                    return "timeout"
                child.built = {"error": f"building the variant took longer than {m.build_timeout_s:g} s (measurement.build_timeout_s)"}
                return "fatal"
            kind = event["type"]
            if kind == "built":
                info = {**event["info"], "built_at": utc_now()}
                self.build_info[variant] = info
                atomic_write_json(self.out / "variants" / f"{variant}.build.json", info)
                child.built = info
            elif kind == "ended":  # the GPU's state at the end, energy of the timed phase: one per worker
                path = self.out / "variants" / f"{variant}.ended.json"
                ended = json.loads(path.read_text()) if path.exists() else []
                atomic_write_json(path, [*ended, {**event["info"], "attempt": attempt, "ended_at": utc_now()}])
            elif kind == "start":
                child.in_flight = event["key"]
                item = by_key[event["key"]]
                limit = m.case_timeout_s * (1 + (m.warmup_runs if item.repeat == 0 else 0))
                child.deadline = time.monotonic() + limit
            elif kind == "record":
                item = by_key[event["key"]]
                self._record(log, run_id, item, event["record"], attempt, child.proc.pid)
                finished.add(item.key)
                child.in_flight = None
            elif kind == "fatal":
                child.built = {"error": event["error"], "oom": bool(event.get("oom"))}
                child.proc.wait()
                return "fatal"
            elif kind == "eof":
                code = child.proc.wait()
                if code == 0 and child.in_flight is None:
                    return "done"
                if code == EXIT_RESTART and child.in_flight is None:
                    return "restart"
                why = self._exit_description(code)
                oom_evidence = killed_by_oom(code, child.oom_kills_before, read_oom_kills()) if child.oom_kills_before else None
                if child.in_flight:
                    item = by_key[child.in_flight]
                    self._record(log, run_id, item, {"status": (Status.OOM if oom_evidence else Status.ERROR).value,
                                                     "error": f"worker {why}", "oom_evidence": oom_evidence,
                                                     "exit_code": code, "stderr_tail": self._stderr_tail(child.log_path)},
                                 attempt, child.proc.pid)
                    finished.add(item.key)
                    return "crash"
                if child.built is None:
                    child.built = {"error": f"worker {why} while building: {self._stderr_tail(child.log_path, 3)}",
                                   "oom": oom_evidence is not None, "oom_evidence": oom_evidence}
                    return "fatal"
                return "crash"

    # -- summary ------------------------------------------------------------------------------

    def write_summary(self, run_id: str) -> dict[str, Any]:
        run = load_json_file(self.out / "run.json", "run.json")
        records = load_records(self.out)  # with the scoring phase's scores merged
        # The thresholds in force are the current suite's (they are policy, not part of what was
        # measured, and may have changed since a resumed run started).
        builds = merge_scoring(self.build_info, read_scoring(self.out))
        summary = build_summary(run, records, builds, gates=self.suite.gates)
        atomic_write_json(self.out / "summary.json", summary)
        return summary

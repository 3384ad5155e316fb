"""The parent side of a run: plan items, run one child process per variant, write results.

Each variant runs in its own child (`worker.py`), so one variant's OOM, crash or cached memory
cannot distort the next. The parent is the only writer of result files. A child that crashes
or hangs past the per-case timeout is recorded (ERROR / TIMEOUT, with its exit signal and the
tail of its stderr) and a fresh child carries on with the remaining items.

Where children run is the executor's business (`executors.py`): the local one starts them here,
one at a time; the Ray one runs units (variants or case shards of them) in parallel on a cluster,
each unit's events handled on its own driver thread by the same loop.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import queue
import signal
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
    atomic_write_bytes,
    atomic_write_json,
    build_summary,
    load_json_file,
    read_builds,
    read_ended,
    read_records,
    utc_now,
)
from ..plan import Item, RunPlan, make_plan  # noqa: F401  (re-exported for callers)
from ..results.rundir import load_records
from ..results.scores import merge_scoring, read_scoring
from ..suite import Suite
from .executors import Executor, LocalExecutor, Unit, WorkerHandle
from .worker import EXIT_RESTART


def _gpu_processes_at_start() -> dict[str, Any]:
    """Other processes on the GPU when the run starts (the parent has no CUDA context of its own),
    or why NVML cannot list them: a run says whether it had the GPU to itself."""
    from .gpu_state import GpuStateUnavailable, other_gpu_processes

    try:
        return {"processes": [p.as_record() for p in other_gpu_processes(0)], "unavailable": None}
    except GpuStateUnavailable as err:
        return {"processes": None, "unavailable": str(err)}


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


@dataclass(eq=False)  # held in a set, by identity
class _Child:
    handle: WorkerHandle
    unit: Unit
    in_flight: str | None = None
    deadline: float = float("inf")  # set when the worker is placed (a Ray unit may queue first)
    warmups: int = 0  # warm-up edits before the item in flight (its time limit covers them)
    built: dict[str, Any] | None = None
    lost: str | None = None  # why the executor lost the worker's host, if it did


class _Stopped(Exception):
    """Another unit's thread failed or the run was interrupted: stop without recording."""


class Orchestrator:
    def __init__(self, plan: RunPlan, out: Path, *, resume: bool = False, progress: Progress | None = None,
                 faults: list[dict[str, str]] | None = None, executor: Executor | None = None) -> None:
        """`faults` is the runner's own test hook (see worker.py); nothing else sets it.
        `executor` runs the workers (default: `LocalExecutor`, one child at a time here)."""
        self.plan, self.out, self.resume = plan, out, resume
        self.faults = list(faults or [])
        self.progress = progress or Progress()
        self.suite = plan.suite
        self.executor = executor or LocalExecutor()
        self.build_info: dict[str, dict[str, Any]] = {}
        self._live: set[_Child] = set()
        self._lock = threading.RLock()  # records, build files and progress, when units run in parallel
        self._stopping = threading.Event()
        self.unit_runs: list[dict[str, Any]] = []

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
            "gpu_processes_at_start": _gpu_processes_at_start(),
            "executor": self.executor.describe(),
        })
        return run_id, done

    # -- children -----------------------------------------------------------------------------

    def _spawn(self, unit: Unit, items: list[Item], attempt: int) -> _Child:
        spec = {
            "suite": self.suite.model_dump(mode="json"),
            "variant": unit.variant,
            "items": [i.spec() for i in items],
            "baseline_variant": self.suite.baseline_variant,
        }
        if self.faults:
            spec["faults"] = self.faults
        child = _Child(self.executor.start(unit, spec, self.out, attempt), unit)
        with self._lock:
            self._live.add(child)
        return child

    def _kill(self, child: _Child) -> None:
        child.handle.kill()

    def _release(self, child: _Child, attempt: int, outcome: str) -> None:
        """The worker is gone: note where and how long it ran (logs/units.json)."""
        child.handle.kill()
        child.handle.close()
        built = child.built or {}
        with self._lock:
            self._live.discard(child)
            self.unit_runs.append({"unit": child.unit.name, "variant": child.unit.variant, "attempt": attempt,
                                   "outcome": outcome, "host": child.handle.host, "gpu_uuid": built.get("gpu_uuid"),
                                   "worker_pid": child.handle.pid, "wall_s": child.handle.wall_s,
                                   "lost": child.lost, "finished_at": utc_now()})
            atomic_write_json(self.out / "logs" / "units.json", {"executor": self.executor.describe(),
                                                                 "units": self.unit_runs})

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
        self.executor.open(self.plan)
        try:
            run_id, done = self._start_run_dir()
            log = RecordLog(self.out / "cases.jsonl")
            try:
                todo = {v: [i for i in self.plan.items[v] if i.key not in done] for v in self.plan.variants}
                units = self.executor.units(self.plan, todo)
                if self.executor.parallel <= 1:
                    for variant in self.plan.variants:
                        self.progress.on_variant_start(variant, len(self.plan.items[variant]) - len(todo[variant]))
                        for unit in units:
                            if unit.variant == variant:
                                self._run_variant(run_id, unit, log)
                        self._score_variant(run_id, variant)
                else:
                    self._run_parallel(run_id, units, todo, log)
                    for variant in self.plan.variants:  # the baseline first: fidelity reads its outputs
                        self._score_variant(run_id, variant)
            finally:
                log.close()
            return self.write_summary(run_id)
        finally:
            self.executor.close()

    def _needs_baseline_first(self) -> bool:
        """Whether workers read the baseline variant's output images (fidelity metrics)."""
        cfg = self.suite.metrics
        if not self.suite.baseline_variant or cfg is None or not getattr(cfg, "names", ()):
            return False
        from ..metrics.base import Reference
        from ..metrics.registry import REGISTRY

        return any(REGISTRY.get(n).reference == Reference.BASELINE for n in cfg.names if n in REGISTRY)

    def _run_parallel(self, run_id: str, units: list[Unit], todo: dict[str, list[Item]], log: RecordLog) -> None:
        """Every unit on its own driver thread; the executor's cluster decides when each runs.
        When fidelity metrics need the baseline's outputs, the baseline's units finish first."""
        for variant in self.plan.variants:
            self.progress.on_variant_start(variant, len(self.plan.items[variant]) - len(todo[variant]))
        first = [u for u in units if u.variant == self.suite.baseline_variant] if self._needs_baseline_first() else []
        errors: list[BaseException] = []

        def work(unit: Unit) -> None:
            try:
                self._run_variant(run_id, unit, log)
            except _Stopped:
                pass
            except BaseException as err:  # noqa: BLE001  (re-raised on the main thread)
                errors.append(err)
                self._stopping.set()

        try:
            for wave in (first, [u for u in units if u not in first]):
                threads = [threading.Thread(target=work, args=(u,), daemon=True, name=f"unit-{u.name}") for u in wave]
                for t in threads:
                    t.start()
                for t in threads:
                    while t.is_alive():
                        t.join(0.5)
                if errors:
                    raise errors[0]
        finally:
            # Ctrl-C, SIGTERM or a failed thread: no worker outlives the run.
            self._stopping.set()
            with self._lock:
                live = list(self._live)
            for child in live:
                child.handle.kill()

    def _score_variant(self, run_id: str, variant: str) -> None:
        """The variant's scoring phase, after its edits, in a process of its own (scoring.py);
        on a resumed run it scores only what has no score yet."""
        from .scoring import ScoringPhase

        phase = ScoringPhase.for_suite(self.out, run_id, self.suite, on_message=self.progress.on_message)
        if phase is not None:
            phase.score_variant(variant, load_records(self.out), self.suite.baseline_variant)

    def _record(self, log: RecordLog, run_id: str, item: Item, body: dict[str, Any], attempt: int, pid: int | None,
                child: _Child | None = None) -> None:
        built = (child.built if child else None) or {}
        record = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "key": item.key,
            "variant": item.variant,
            "case_id": item.case_id,
            "repeat": item.repeat,
            **({"turn": item.turn} if item.turn is not None else {}),
            "attempt": attempt,
            "worker_pid": pid,
            "host": child.handle.host if child else None,
            "gpu_uuid": built.get("gpu_uuid"),
            "finished_at": utc_now(),
            **body,
        }
        with self._lock:
            if self._stopping.is_set() and self.executor.parallel > 1:
                raise _Stopped()
            try:
                log.append(record)
            except OSError as err:
                # Disk full or quota: stop cleanly. Records already written are intact (each was
                # fsynced whole); a torn tail of this one is dropped when the run is resumed.
                raise UserInputError(str(self.out / "cases.jsonl"), f"cannot write results ({err.strerror or err})",
                                     "free space, then finish the run with --resume") from None
            self.progress.on_item_done(item.key, record)

    def _run_variant(self, run_id: str, unit: Unit, log: RecordLog) -> None:
        self._run_variant_children(run_id, unit, list(unit.items), log)

    def _run_variant_children(self, run_id: str, unit: Unit, todo: list[Item], log: RecordLog) -> None:
        m = self.suite.measurement
        variant = unit.variant
        by_key = {i.key: i for i in todo}
        remaining = list(todo)
        attempt = 0
        failures = 0
        lost = 0
        while remaining:
            if self._stopping.is_set() and self.executor.parallel > 1:
                raise _Stopped()
            child = self._spawn(unit, remaining, attempt)
            finished: set[str] = set()
            outcome = "interrupted"
            try:
                outcome = self._drive(child, run_id, variant, by_key, finished, attempt, log)
            finally:
                # Whatever ends the loop (a record that cannot be written, SIGTERM, Ctrl-C), no
                # worker outlives it.
                self._release(child, attempt, outcome)
            remaining = [i for i in remaining if i.key not in finished]
            if outcome == "done" or not remaining:
                break
            if outcome == "fatal":
                # The variant cannot be built; building again would fail the same way.
                error = child.built["error"] if child.built else "build failed"
                status = Status.OOM if child.built and child.built.get("oom") else Status.ERROR
                for item in remaining:
                    self._record(log, run_id, item, {"status": status.value, "error": error, "phase": "build",
                                                     "stderr_tail": child.handle.stderr_tail()}, attempt, child.handle.pid,
                                 child)
                break
            attempt += 1
            if outcome == "lost":
                # The worker's host (Ray actor or node) died: nothing was wrong with the item in
                # flight, so it runs again, in a fresh unit the cluster may place elsewhere.
                lost += 1
                if lost > self.executor.max_unit_retries:
                    for item in remaining:
                        self._record(log, run_id, item, {"status": Status.ERROR.value,
                                                         "error": f"the unit's worker host was lost {lost} times "
                                                                  f"(last: {child.lost}); not retried again"},
                                     attempt, None, child)
                    break
                self.progress.on_message(f"{unit.name}: worker host lost ({child.lost}); retrying")
                continue
            if outcome != "restart":
                failures += 1
            if failures > m.max_child_restarts:
                for item in remaining:
                    self._record(log, run_id, item, {"status": Status.SKIPPED.value,
                                                     "error": f"worker failed {failures} times; remaining items skipped"},
                                 attempt, None)
                break
            self.progress.on_message(f"{unit.name}: restarting worker ({outcome})")

    def _drive(self, child: _Child, run_id: str, variant: str, by_key: dict[str, Item], finished: set[str],
               attempt: int, log: RecordLog) -> str:
        """Feed one child's events into records until it ends. Returns why it ended:
        'done', 'fatal' (build failed), 'restart' (asked for a fresh process), 'crash', 'timeout',
        'lost' (the executor lost the worker's host; the in-flight item is not recorded)."""
        m = self.suite.measurement
        handle = child.handle
        while True:
            timeout = max(0.0, child.deadline - time.monotonic())
            try:
                event = handle.events.get(timeout=None if timeout == float("inf") else timeout)
            except queue.Empty:
                self._kill(child)
                if child.in_flight:
                    item = by_key[child.in_flight]
                    limit = m.case_timeout_s * (1 + child.warmups)
                    self._record(log, run_id, item, {"status": Status.TIMEOUT.value,
                                                     "error": f"no result within {limit:g} s (measurement.case_timeout_s)",
                                                     "stderr_tail": handle.stderr_tail()}, attempt, handle.pid, child)
                    finished.add(item.key)
                    return "timeout"
                child.built = {"error": f"building the variant took longer than {m.build_timeout_s:g} s (measurement.build_timeout_s)"}
                return "fatal"
            kind = event["type"]
            if kind == "placed":
                child.deadline = time.monotonic() + m.build_timeout_s
            elif kind == "built":
                info = {**event["info"], "built_at": utc_now()}
                with self._lock:
                    self.build_info[variant] = info
                    atomic_write_json(self.out / "variants" / f"{variant}.build.json", info)
                child.built = info
            elif kind == "ended":  # the GPU's state at the end, energy of the timed phase: one per worker
                with self._lock:
                    path = self.out / "variants" / f"{variant}.ended.json"
                    ended = json.loads(path.read_text()) if path.exists() else []
                    atomic_write_json(path, [*ended, {**event["info"], "attempt": attempt, "unit": child.unit.name,
                                                      "ended_at": utc_now()}])
            elif kind == "start":
                child.in_flight = event["key"]
                item = by_key[event["key"]]
                # the worker says how many warm-up edits precede this one (a restarted worker warms up at any repeat)
                child.warmups = int(event.get("warmup_edits", m.warmup_runs if item.repeat == 0 else 0))
                limit = m.case_timeout_s * (1 + child.warmups)
                child.deadline = time.monotonic() + limit
            elif kind == "record":
                item = by_key[event["key"]]
                record = event["record"]
                if event.get("image") is not None and record.get("output_path"):
                    # Made on another node: the driver writes it, as it writes everything here.
                    atomic_write_bytes(self.out / record["output_path"], base64.b64decode(event["image"]))
                self._record(log, run_id, item, record, attempt, handle.pid, child)
                finished.add(item.key)
                child.in_flight = None
            elif kind == "fatal":
                child.built = {"error": event["error"], "oom": bool(event.get("oom"))}
                handle.wait()
                return "fatal"
            elif kind == "eof":
                if event.get("lost"):
                    child.lost = event["lost"]
                    return "lost"
                code = handle.wait()
                if code == 0 and child.in_flight is None:
                    return "done"
                if code == EXIT_RESTART and child.in_flight is None:
                    return "restart"
                why = self._exit_description(code)
                oom_evidence = handle.oom_evidence(code)
                if child.in_flight:
                    item = by_key[child.in_flight]
                    self._record(log, run_id, item, {"status": (Status.OOM if oom_evidence else Status.ERROR).value,
                                                     "error": f"worker {why}", "oom_evidence": oom_evidence,
                                                     "exit_code": code, "stderr_tail": handle.stderr_tail()},
                                 attempt, handle.pid, child)
                    finished.add(item.key)
                    return "crash"
                if child.built is None:
                    child.built = {"error": f"worker {why} while building: {handle.stderr_tail(3)}",
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
        summary = build_summary(run, records, builds, ended=read_ended(self.out), gates=self.suite.gates)
        atomic_write_json(self.out / "summary.json", summary)
        return summary

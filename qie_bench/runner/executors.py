"""Where a unit of work runs: the seam between the orchestrator and the worker processes.

A *unit* is a variant, or one shard (a subset of cases) of a variant. An executor starts the
SAME worker (``python -m qie_bench.runner.worker SPEC``) for a unit in a fresh process and hands
the orchestrator a `WorkerHandle`: a queue of the worker's JSON events plus kill / wait / stderr.
The orchestrator stays the only writer of the run directory whatever the executor.

Events a handle adds to the worker's own (``built``, ``start``, ``record``, ``ended``, ``fatal``):

``placed``  ``{host, pid}``: the worker process is running (the build deadline starts here; a Ray
            unit may wait in the cluster's queue before it).
``eof``     the event stream ended; ``lost`` (a reason) when the executor lost the process or
            node hosting the worker — the in-flight item is then retried, not recorded.
A ``record`` event may carry ``image`` (base64 PNG) when the output image was written away from
the run directory; the orchestrator writes it to ``output_path``.

Two executors: `LocalExecutor` (one child on this machine at a time: today's behaviour) and
`qie_bench.runner.ray_executor.RayExecutor` (units in parallel on a Ray cluster; imported only
when asked for).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plan import Item, RunPlan
from ..results import atomic_write_json, utc_now
from .oom_kill import OomKillCount, killed_by_oom, read_oom_kills


@dataclass(frozen=True)
class Unit:
    """One worker's share of a run: a variant's items, or a shard of them (whole cases)."""

    name: str  # the variant, or "<variant>@<shard>"
    variant: str
    items: tuple[Item, ...]


def split_units(plan: RunPlan, todo: dict[str, list[Item]], shards: int) -> list[Unit]:
    """Each variant's pending items as `shards` units (fewer when it has fewer cases). A case's
    repeats stay in one unit: repeat 0 runs the warm-up and writes the output image."""
    units: list[Unit] = []
    for variant in plan.variants:
        items = todo.get(variant) or []
        if not items:
            continue
        cases = list(dict.fromkeys(i.case_id for i in items))
        n = max(1, min(shards, len(cases)))
        if n == 1:
            units.append(Unit(variant, variant, tuple(items)))
            continue
        groups = [cases[k::n] for k in range(n)]
        for k, group in enumerate(groups):
            chosen = set(group)
            units.append(Unit(f"{variant}@{k}", variant, tuple(i for i in items if i.case_id in chosen)))
    return units


class WorkerHandle(ABC):
    """One running worker, wherever it runs. `events` yields dicts (see the module docstring)."""

    events: queue.Queue
    pid: int | None = None
    host: str | None = None
    wall_s: float | None = None  # the worker process's own wall time, set by `wait`

    @abstractmethod
    def wait(self) -> int | None:
        """Wait for the worker to exit; its exit code (None where the executor lost it)."""

    @abstractmethod
    def kill(self) -> None:
        """Kill the worker (and whatever hosts it) now; safe to call twice."""

    @abstractmethod
    def stderr_tail(self, lines: int = 15) -> str: ...

    @abstractmethod
    def oom_evidence(self, code: int | None) -> dict[str, Any] | None:
        """Evidence that the kernel's OOM killer ended the worker, or None."""

    def close(self) -> None:
        """Release what hosts the worker; bring back its stderr if it lives elsewhere."""


class Executor(ABC):
    """Runs units. `parallel` is how many units the orchestrator may run at once."""

    name: str = ""
    max_unit_retries: int = 2  # times a unit whose host (not its worker) died is started again

    @property
    def parallel(self) -> int:
        return 1

    def open(self, plan: RunPlan) -> None:
        """Check the executor can run this plan (raise `UserInputError` if not) and start it."""

    def close(self) -> None: ...

    def units(self, plan: RunPlan, todo: dict[str, list[Item]]) -> list[Unit]:
        return split_units(plan, todo, 1)

    def describe(self) -> dict[str, Any]:
        """What run.json records about where the run ran."""
        return {"kind": self.name}

    @abstractmethod
    def start(self, unit: Unit, spec: dict[str, Any], out: Path, attempt: int) -> WorkerHandle:
        """Start the worker for `unit` with `spec` (the worker's spec without its event pipe)."""


# -- the worker process itself, as the local executor and a Ray unit both start it -------------

def start_worker_process(spec: dict[str, Any], spec_path: Path, log_path: Path, attempt: int,
                         events: queue.Queue, env_overrides: dict[str, str | None] | None = None) -> subprocess.Popen:
    """Start ``python -m qie_bench.runner.worker`` with an event pipe; a thread feeds its JSON
    lines into `events`, then ``{"type": "eof"}``. The worker dies with this process.
    `env_overrides` sets (or, with None, removes) variables of the worker's environment."""
    read_fd, write_fd = os.pipe()
    atomic_write_json(spec_path, {**spec, "event_fd": write_fd, "parent_pid": os.getpid()})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    log.write(f"\n===== worker start {utc_now()} attempt {attempt}\n".encode())
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, value in (env_overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qie_bench.runner.worker", str(spec_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,), env=env,
            start_new_session=True,  # its own process group: a timeout kills it and its children
        )
    finally:
        os.close(write_fd)
        log.close()

    def pump() -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8") as f:
            for line in f:
                try:
                    events.put(json.loads(line))
                except ValueError:
                    events.put({"type": "garbled", "line": line[:200]})
        events.put({"type": "eof"})

    threading.Thread(target=pump, daemon=True, name=f"events-{spec['variant']}").start()
    return proc


def kill_process_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def read_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_bytes()[-8000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- local ------------------------------------------------------------------------------------

class LocalHandle(WorkerHandle):
    def __init__(self, proc: subprocess.Popen, events: queue.Queue, log_path: Path, oom_before: OomKillCount | None,
                 started: float) -> None:
        self.proc, self.events, self.log_path = proc, events, log_path
        self.pid, self.host = proc.pid, socket.gethostname()
        self._oom_before, self._started = oom_before, started

    def wait(self) -> int | None:
        code = self.proc.wait()
        if self.wall_s is None:
            self.wall_s = time.monotonic() - self._started
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_process_group(self.proc)

    def stderr_tail(self, lines: int = 15) -> str:
        return read_tail(self.log_path, lines)

    def oom_evidence(self, code: int | None) -> dict[str, Any] | None:
        if code is None or self._oom_before is None:
            return None
        return killed_by_oom(code, self._oom_before, read_oom_kills())


class LocalExecutor(Executor):
    """One worker at a time on this machine, in the order of the plan (the default)."""

    name = "local"

    def start(self, unit: Unit, spec: dict[str, Any], out: Path, attempt: int) -> WorkerHandle:
        events: queue.Queue = queue.Queue()
        oom_before = read_oom_kills()
        started = time.monotonic()
        log_path = out / "logs" / f"{unit.name}.stderr.log"
        proc = start_worker_process({**spec, "out_dir": str(out.resolve())}, out / "logs" / f"{unit.name}.spec.json",
                                    log_path, attempt, events)
        events.put({"type": "placed", "host": socket.gethostname(), "pid": proc.pid})
        return LocalHandle(proc, events, log_path, oom_before, started)

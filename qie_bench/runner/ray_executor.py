"""Units on a Ray cluster: `qie-bench run SUITE --executor ray [--address ADDR]`.

Each unit is a Ray actor (`UnitHost`) holding one GPU (``num_gpus=1``; CPUs for a CPU suite). The
actor starts the SAME worker as a local run (``python -m qie_bench.runner.worker``) in a fresh
process on its node, in a scratch directory there, and the driver polls it for the worker's
events. Output images come back inside the events (the driver may not share a filesystem with
the node); the baseline's images go out with a unit that scores fidelity against them. The
driver remains the only writer of the run directory.

Faults: if the actor's process or its node dies, the driver's next poll fails; the unit is
started again as a new actor (the cluster places it where it can), with only the items that have
no record yet. After `max_unit_retries` such losses the remaining items are ERROR, with the reason.

Hardware classes are never pooled: units are pinned to one accelerator type (Ray's
``accelerator_type:<NAME>`` resource). A cluster with several GPU models is refused unless
`accelerator_type` names one; run once per model, each into its own run directory, and compare
them with `qie-bench report`.

Ray is imported here only; this module is imported only when `--executor ray` is asked for.
"""

from __future__ import annotations

import base64
import math
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..plan import Item, RunPlan
from .executors import Executor, Unit, WorkerHandle, kill_process_group, read_tail, split_units, start_worker_process
from .oom_kill import killed_by_oom, read_oom_kills


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray", "Ray is not installed", 'pip install -e ".[ray]" (or pip install "ray>=2.60")') from None
    return ray


class UnitHost:
    """The node side of one unit (made a Ray actor by `RayExecutor`): one worker process at a time."""

    def __init__(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="qie-bench-unit-"))
        self.events: queue.Queue = queue.Queue()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.scratch / "worker.stderr.log"
        self.started = 0.0
        self.wall_s: float | None = None
        self.oom_before: Any = None

    def start(self, spec: dict[str, Any], files: dict[str, bytes], attempt: int,
              env_overrides: dict[str, str | None]) -> dict[str, Any]:
        """Write the baseline images the unit needs, start the worker; where it runs."""
        for rel, data in files.items():
            path = self.scratch / "run" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (self.scratch / "run").mkdir(exist_ok=True)
        self.oom_before = read_oom_kills()
        self.started = time.monotonic()
        self.proc = start_worker_process({**spec, "out_dir": str(self.scratch / "run")}, self.scratch / "spec.json",
                                         self.log_path, attempt, self.events, env_overrides)
        return {"host": socket.gethostname(), "pid": self.proc.pid}

    def poll(self, wait_s: float) -> list[dict[str, Any]]:
        """The worker's events since the last poll (waits up to `wait_s` for the first). A record
        whose image the worker wrote here carries it back, base64."""
        out: list[dict[str, Any]] = []
        try:
            out.append(self.events.get(timeout=wait_s))
            while True:
                out.append(self.events.get_nowait())
        except queue.Empty:
            pass
        for event in out:
            rel = event.get("record", {}).get("output_path") if event.get("type") == "record" else None
            if rel:
                event["image"] = base64.b64encode((self.scratch / "run" / rel).read_bytes()).decode("ascii")
        return out

    def wait(self) -> tuple[int | None, float | None]:
        if self.proc is None:
            return None, None
        code = self.proc.wait()
        if self.wall_s is None:
            self.wall_s = time.monotonic() - self.started
        return code, self.wall_s

    def kill_worker(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_process_group(self.proc)

    def stderr_tail(self, lines: int) -> str:
        return read_tail(self.log_path, lines)

    def stderr(self, limit: int = 2**20) -> bytes:
        try:
            return self.log_path.read_bytes()[-limit:]
        except OSError:
            return b""

    def oom_evidence(self, code: int | None) -> dict[str, Any] | None:
        if code is None or self.oom_before is None:
            return None
        return killed_by_oom(code, self.oom_before, read_oom_kills())

    def cleanup(self) -> None:
        self.kill_worker()
        shutil.rmtree(self.scratch, ignore_errors=True)


class RayHandle(WorkerHandle):
    """The driver side of one unit: a thread polls the actor and queues its events."""

    POLL_S = 1.0

    def __init__(self, ray: Any, actor: Any, started: Any, log_path: Path) -> None:
        self.ray, self.actor, self.log_path = ray, actor, log_path
        self.events: queue.Queue = queue.Queue()
        self._lost: str | None = None
        self._closed = False
        threading.Thread(target=self._pump, args=(started,), daemon=True, name="ray-unit-events").start()

    def _pump(self, started: Any) -> None:
        try:
            placed = self.ray.get(started)  # returns once the cluster has placed the actor and the worker runs
            self.host, self.pid = placed["host"], placed["pid"]
            self.events.put({"type": "placed", **placed})
            while True:
                for event in self.ray.get(self.actor.poll.remote(self.POLL_S)):
                    self.events.put(event)
                    if event["type"] == "eof":
                        return
        except Exception as err:  # the actor's process or its node died, or it was killed
            self._lost = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}".rstrip(": ")
            self.events.put({"type": "eof", "lost": self._lost})

    def _call(self, method: str, *args: Any, default: Any = None, timeout: float = 30) -> Any:
        if self._lost:
            return default
        try:
            return self.ray.get(getattr(self.actor, method).remote(*args), timeout=timeout)
        except Exception:
            return default

    def wait(self) -> int | None:
        code, wall = self._call("wait", default=(None, None), timeout=None)
        self.wall_s = wall
        return code

    def kill(self) -> None:
        if not self._lost:
            self._call("kill_worker", timeout=10)

    def stderr_tail(self, lines: int = 15) -> str:
        return self._call("stderr_tail", lines, default=f"(no stderr: the unit's host was lost: {self._lost})")

    def oom_evidence(self, code: int | None) -> dict[str, Any] | None:
        return self._call("oom_evidence", code)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        data = self._call("stderr", default=b"")
        if data:
            with open(self.log_path, "ab") as f:
                f.write(data)
        self._call("cleanup", timeout=30)
        try:
            self.ray.kill(self.actor)
        except Exception:
            pass


class RayExecutor(Executor):
    """Units in parallel on a Ray cluster. `address` None = a local cluster started here with
    this machine's resources; `shards` None = split variants into case shards when there are
    fewer variants than places to run them; `cpus_per_unit` is what a CPU suite's unit asks for;
    `accelerator_type` picks the GPU model on a mixed cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, shards: int | None = None,
                 cpus_per_unit: int = 1, accelerator_type: str | None = None, max_unit_retries: int = 2,
                 init_options: dict[str, Any] | None = None) -> None:
        if shards is not None and shards < 1:
            raise UserInputError("--shards", f"must be at least 1, not {shards}")
        if cpus_per_unit < 1:
            raise UserInputError("cpus_per_unit", f"must be at least 1, not {cpus_per_unit}")
        self.address, self.num_cpus, self.shards = address, num_cpus, shards
        self.cpus_per_unit, self.accelerator_type, self.max_unit_retries = cpus_per_unit, accelerator_type, max_unit_retries
        self.init_options = dict(init_options or {})
        self.ray: Any = _import_ray()
        self._started_cluster = False
        self._slots = 1
        self._gpu = False
        self._actor_cls: Any = None
        self._baseline: str | None = None
        self._fidelity = False

    @property
    def parallel(self) -> int:
        return max(2, self._slots)  # a driver thread per unit; the cluster queues what does not fit

    def open(self, plan: RunPlan) -> None:
        ray = self.ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                # A local cluster runs this very tree (an existing cluster has qie-bench installed).
                path = [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])]
                options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(path)}}
                options["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            options.update(self.init_options)
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as err:
                raise UserInputError("--address", f"cannot connect to a Ray cluster at '{self.address}' ({err})",
                                     "start one with `ray start --head`, or leave --address out for a local one") from None
            self._started_cluster = True
        resources = ray.cluster_resources()
        types = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
        device = plan.suite.model.device
        self._gpu = device == "cuda" or (device == "auto" and resources.get("GPU", 0) > 0)
        if self._gpu:
            if not resources.get("GPU"):
                raise UserInputError("--executor ray", f"suite '{plan.suite.name}' needs GPUs and the Ray cluster has none",
                                     "connect to a cluster with GPU nodes (--address)")
            if self.accelerator_type is None and len(types) > 1:
                raise UserInputError("--accelerator-type", f"the cluster mixes GPU models ({', '.join(types)}) and figures "
                                     "from different models are never pooled",
                                     "run once per model with --accelerator-type NAME, each into its own --out")
            if self.accelerator_type is not None and self.accelerator_type not in types:
                raise UserInputError("--accelerator-type", f"no '{self.accelerator_type}' GPUs in the cluster",
                                     f"it has: {', '.join(types) or 'no labelled accelerators'}")
            self.accelerator_type = self.accelerator_type or (types[0] if types else None)
            self._slots = self._gpus_of(self.accelerator_type)
        else:
            self._slots = max(1, int(resources.get("CPU", 1)) // self.cpus_per_unit)
        self._baseline = plan.suite.baseline_variant
        self._actor_cls = ray.remote(UnitHost)

    def _gpus_of(self, accelerator_type: str | None) -> int:
        """GPUs on the alive nodes of that model (Ray marks a node, not each GPU, with its type)."""
        total = 0.0
        for node in self.ray.nodes():
            res = node.get("Resources", {})
            if node.get("Alive") and (accelerator_type is None or f"accelerator_type:{accelerator_type}" in res):
                total += res.get("GPU", 0)
        return max(1, int(total))

    def close(self) -> None:
        if self._started_cluster and self.ray.is_initialized():
            self.ray.shutdown()
            self._started_cluster = False

    def units(self, plan: RunPlan, todo: dict[str, list[Item]]) -> list[Unit]:
        shards = self.shards
        if shards is None:  # fewer variants than places to run: each variant in case shards
            pending = sum(1 for v in todo.values() if v)
            shards = max(1, math.ceil(self._slots / pending)) if pending and pending < self._slots else 1
        return split_units(plan, todo, shards)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name, "address": self.address, "slots": self._slots,
                "accelerator_type": self.accelerator_type if self._gpu else None,
                "unit_resources": {"num_gpus": 1} if self._gpu else {"num_cpus": self.cpus_per_unit},
                "shards": self.shards, "ray_version": getattr(self.ray, "__version__", None)}

    def _files_for(self, unit: Unit, out: Path) -> dict[str, bytes]:
        """The baseline's output images this unit scores against (those that exist)."""
        if not self._baseline or unit.variant == self._baseline:
            return {}
        files = {}
        for case_id in dict.fromkeys(i.case_id for i in unit.items):
            rel = f"images/{self._baseline}/{case_id}.png"
            if (out / rel).exists():
                files[rel] = (out / rel).read_bytes()
        return files

    def start(self, unit: Unit, spec: dict[str, Any], out: Path, attempt: int) -> WorkerHandle:
        from ..results import atomic_write_json

        # Threaded (poll blocks while kill or stderr may be asked); never restarted by Ray itself:
        # the driver starts a fresh unit with only the items still without a record.
        options: dict[str, Any] = {"max_concurrency": 4, "max_restarts": 0}
        if self._gpu:
            options["num_gpus"] = 1
            options["num_cpus"] = 1
            if self.accelerator_type:
                options["accelerator_type"] = self.accelerator_type
        else:
            options["num_cpus"] = self.cpus_per_unit
        # For the record: what the unit was asked to do (the node writes its own copy).
        atomic_write_json(out / "logs" / f"{unit.name}.spec.json", {**spec, "attempt": attempt, "executor": "ray"})
        actor = self._actor_cls.options(**options).remote()
        # Ray sets OMP_NUM_THREADS to the unit's CPUs. A CPU unit keeps that (it asked for those
        # CPUs); a GPU unit's worker gets the driver's setting, as a local worker would, so its
        # CPU-side work is not throttled to one thread and its latency compares with a local run.
        env = {} if not self._gpu else {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
        started = actor.start.remote(spec, self._files_for(unit, out), attempt, env)
        log_path = out / "logs" / f"{unit.name}.stderr.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return RayHandle(self.ray, actor, started, log_path)

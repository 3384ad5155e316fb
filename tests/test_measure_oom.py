"""OOM counted where it happens: CUDA's and cuBLAS's own allocation failures, and a worker the
kernel's OOM killer SIGKILLed (evidence: the memory cgroup's oom_kill counter went up, read from
a fake cgroup tree here)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from qie_bench.results import RecordLog, read_records
from qie_bench.runner import oom_kill
from qie_bench.runner.edit import is_oom, oom_evidence
from qie_bench.runner.oom_kill import OomKillCount, killed_by_oom, read_oom_kills
from qie_bench.runner.executors import LocalHandle, Unit
from qie_bench.runner.orchestrator import Item, Orchestrator, Progress, _Child


@pytest.mark.parametrize(("err", "evidence"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "exception type OutOfMemoryError"),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
     "RuntimeError message contains 'CUDA error: out of memory'"),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
     "RuntimeError message contains 'CUBLAS_STATUS_ALLOC_FAILED'"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"),
     "RuntimeError message contains 'can't allocate memory'"),
    (MemoryError(), "exception type MemoryError"),
])
def test_out_of_memory_errors_are_oom_with_evidence(err: BaseException, evidence: str) -> None:
    assert oom_evidence(err) == evidence
    assert is_oom(err)


def test_an_oom_raised_from_inside_another_error_is_found() -> None:
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as inner:
            raise ValueError("a layer failed") from inner
    except ValueError as outer:
        assert oom_evidence(outer) == "exception type OutOfMemoryError"


@pytest.mark.parametrize("err", [RuntimeError("CUDA error: an illegal memory access was encountered"),
                                 ValueError("out of memory"), RuntimeError("shape mismatch")])
def test_other_errors_are_not_oom(err: BaseException) -> None:
    assert oom_evidence(err) is None and not is_oom(err)


def _cgroup_v2(tmp_path: Path, oom_kills: int) -> tuple[Path, Path]:
    mount, proc = tmp_path / "sys-fs-cgroup", tmp_path / "proc-self-cgroup"
    (mount / "user.slice" / "bench").mkdir(parents=True, exist_ok=True)
    (mount / "user.slice" / "bench" / "memory.events").write_text(
        f"low 0\nhigh 0\nmax 12\noom 3\noom_kill {oom_kills}\noom_group_kill 0\n")
    proc.write_text("0::/user.slice/bench\n")
    return mount, proc


def test_read_the_counter_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    mount, proc = _cgroup_v2(tmp_path, 2)
    assert read_oom_kills(mount, proc) == OomKillCount(2, str(mount / "user.slice/bench/memory.events"))
    v1_mount, v1_proc = tmp_path / "v1", tmp_path / "v1-proc"
    (v1_mount / "memory" / "docker" / "abc").mkdir(parents=True)
    (v1_mount / "memory" / "docker" / "abc" / "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    v1_proc.write_text("12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert read_oom_kills(v1_mount, v1_proc).count == 5
    nothing = read_oom_kills(tmp_path / "none", proc)
    assert nothing.count is None and "no oom_kill counter" in nothing.source


def _killed_child() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def test_a_sigkilled_worker_is_oom_only_when_the_counter_went_up(tmp_path: Path) -> None:
    mount, proc = _cgroup_v2(tmp_path, 2)
    before = read_oom_kills(mount, proc)
    code = _killed_child()
    assert code == -signal.SIGKILL
    assert killed_by_oom(code, before, read_oom_kills(mount, proc)) is None  # killed, but not by the OOM killer
    _cgroup_v2(tmp_path, 3)
    after = read_oom_kills(mount, proc)
    assert killed_by_oom(code, before, after) == (
        f"worker killed by SIGKILL while the memory cgroup's oom_kill counter went from 2 to 3 ({after.source})")
    assert killed_by_oom(-signal.SIGSEGV, before, after) is None  # a crash is not an OOM kill
    assert killed_by_oom(code, OomKillCount(None, "unreadable"), after) is None


def test_orchestrator_records_an_oom_killed_worker_as_oom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's side: a worker SIGKILLed in the middle of a case while the cgroup counted an
    OOM kill gives an OOM record with the evidence; the same death without it stays ERROR."""
    mount, proc = _cgroup_v2(tmp_path, 7)
    monkeypatch.setattr(oom_kill, "CGROUP_MOUNT", mount)
    monkeypatch.setattr(oom_kill, "PROC_SELF_CGROUP", proc)
    orch = object.__new__(Orchestrator)
    orch.suite = SimpleNamespace(measurement=SimpleNamespace(case_timeout_s=60, warmup_runs=0, build_timeout_s=60))
    orch.progress, orch.out, orch.build_info = Progress(), tmp_path, {}
    orch._lock, orch._stopping = threading.RLock(), threading.Event()
    log = RecordLog(tmp_path / "cases.jsonl")
    for case, oom_killed in (("a", True), ("b", False)):
        item = Item("v", case, 0)
        events: queue.Queue = queue.Queue()
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        handle = LocalHandle(worker, events, tmp_path / "stderr.log", read_oom_kills(), time.monotonic())
        child = _Child(handle, Unit("v", "v", (item,)), deadline=1e18)
        events.put({"type": "start", "key": item.key})
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        if oom_killed:
            _cgroup_v2(tmp_path, 8)
        events.put({"type": "eof"})
        assert orch._drive(child, "run", "v", {item.key: item}, set(), 0, log) == "crash"
    log.close()
    a, b = read_records(tmp_path / "cases.jsonl")
    assert a["status"] == "OOM" and a["error"] == "worker killed by signal SIGKILL"
    assert "oom_kill counter went from 7 to 8" in a["oom_evidence"]
    assert b["status"] == "ERROR" and b["oom_evidence"] is None

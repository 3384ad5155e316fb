"""Was a worker that died by SIGKILL killed by the kernel's OOM killer?

The parent reads its memory cgroup's OOM-kill counter before it starts a worker and again after
the worker died (the worker inherits the parent's cgroup). A SIGKILL while the counter went up
is counted as OOM, with the counter as evidence; without that evidence the death stays ERROR.

What is read:
- cgroup v2: ``<mount>/<path>/memory.events``, key ``oom_kill`` (kills of processes in this cgroup
  and its descendants), the path from the ``0::`` line of ``/proc/self/cgroup``; inside a
  container whose cgroup is its own root, ``<mount>/memory.events``;
- cgroup v1: ``<mount>/memory/<path>/memory.oom_control``, key ``oom_kill`` (kernel 4.13+), the
  path from the ``memory`` line of ``/proc/self/cgroup``, falling back to the mount's root;
- where neither holds the key, nothing: a machine-wide counter (``/proc/vmstat``) would count
  other containers' kills, which is no evidence about this worker.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

CGROUP_MOUNT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class OomKillCount:
    """The counter's value and the file it came from; `count` None where none could be read."""

    count: int | None
    source: str


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """controller -> path from /proc/self/cgroup ("" is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2].lstrip("/")
    return paths


def _key_value(path: Path, key: str) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _candidates(mount: Path, proc_cgroup: Path) -> list[Path]:
    paths = _cgroup_paths(proc_cgroup)
    found: list[Path] = []
    if "" in paths:  # v2
        found += [mount / paths[""] / "memory.events", mount / "memory.events"]
    if "memory" in paths:  # v1
        found += [mount / "memory" / paths["memory"] / "memory.oom_control", mount / "memory" / "memory.oom_control"]
    return list(dict.fromkeys(found))  # in order, without repeats (a root path gives the same file twice)


def read_oom_kills(mount: Path | None = None, proc_cgroup: Path | None = None) -> OomKillCount:
    """This process's memory cgroup's OOM-kill counter."""
    mount = CGROUP_MOUNT if mount is None else mount
    proc_cgroup = PROC_SELF_CGROUP if proc_cgroup is None else proc_cgroup
    tried = _candidates(mount, proc_cgroup)
    for path in tried:
        value = _key_value(path, "oom_kill")
        if value is not None:
            return OomKillCount(value, str(path))
    return OomKillCount(None, "no oom_kill counter in " + (", ".join(map(str, tried)) or f"{proc_cgroup} (unreadable)"))


def killed_by_oom(exit_code: int | None, before: OomKillCount, after: OomKillCount) -> str | None:
    """The evidence that a worker with this exit code was killed by the OOM killer, or None.
    (A negative exit code is the signal that killed it, as subprocess reports it.)"""
    if exit_code != -signal.SIGKILL:
        return None
    if before.count is None or after.count is None or before.source != after.source:
        return None
    if after.count <= before.count:
        return None
    return (f"worker killed by SIGKILL while the memory cgroup's oom_kill counter went from {before.count} "
            f"to {after.count} ({after.source})")

"""Is the GPU clean and steady? Other processes on it, clocks, power limit, temperature and
throttle reasons: read at a variant's start and end, and (processes, throttling) while measuring.

A process of another pid namespace (this one inside a container) is listed by NVML under its
host pid, so "not this pid" cannot always tell this process from others: where this process's
pid is not in NVML's list, the records say so (`own_pid_listed: false`) and the list may hold
this process too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserInputError
from .energy import EnergyPhase, EnergyWindow
from ..nvml import GpuProcess, Nvml, _text

# NVML's clock-event ("throttle") reason bits, nvml.h's nvmlClocksEventReason*.
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that slow a measurement down (power or heat), as opposed to idling between kernels
# or clocks set on purpose: a variant that saw one of these is flagged `throttled`.
SLOWDOWN_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                              "hw_power_brake_slowdown"})


def throttle_names(mask: int) -> list[str]:
    """The reasons set in an NVML mask, idle left out (a GPU idles between kernels while the CPU
    works; that is not throttling). Unknown bits are kept as hex."""
    names = [name for bit, name in THROTTLE_BITS.items() if mask & bit and bit != 0x1]
    unknown = mask & ~sum(THROTTLE_BITS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


def others_of(procs: list[GpuProcess], own_pid: int) -> tuple[list[GpuProcess], bool]:
    """The processes that are not `own_pid`, and whether `own_pid` was in the list at all."""
    return [p for p in procs if p.pid != own_pid], any(p.pid == own_pid for p in procs)


class GpuStateUnavailable(RuntimeError):
    """NVML cannot list the GPU's processes (no driver, not supported)."""


def other_gpu_processes(device_index: int = 0, lib: Any = None) -> list[GpuProcess]:
    """Compute processes on the GPU other than this one, for `--require-idle-gpu` (the parent
    calls it before it starts any worker, and holds no CUDA context itself). Raises
    GpuStateUnavailable where NVML cannot list them."""
    nvml = Nvml(device_index, lib=lib)
    if not nvml.available:
        raise GpuStateUnavailable(nvml.unavailable_reason or "NVML unavailable")
    procs = nvml.compute_processes()
    if procs is None:
        raise GpuStateUnavailable("NVML: cannot list the GPU's compute processes")
    others, _ = others_of(procs, os.getpid())
    return [GpuProcess(p.pid, p.used_bytes, nvml.process_name(p.pid)) for p in others]


def require_idle_gpu(device_index: int = 0, lib: Any = None) -> None:
    """Refuse (UserInputError, exit 2) when another process holds the GPU or NVML cannot tell."""
    try:
        others = other_gpu_processes(device_index, lib)
    except GpuStateUnavailable as err:
        raise UserInputError("--require-idle-gpu", f"cannot list the GPU's processes ({err})",
                             "run without --require-idle-gpu") from None
    if others:
        listed = ", ".join(f"pid {p.pid}" + (f" ({p.name})" if p.name else "")
                           + (f" {p.used_bytes / 2**20:.0f} MiB" if p.used_bytes is not None else "") for p in others)
        raise UserInputError("--require-idle-gpu", f"GPU {device_index} is in use by {listed}",
                             "wait for it to finish, or run without --require-idle-gpu")


def _read(nvml: Nvml, name: str, *args: Any) -> tuple[Any, str | None]:
    try:
        return nvml._call(name, *args), None
    except nvml.lib.NVMLError as err:
        return None, f"NVML: {_text(err) or 'error'}"


def gpu_state(nvml: Nvml) -> dict[str, Any]:
    """A snapshot: clocks (MHz), enforced power limit (W), temperature (°C), throttle reasons,
    other processes. Figures NVML cannot give are None, with the reason under `unavailable`."""
    keys = ("sm_clock_mhz", "memory_clock_mhz", "power_limit_w", "temperature_c", "throttle_reasons",
            "other_processes", "own_pid_listed")
    if not nvml.available:
        return {**dict.fromkeys(keys), "unavailable": {"all": nvml.unavailable_reason}}
    lib = nvml.lib
    state: dict[str, Any] = {}
    why: dict[str, str] = {}
    for key, (fn, args, scale) in {
        "sm_clock_mhz": ("nvmlDeviceGetClockInfo", (lib.NVML_CLOCK_SM,), 1),
        "memory_clock_mhz": ("nvmlDeviceGetClockInfo", (lib.NVML_CLOCK_MEM,), 1),
        "power_limit_w": ("nvmlDeviceGetEnforcedPowerLimit", (), 1000),  # NVML gives mW
        "temperature_c": ("nvmlDeviceGetTemperature", (lib.NVML_TEMPERATURE_GPU,), 1),
    }.items():
        value, reason = _read(nvml, fn, *args)
        state[key] = None if value is None else (value / scale if scale != 1 else int(value))
        if reason:
            why[key] = reason
    mask = nvml.throttle_mask()
    state["throttle_reasons"] = None if mask is None else throttle_names(mask)
    if mask is None:
        why["throttle_reasons"] = "NVML: clock event reasons not supported"
    procs = nvml.compute_processes()
    if procs is None:
        state["other_processes"], state["own_pid_listed"] = None, None
        why["other_processes"] = "NVML: cannot list the GPU's compute processes"
    else:
        others, listed = others_of(procs, os.getpid())
        state["other_processes"] = [GpuProcess(p.pid, p.used_bytes, nvml.process_name(p.pid)).as_record() for p in others]
        state["own_pid_listed"] = listed
    state["unavailable"] = why or None
    return state


@dataclass
class GpuActivity:
    """What the memory sampler saw of the GPU while one edit ran: throttle reasons (OR of the
    masks sampled) and other processes (each with the most memory it was seen holding)."""

    throttle_mask: int | None = None
    others: dict[int, GpuProcess] | None = None
    own_pid_listed: bool | None = None
    unavailable: str | None = None

    def observe(self, nvml: Nvml, procs: list[GpuProcess] | None, own_pid: int) -> None:
        mask = nvml.throttle_mask()
        if mask is not None:
            self.throttle_mask = (self.throttle_mask or 0) | mask
        if procs is None:
            return
        others, listed = others_of(procs, own_pid)
        self.own_pid_listed = bool(self.own_pid_listed) or listed
        seen = self.others if self.others is not None else {}
        for p in others:
            before = seen.get(p.pid)
            if before is None:
                seen[p.pid] = GpuProcess(p.pid, p.used_bytes, nvml.process_name(p.pid))
            elif p.used_bytes is not None and (before.used_bytes or 0) < p.used_bytes:
                seen[p.pid] = GpuProcess(p.pid, p.used_bytes, before.name)
        self.others = seen

    def as_record(self) -> dict[str, Any]:
        """`throttle_reasons_seen` (names, idle left out), `other_gpu_processes` ({pid,
        used_bytes, name}), `own_pid_listed`, `gpu_activity_unavailable` (why they are null)."""
        return {
            "throttle_reasons_seen": None if self.throttle_mask is None else throttle_names(self.throttle_mask),
            "other_gpu_processes": None if self.others is None else [p.as_record() for p in self.others.values()],
            "own_pid_listed": self.own_pid_listed,
            "gpu_activity_unavailable": self.unavailable if self.throttle_mask is None and self.others is None else None,
        }


@dataclass
class VariantMonitor:
    """A worker's view of one variant's GPU: the state when measuring starts, every timed edit's
    energy and activity, the state at the end. The worker sends `start_info()` with `built`
    and `end_info()` as `ended`."""

    nvml: Nvml
    energy: EnergyPhase = field(default_factory=EnergyPhase)
    throttle_mask: int | None = None
    others: dict[int, dict[str, Any]] = field(default_factory=dict)
    edits_throttled: int = 0

    def start_info(self) -> dict[str, Any]:
        return {"gpu_state_at_start": gpu_state(self.nvml)}

    def edit_done(self, window: EnergyWindow, activity: GpuActivity, case: str = "") -> None:
        self.energy.add(window, case)
        if activity.throttle_mask is not None:
            self.throttle_mask = (self.throttle_mask or 0) | activity.throttle_mask
            if SLOWDOWN_REASONS & set(throttle_names(activity.throttle_mask)):
                self.edits_throttled += 1
        for p in (activity.others or {}).values():
            held = self.others.get(p.pid)
            if held is None or (p.used_bytes or 0) > (held["used_bytes"] or 0):
                self.others[p.pid] = p.as_record()

    def end_info(self) -> dict[str, Any]:
        seen = None if self.throttle_mask is None else throttle_names(self.throttle_mask)
        return {
            "gpu_state_at_end": gpu_state(self.nvml),
            "throttle_reasons_seen": seen,
            "throttled": None if seen is None else bool(SLOWDOWN_REASONS & set(seen)),
            "edits_throttled": self.edits_throttled if seen is not None else None,
            "other_gpu_processes_seen": list(self.others.values()) if self.nvml.available else None,
            **self.energy.as_info(),
        }

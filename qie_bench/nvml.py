"""A thin handle on NVML for the GPU this process uses.

Every read returns None where NVML cannot answer (no GPU, no driver, a counter the GPU or
driver does not support, a container that hides per-process figures) and keeps the reason, so
that a record says why a figure is absent instead of storing 0.

The NVML module is injectable (`lib`): tests pass a fake with the same functions, raising its
own `NVMLError` for "not supported" the way pynvml does, so the sampling logic is tested on
machines without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on the GPU as NVML lists it. `used_bytes` is None where the driver does
    not say (common in containers); `name` is None where NVML cannot resolve the pid (a pid of
    another pid namespace)."""

    pid: int
    used_bytes: int | None
    name: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {"pid": self.pid, "used_bytes": self.used_bytes, "name": self.name}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """NVML for one GPU; `available` is False without one, and `unavailable_reason` says why."""

    def __init__(self, device_index: int = 0, enabled: bool = True, lib: Any = None) -> None:
        self.available = False
        self.handle: Any = None
        self.lib: Any = None
        self.unavailable_reason: str | None = "no GPU"
        # Whole-device memory before this process created its CUDA context, where that moment
        # was still ahead when this handle was opened: the baseline for measuring the context
        # where NVML has no per-process figure (device_limits.measure_context).
        self.used_before_context: int | None = None
        self._energy_unavailable: str | None = None
        if not enabled:
            return
        try:
            if lib is None:
                import pynvml as lib
            lib.nvmlInit()
            self.lib = lib
            # CUDA_VISIBLE_DEVICES renumbers devices for torch but not for NVML.
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible:
                first = visible.split(",")[device_index].strip()
                self.handle = (lib.nvmlDeviceGetHandleByUUID(first) if first.startswith("GPU-")
                               else lib.nvmlDeviceGetHandleByIndex(int(first)))
            else:
                self.handle = lib.nvmlDeviceGetHandleByIndex(device_index)
            self.available = True
            self.unavailable_reason = None
        except Exception as err:  # no driver, no GPU, or NVML missing: every NVML figure is absent
            self.available = False
            self.unavailable_reason = f"NVML: {_text(err) or type(err).__name__}"
            return
        if not _has_cuda_context(device_index):
            self.used_before_context = self.device_used()

    def _call(self, name: str, *args: Any) -> Any:
        return getattr(self.lib, name)(self.handle, *args)

    def device_used(self) -> int | None:
        if not self.available:
            return None
        return int(self._call("nvmlDeviceGetMemoryInfo").used)

    def device_total(self) -> int | None:
        if not self.available:
            return None
        return int(self._call("nvmlDeviceGetMemoryInfo").total)

    def compute_processes(self) -> list[GpuProcess] | None:
        """Every compute process on this GPU, or None where NVML cannot list them."""
        if not self.available:
            return None
        try:
            procs = self._call("nvmlDeviceGetComputeRunningProcesses")
        except self.lib.NVMLError:
            return None
        return [GpuProcess(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs]

    def process_name(self, pid: int) -> str | None:
        try:
            return _text(self.lib.nvmlSystemGetProcessName(pid))
        except Exception:  # NVMLError, or a pid NVML cannot see from inside a container
            return None

    def process_used(self, pid: int) -> int | None:
        """This process's GPU memory per NVML, or None where the driver does not say."""
        return own_used(self.compute_processes(), pid)

    def energy_mj(self) -> int | None:
        """The board's total energy counter (mJ since the driver loaded), or None with
        `energy_unavailable` set. Once unsupported, it is not asked again (reads sit beside the
        timed window: no failing call there on every edit)."""
        if not self.available:
            return None
        if self._energy_unavailable is not None:
            return None
        try:
            return int(self._call("nvmlDeviceGetTotalEnergyConsumption"))
        except self.lib.NVMLError as err:
            self._energy_unavailable = f"NVML: {_text(err) or 'error'}"
            return None

    @property
    def energy_unavailable(self) -> str | None:
        """Why `energy_mj` returns None, or None while it answers."""
        return self.unavailable_reason if not self.available else self._energy_unavailable

    def throttle_mask(self) -> int | None:
        """The current clock-event (throttle) reasons as NVML's bit mask, or None."""
        if not self.available:
            return None
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(self.lib, name, None)
            if fn is not None:
                try:
                    return int(fn(self.handle))
                except self.lib.NVMLError:
                    return None
        return None

    def uuid(self) -> str | None:
        """The GPU's NVML UUID ("GPU-…"): which physical card a record came from."""
        if not self.available:
            return None
        try:
            return _text(self._call("nvmlDeviceGetUUID"))
        except Exception:  # an NVML build without the call: the card stays unnamed
            return None

    def describe(self) -> dict[str, Any]:
        if not self.available:
            return {}
        return {
            "gpu_name": _text(self._call("nvmlDeviceGetName")),
            "gpu_memory_bytes": self.device_total(),
            "driver": _text(self.lib.nvmlSystemGetDriverVersion()),
        }


def own_used(procs: list[GpuProcess] | None, pid: int) -> int | None:
    """`pid`'s memory in a process list, or None where the list or the figure is absent."""
    for p in procs or ():
        if p.pid == pid:
            return p.used_bytes
    return None


def _has_cuda_context(device_index: int) -> bool:
    """Does this process already hold a CUDA context on the device? (True where it cannot
    tell: a baseline taken after the context would be wrong, a missing one only refused.)"""
    import torch

    if not torch.cuda.is_initialized():
        return False
    probe = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    if probe is None:
        return True
    try:
        return bool(probe(device_index))
    except Exception:
        return True

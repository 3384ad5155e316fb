"""A fake pynvml for testing the NVML code paths on machines without a GPU.

It has the functions qie-bench calls, with the real module's signatures, constants and error
class: a function named in `unsupported` raises `pynvml.NVMLError(NVML_ERROR_NOT_SUPPORTED)`,
exactly what real NVML raises for a counter a GPU or driver lacks. Its state is plain attributes
a test sets (and may change between calls); `calls` counts the calls of each function.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pynvml

MiB = 2**20


class FakeNvml:
    NVMLError = pynvml.NVMLError
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self) -> None:
        self.total = 80 * 2**30
        self.used = 2 * 2**30
        self.processes: list[tuple[int, int | None]] = []  # (pid, usedGpuMemory or None)
        self.names: dict[int, str] = {}
        self.energy: int | Callable[[], int] = 1_000_000  # mJ, or a function giving the next read
        self.sm_clock, self.mem_clock = 1980, 3201
        self.power_limit_mw = 700_000
        self.temperature = 41
        self.throttle = 0x1  # idle
        self.unsupported: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.log: list[str] | None = None  # where given, energy reads are appended in order

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        self._enter("nvmlDeviceGetHandleByUUID")
        return ("handle", uuid)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._enter("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=self.total, used=self.used, free=self.total - self.used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._enter("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes]

    def nvmlSystemGetProcessName(self, pid: int) -> bytes:
        self._enter("nvmlSystemGetProcessName")
        if pid not in self.names:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self.names[pid].encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetTotalEnergyConsumption")
        value = self.energy() if callable(self.energy) else self.energy
        if self.log is not None:
            self.log.append("energy")
        return value

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int:
        self._enter("nvmlDeviceGetClockInfo")
        return {pynvml.NVML_CLOCK_SM: self.sm_clock, pynvml.NVML_CLOCK_MEM: self.mem_clock}[clock]

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit")
        return self.power_limit_mw

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature")
        return self.temperature

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        self._enter("nvmlDeviceGetCurrentClocksEventReasons")
        return self.throttle

    def nvmlDeviceGetName(self, handle: Any) -> bytes:
        self._enter("nvmlDeviceGetName")
        return b"NVIDIA H200"

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "570.00"

"""Memory measurement: every view a user needs, each recorded separately.

- NVML device used (the whole GPU, as nvidia-smi shows it: includes the CUDA context and the
  caching allocator's reserve, and any other process on the GPU);
- NVML per-process used (this process only, where the driver reports it; inside some
  containers it does not, and the value is then absent, not 0);
- torch allocator peaks, allocated and reserved (OOM is driven by reserved, not allocated);
- on a machine without a GPU, the process's resident set size (RSS) peak instead.

NVML figures are sampled by a background thread every `period_s`; short spikes between samples
can be missed, which is why the allocator peaks (exact) are kept beside them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import psutil
import torch

from .gpu_state import GpuActivity
from ..nvml import Nvml, own_used

__all__ = ["MemoryPeaks", "MemorySampler", "Nvml"]


@dataclass
class MemoryPeaks:
    peak_vram_bytes: int | None = None
    peak_vram_process_bytes: int | None = None
    torch_peak_allocated_bytes: int | None = None
    torch_peak_reserved_bytes: int | None = None
    rss_peak_bytes: int | None = None

    def as_record(self) -> dict[str, int | None]:
        return dict(self.__dict__)


class MemorySampler:
    """Context manager: samples NVML and RSS in a thread, resets and reads torch's peaks."""

    def __init__(self, nvml: Nvml, device: torch.device, period_s: float) -> None:
        self.nvml, self.device, self.period_s = nvml, device, period_s
        self.peaks = MemoryPeaks()
        # Throttling and other processes seen while measuring: read in the same samples.
        self.activity = GpuActivity(unavailable=nvml.unavailable_reason)
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._pid = os.getpid()
        self._process_supported = True

    def _sample(self) -> None:
        p = self.peaks
        used = self.nvml.device_used()
        if used is not None:
            p.peak_vram_bytes = max(p.peak_vram_bytes or 0, used)
            procs = self.nvml.compute_processes()
            self.activity.observe(self.nvml, procs, self._pid)
            if self._process_supported:
                mine = own_used(procs, self._pid)
                if mine is None:
                    self._process_supported = False  # absent for the whole window, not partly
                    p.peak_vram_process_bytes = None
                else:
                    p.peak_vram_process_bytes = max(p.peak_vram_process_bytes or 0, mine)
        rss = self._proc.memory_info().rss
        p.rss_peak_bytes = max(p.rss_peak_bytes or 0, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self) -> MemorySampler:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="qie-bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            try:
                torch.cuda.synchronize(self.device)
            except Exception:  # the device may be unusable after an error; keep what we have
                pass
        self._stop.set()
        self._thread.join()
        self._sample()
        if self.device.type == "cuda":
            self.peaks.torch_peak_allocated_bytes = int(torch.cuda.max_memory_allocated(self.device))
            self.peaks.torch_peak_reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
        else:
            # Absent, not zero: a CPU run has no VRAM.
            self.peaks.peak_vram_bytes = None
            self.peaks.peak_vram_process_bytes = None

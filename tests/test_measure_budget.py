"""The CUDA context under a memory budget: measured by NVML's per-process figure, or by the
device's used memory before and after the context where that figure is absent (containers),
or the budget is refused; never a context of 0 for unknown. Fake NVML, spied allocator."""

from __future__ import annotations

import os

import pytest
import torch
from fake_nvml import FakeNvml, MiB

from qie_bench.runner import device_limits
from qie_bench.runner.device_limits import (
    ContextUnmeasurable,
    apply_memory_budget,
    measure_context,
)
from qie_bench.nvml import Nvml

CUDA = torch.device("cuda", 0)
GiB = 2**30


@pytest.fixture
def allocator(monkeypatch: pytest.MonkeyPatch) -> dict:
    """torch.cuda as the budget code sees it: 100 MiB reserved on an 80 GiB card."""
    calls: dict = {"fraction": []}
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 100 * MiB)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: type("P", (), {"total_memory": 80 * GiB})())
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls["fraction"].append(f))
    monkeypatch.setattr(device_limits, "start_cuda", lambda d: None)
    return calls


def test_context_from_the_per_process_figure(allocator: dict) -> None:
    lib = FakeNvml()
    lib.processes = [(os.getpid(), 600 * MiB)]
    assert measure_context(CUDA, Nvml(0, lib=lib)) == (500 * MiB, "nvml-process")


def test_context_from_device_memory_before_and_after_cuda(allocator: dict) -> None:
    lib = FakeNvml()
    lib.used = 3 * GiB  # other processes and the driver's reserve, before this process's context
    nvml = Nvml(0, lib=lib)  # opened before CUDA starts (this CPU build of torch never starts it)
    assert nvml.used_before_context == 3 * GiB
    lib.processes = [(987654, None)]  # no per-process figure, as inside many containers
    lib.used = 3 * GiB + 620 * MiB  # context 520 MiB + 100 MiB reserved
    assert measure_context(CUDA, nvml) == (520 * MiB, "nvml-device-delta")
    info = apply_memory_budget(CUDA, 8 * GiB, nvml)
    assert info["context_at_cap_bytes"] == 520 * MiB
    assert info["context_measured_by"] == "nvml-device-delta"
    cap = 8 * GiB - 520 * MiB - device_limits.LAZY_KERNEL_ALLOWANCE_BYTES
    assert info["allocator_cap_bytes"] == cap
    assert allocator["fraction"] == [cap / (80 * GiB)]


def test_budget_refused_when_the_context_cannot_be_measured(allocator: dict) -> None:
    lib = FakeNvml()
    nvml = Nvml(0, lib=lib)
    nvml.used_before_context = None  # the context existed before the handle was opened
    lib.processes = []
    with pytest.raises(ContextUnmeasurable) as err:
        apply_memory_budget(CUDA, 8 * GiB, nvml)
    assert "\n" not in str(err.value) and str(err.value).startswith("measurement.memory_budget: cannot measure")
    assert allocator["fraction"] == []  # nothing capped with a made-up context
    with pytest.raises(ContextUnmeasurable, match="NVML is unavailable"):
        apply_memory_budget(CUDA, 8 * GiB, Nvml(enabled=False))


def test_no_baseline_once_a_context_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """A baseline read after the context was created would hide it: then there is none."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch._C, "_cuda_hasPrimaryContext", lambda i: True, raising=False)
    assert Nvml(0, lib=FakeNvml()).used_before_context is None
    monkeypatch.setattr(torch._C, "_cuda_hasPrimaryContext", lambda i: False, raising=False)
    assert Nvml(0, lib=FakeNvml()).used_before_context == 2 * GiB

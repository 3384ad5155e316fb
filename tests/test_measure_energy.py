"""Energy per edit (NVML's total-energy counter read beside the timer), and the order of what
`run_edit` does around its timed window: release the cache, reset the peaks, read the counter,
start the timer; stop the timer, read the counter. Checked with a fake NVML and a spy on torch's
CUDA calls, so it runs where there is no GPU."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from fake_nvml import FakeNvml
from PIL import Image

from qie_bench.runner import edit as edit_module
from qie_bench.runner.energy import EnergyPhase, EnergyWindow
from qie_bench.nvml import Nvml
from qie_bench.suite import GenerationConfig


def test_energy_and_mean_power_of_one_edit() -> None:
    # 1 000 000 mJ -> 1 250 500 mJ over 0.5 s: 250.5 J, 501 W.
    w = EnergyWindow(1_000_000, 1_250_500, 10.0, 10.5)
    assert w.as_record() == {"energy_j": 250.5, "mean_power_w": 501.0, "energy_unavailable": None}


def test_energy_is_null_with_a_reason_never_zero() -> None:
    missing = EnergyWindow(None, None, 0.0, 1.0, "no GPU").as_record()
    assert missing == {"energy_j": None, "mean_power_w": None, "energy_unavailable": "no GPU"}
    # A counter that did not move during a 20 ms edit says nothing about the edit's energy.
    still = EnergyWindow(5000, 5000, 0.0, 0.02).as_record()
    assert still["energy_j"] is None and "did not advance" in still["energy_unavailable"]
    back = EnergyWindow(5000, 4000, 0.0, 0.02).as_record()
    assert back["energy_j"] is None and "backwards" in back["energy_unavailable"]


def test_nvml_energy_counter_unsupported_or_absent() -> None:
    lib = FakeNvml()
    lib.unsupported = {"nvmlDeviceGetTotalEnergyConsumption"}
    nvml = Nvml(0, lib=lib)
    assert nvml.available
    assert nvml.energy_mj() is None and nvml.energy_mj() is None
    assert nvml.energy_unavailable == "NVML: Not Supported"
    # asked once: a failing call is not repeated beside every timed window
    assert lib.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1
    cpu = Nvml(enabled=False)
    assert cpu.energy_mj() is None and cpu.energy_unavailable == "no GPU"
    broken = FakeNvml()
    broken.unsupported = {"nvmlInit"}
    no_driver = Nvml(0, lib=broken)
    assert not no_driver.available and no_driver.energy_unavailable == "NVML: Not Supported"


def test_phase_energy_beside_the_sum_of_edits() -> None:
    phase = EnergyPhase()
    # three edits; 1.0 s of other work (90 J at 90 W) between the 2nd and 3rd
    phase.add(EnergyWindow(10_000, 310_000, 0.0, 1.0))  # 300 J
    phase.add(EnergyWindow(310_000, 610_000, 1.0, 2.0))  # 300 J
    phase.add(EnergyWindow(700_000, 700_000, 3.0, 3.01))  # counter did not move: 0 raw, null per edit
    info = phase.as_info()
    assert info["timed_edits"] == 3
    assert info["timed_edits_energy_j"] == pytest.approx(600.0)
    assert info["timed_phase_energy_j"] == pytest.approx(690.0)
    assert info["between_edits_energy_j"] == pytest.approx(90.0)
    assert info["timed_phase_s"] == pytest.approx(3.01)
    assert info["timed_edits_s"] == pytest.approx(2.01)
    assert info["energy_unavailable"] is None
    none = EnergyPhase()
    none.add(EnergyWindow(None, None, 0.0, 1.0, "no GPU"))
    assert none.as_info()["timed_phase_energy_j"] is None and none.as_info()["energy_unavailable"] == "no GPU"
    assert EnergyPhase().as_info()["energy_unavailable"] == "no timed edit"


def test_timed_phases_are_per_case_and_leave_warm_ups_out() -> None:
    # Case a: two repeats back to back (10 J of hashing between them). Then 5 s of case b's
    # warm-up (1500 J) outside every timed phase, then case b's one repeat.
    phase = EnergyPhase()
    phase.add(EnergyWindow(0, 300_000, 0.0, 1.0), "a")
    phase.add(EnergyWindow(310_000, 610_000, 1.1, 2.1), "a")
    phase.add(EnergyWindow(2_110_000, 2_410_000, 7.1, 8.1), "b")
    info = phase.as_info()
    assert info["timed_phases"] == 2
    assert info["timed_edits_energy_j"] == pytest.approx(900.0)
    assert info["timed_phase_energy_j"] == pytest.approx(910.0)  # (610 - 0) + (2410 - 2110)
    assert info["between_edits_energy_j"] == pytest.approx(10.0)
    assert info["timed_span_energy_j"] == pytest.approx(2410.0)
    assert info["outside_timed_phases_energy_j"] == pytest.approx(1500.0)
    assert info["timed_phase_s"] == pytest.approx(3.1) and info["timed_span_s"] == pytest.approx(8.1)
    # a case that comes back later (a resumed repeat) is a phase of its own
    again = EnergyPhase()
    for g in ("a", "b", "a"):
        again.add(EnergyWindow(0, 0, 0.0, 0.0), g)
    assert again.as_info()["timed_phases"] == 3


class _Module(torch.nn.Module):
    def forward(self, x: Any) -> Any:
        return x


class _SpyPipe:
    """A pipeline that only logs its call: what happens around it is under test."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.transformer, self.text_encoder = _Module(), _Module()
        self.vae = SimpleNamespace(encoder=_Module(), decoder=_Module())

    def __call__(self, **kwargs: Any) -> Any:
        self.log.append("pipe")
        return SimpleNamespace(images=[np.full((16, 16, 3), 0.5, dtype=np.float32)])


def _loaded(pipe: _SpyPipe, device: torch.device) -> Any:
    return SimpleNamespace(pipe=pipe, device=device, call_context=contextlib.nullcontext)


def test_timed_window_order_with_cache_release_and_energy(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CUDA device: the peaks are reset before the counter is read and the timer started
    (the cache is released per case by the worker, not here); nothing but the pipeline and a
    synchronize sits between the two timer reads; the counter is read right after the second."""
    log: list[str] = []
    clock = iter([100.0, 102.5])  # t0, t1: a 2.5 s edit

    def perf_counter() -> float:
        log.append("timer")
        return next(clock)

    spy = {name: (lambda *a, _n=name, **k: log.append(_n))
           for name in ("synchronize", "empty_cache", "reset_peak_memory_stats")}
    for name, fn in spy.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: 4 * 2**20)
    monkeypatch.setattr(edit_module, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(edit_module, "gc", SimpleNamespace(collect=lambda: log.append("gc.collect")))
    lib = FakeNvml()
    reads = iter([7_000_000, 8_250_000])
    lib.energy = lambda: next(reads)
    lib.log = log
    nvml = Nvml(0, lib=lib)
    result = edit_module.run_edit(_loaded(_SpyPipe(log), torch.device("cuda", 0)), [Image.new("RGB", (16, 16))],
                                  "x", GenerationConfig(steps=1, width=16, height=16), 0, nvml, nvml_period_s=5.0)
    assert log == ["synchronize", "reset_peak_memory_stats",  # the sampler starts
                   "synchronize", "energy", "timer", "pipe", "synchronize", "timer", "energy",
                   "synchronize"]  # the sampler stops
    assert result.latency_s == 2.5
    assert result.energy.as_record() == {"energy_j": 1250.0, "mean_power_w": 500.0, "energy_unavailable": None}
    assert result.memory.torch_peak_reserved_bytes == 4 * 2**20


def test_cpu_edit_records_energy_as_absent_with_the_reason() -> None:
    log: list[str] = []
    result = edit_module.run_edit(_loaded(_SpyPipe(log), torch.device("cpu")), [Image.new("RGB", (16, 16))], "x",
                                  GenerationConfig(steps=1, width=16, height=16), 0, Nvml(enabled=False), 0.01)
    assert log == ["pipe"]
    assert result.energy.as_record() == {"energy_j": None, "mean_power_w": None, "energy_unavailable": "no GPU"}
    assert result.activity.as_record() == {"throttle_reasons_seen": None, "other_gpu_processes": None,
                                           "own_pid_listed": None, "gpu_activity_unavailable": "no GPU"}

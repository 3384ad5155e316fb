"""A clean GPU, or records that say it was not: other processes, clocks, power limit,
temperature and throttle reasons, read through a fake NVML (the real one on the GPU tests)."""

from __future__ import annotations

import os

import pytest
import torch
from fake_nvml import FakeNvml, MiB

from qie_bench.errors import UserInputError
from qie_bench.runner.energy import EnergyWindow
from qie_bench.runner.gpu_state import (
    GpuActivity,
    VariantMonitor,
    gpu_state,
    other_gpu_processes,
    require_idle_gpu,
    throttle_names,
)
from qie_bench.runner.memory import MemorySampler
from qie_bench.nvml import GpuProcess, Nvml

ME = os.getpid()


def test_throttle_names_leave_out_idle_and_keep_unknown_bits() -> None:
    # 0x1 idle, 0x4 software power cap, 0x40 hardware thermal, 0x2000 not a known reason
    assert throttle_names(0x1 | 0x4 | 0x40 | 0x2000) == ["sw_power_cap", "hw_thermal_slowdown", "0x2000"]
    assert throttle_names(0x1) == []


def test_state_snapshot_reads_every_figure_with_units() -> None:
    lib = FakeNvml()
    lib.processes = [(ME, 900 * MiB), (4242, 1024 * MiB)]
    lib.names = {4242: "python3"}
    lib.throttle = 0x1 | 0x4
    state = gpu_state(Nvml(0, lib=lib))
    assert state == {
        "sm_clock_mhz": 1980, "memory_clock_mhz": 3201, "power_limit_w": 700.0, "temperature_c": 41,
        "throttle_reasons": ["sw_power_cap"],
        "other_processes": [{"pid": 4242, "used_bytes": 1024 * MiB, "name": "python3"}],
        "own_pid_listed": True, "unavailable": None,
    }


def test_state_snapshot_says_what_nvml_does_not_support() -> None:
    lib = FakeNvml()
    lib.unsupported = {"nvmlDeviceGetTemperature", "nvmlDeviceGetCurrentClocksEventReasons",
                       "nvmlDeviceGetComputeRunningProcesses"}
    state = gpu_state(Nvml(0, lib=lib))
    assert state["temperature_c"] is None and state["throttle_reasons"] is None and state["other_processes"] is None
    assert state["sm_clock_mhz"] == 1980
    assert state["unavailable"]["temperature_c"] == "NVML: Not Supported"
    assert set(state["unavailable"]) == {"temperature_c", "throttle_reasons", "other_processes"}
    cpu = gpu_state(Nvml(enabled=False))
    assert cpu["power_limit_w"] is None and cpu["unavailable"] == {"all": "no GPU"}


def test_own_pid_not_listed_is_said() -> None:
    lib = FakeNvml()
    lib.processes = [(987654, None)]  # this process under its host pid, as in a container
    state = gpu_state(Nvml(0, lib=lib))
    assert state["own_pid_listed"] is False
    assert state["other_processes"] == [{"pid": 987654, "used_bytes": None, "name": None}]


def test_other_gpu_processes_and_require_idle_gpu() -> None:
    lib = FakeNvml()
    lib.processes = [(ME, 10 * MiB), (4242, 2048 * MiB), (5151, None)]
    lib.names = {4242: "trainer"}
    found = other_gpu_processes(0, lib=lib)
    assert [(p.pid, p.used_bytes, p.name) for p in found] == [(4242, 2048 * MiB, "trainer"), (5151, None, None)]
    with pytest.raises(UserInputError) as err:
        require_idle_gpu(0, lib=lib)
    assert str(err.value) == ("--require-idle-gpu: GPU 0 is in use by pid 4242 (trainer) 2048 MiB, pid 5151 "
                              "(wait for it to finish, or run without --require-idle-gpu)")
    assert err.value.exit_code == 2
    lib.processes = [(ME, 10 * MiB)]
    require_idle_gpu(0, lib=lib)  # only this process: idle
    lib.unsupported = {"nvmlDeviceGetComputeRunningProcesses"}
    with pytest.raises(UserInputError, match="cannot list the GPU's processes"):
        require_idle_gpu(0, lib=lib)


def test_sampler_sees_other_processes_and_throttling_while_measuring() -> None:
    """What appears during the window is recorded (each process with the most memory it held),
    beside this process's own NVML peak."""
    lib = FakeNvml()
    lib.processes = [(ME, 500 * MiB)]
    nvml = Nvml(0, lib=lib)
    with MemorySampler(nvml, torch.device("cpu"), period_s=5.0) as s:  # samples at entry and exit
        lib.processes = [(ME, 700 * MiB), (31337, 3000 * MiB)]
        lib.throttle = 0x20  # software thermal slowdown
        s._sample()
        lib.processes = [(ME, 600 * MiB), (31337, 1000 * MiB)]
        lib.throttle = 0x1
    record = s.activity.as_record()
    assert record == {"throttle_reasons_seen": ["sw_thermal_slowdown"],
                      "other_gpu_processes": [{"pid": 31337, "used_bytes": 3000 * MiB, "name": None}],
                      "own_pid_listed": True, "gpu_activity_unavailable": None}
    # the process figure was read from the same sample (a CPU device leaves VRAM fields absent)
    assert lib.calls["nvmlDeviceGetComputeRunningProcesses"] == 3


def test_sampler_process_figure_absent_is_none_not_zero() -> None:
    lib = FakeNvml()
    lib.processes = [(ME, None)]
    nvml = Nvml(0, lib=lib)
    sampler = MemorySampler(nvml, torch.device("cpu"), period_s=5.0)
    sampler._sample()
    assert sampler.peaks.peak_vram_bytes == 2 * 2**30
    assert sampler.peaks.peak_vram_process_bytes is None


def test_variant_monitor_start_end_throttling_and_energy() -> None:
    lib = FakeNvml()
    lib.temperature = 38
    monitor = VariantMonitor(Nvml(0, lib=lib))
    start = monitor.start_info()["gpu_state_at_start"]
    assert start["temperature_c"] == 38
    calm = GpuActivity(throttle_mask=0x1, others={})
    hot = GpuActivity(throttle_mask=0x40, others={})
    busy = GpuActivity(throttle_mask=0x0, others={77: GpuProcess(77, 5 * MiB, "x")})
    monitor.edit_done(EnergyWindow(0, 200_000, 0.0, 1.0), calm)
    monitor.edit_done(EnergyWindow(200_000, 450_000, 1.0, 2.0), hot)
    monitor.edit_done(EnergyWindow(460_000, 660_000, 2.1, 3.1), busy)
    lib.temperature = 71
    end = monitor.end_info()
    assert end["gpu_state_at_end"]["temperature_c"] == 71
    assert end["throttle_reasons_seen"] == ["hw_thermal_slowdown"]
    assert end["throttled"] is True and end["edits_throttled"] == 1
    assert end["other_gpu_processes_seen"] == [{"pid": 77, "used_bytes": 5 * MiB, "name": "x"}]
    assert end["timed_edits_energy_j"] == pytest.approx(650.0)
    assert end["timed_phase_energy_j"] == pytest.approx(660.0)
    cpu = VariantMonitor(Nvml(enabled=False)).end_info()
    assert cpu["throttled"] is None and cpu["other_gpu_processes_seen"] is None
    assert cpu["timed_phase_energy_j"] is None

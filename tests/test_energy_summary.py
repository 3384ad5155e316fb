"""Energy, cost and the GPU's state in the summary, the gate and the report: J/edit, W, edits per
kWh and cost per 1,000 edits by hand; a different power limit is not comparable; a throttled
variant is flagged; --require-idle-gpu refuses where it cannot tell."""

from __future__ import annotations

from pathlib import Path

import pytest

from qie_bench.results import build_summary, validate_records

ENV = {"qie_bench": "0.1.0", "project": {"commit": None, "dirty": None}, "python": "3.11", "cpu": "x",
       "torch_cuda": "13.0", "gpu_name": "NVIDIA H200", "gpu_memory_bytes": 150_000_000_000, "driver": "580",
       "packages": {}}


def _summary(prices: dict | None = None, power_limit_w: float = 700.0, throttled: bool = False) -> dict:
    recs = []
    for i, (lat, energy) in enumerate(((2.0, 1000.0), (3.0, 1400.0), (4.0, 1800.0))):
        recs.append({"key": f"bf16/c{i}/0", "variant": "bf16", "case_id": f"c{i}", "repeat": 0, "status": "OK",
                     "latency_s": lat, "energy_j": energy, "mean_power_w": energy / lat})
    run = {"run_id": "r1", "created_at": "t", "model": {"source": "random-full"}, "environment": ENV,
           "suite": {"name": "gpu", "fingerprint": "sha256:1"}, "case_set": {"name": "c", "fingerprint": "f", "cases": 3},
           "plan": {"items": [r["key"] for r in recs]},
           "suite_config": {"model": {"device": "cuda"}, "cost": prices or {}}}
    builds = {"bf16": {"device": "cuda:0", "gpu_state_at_start": {"power_limit_w": power_limit_w, "other_processes": []}}}
    ended = {"bf16": [{"throttled": throttled, "throttle_reasons_seen": ["sw_power_cap"] if throttled else [],
                       "edits_throttled": 2 if throttled else 0, "other_gpu_processes_seen": [],
                       "timed_edits_energy_j": 4200.0, "timed_phase_energy_j": 4350.0}]}
    return build_summary(run, validate_records(recs, "t"), builds, ended=ended)


def test_energy_per_edit_and_cost_by_hand() -> None:
    s = _summary({"usd_per_kwh": 0.20, "usd_per_gpu_hour": 3.0})
    v = s["variants"]["bf16"]
    assert v["energy_j"] == pytest.approx(1400.0)  # mean of 1000, 1400, 1800 J
    assert v["edits_per_kwh"] == pytest.approx(3.6e6 / 1400.0)
    # 1,000 edits: 1.4 MJ = 0.3889 kWh at $0.20 = $0.0778 of energy, plus 3000 s = 0.8333 GPU-h at $3 = $2.50
    assert v["cost_per_1000_edits_usd"] == pytest.approx(1000 * (1400 / 3.6e6 * 0.20 + 3.0 / 3600 * 3.0))
    assert v["gpu"]["timed_edits_energy_j"] == 4200.0 and v["gpu"]["timed_phase_energy_j"] == 4350.0
    assert s["fingerprint"]["environment"]["power_limit_w"] == 700.0


def test_no_prices_no_cost_and_no_energy_counter_no_figures() -> None:
    v = _summary()["variants"]["bf16"]
    assert v["cost_per_1000_edits_usd"] is None, "no default prices"
    cpu = {"key": "fp32/c0/0", "variant": "fp32", "case_id": "c0", "repeat": 0, "status": "OK", "latency_s": 1.0,
           "energy_j": None, "energy_unavailable": "no GPU"}
    run = {"run_id": "r2", "created_at": "t", "model": {"source": "tiny"}, "environment": {**ENV, "gpu_name": None},
           "suite": {"name": "s", "fingerprint": "x"}, "case_set": {"name": "c", "fingerprint": "f", "cases": 1},
           "plan": {"items": ["fp32/c0/0"]}, "suite_config": {"model": {"device": "cpu"}, "cost": {"usd_per_kwh": 0.2}}}
    s = build_summary(run, validate_records([cpu], "t"), {"fp32": {"device": "cpu"}})
    assert s["variants"]["fp32"]["energy_j"] is None and s["variants"]["fp32"]["edits_per_kwh"] is None
    assert s["variants"]["fp32"]["cost_per_1000_edits_usd"] is None, "energy price without an energy figure"


def test_a_different_power_limit_is_not_comparable() -> None:
    from qie_bench.gate.compare import comparability_problems
    from qie_bench.gate.rundata import RunData, validate_records as vr

    recs = vr([{"key": "bf16/c0/0", "variant": "bf16", "case_id": "c0", "repeat": 0, "status": "OK", "latency_s": 2.0}], "x")

    def data(summary: dict) -> RunData:
        return RunData(label="x", run_id=summary["run_id"], fingerprint=summary["fingerprint"], weights=summary["weights"],
                       gates={}, baseline_variant=None, variants=list(summary["variants"]),
                       variant_summaries=summary["variants"], records=recs, planned_keys=["bf16/c0/0"], summary_complete=True)

    same = comparability_problems(data(_summary()), data(_summary()))
    assert not same
    problems = comparability_problems(data(_summary(power_limit_w=700.0)), data(_summary(power_limit_w=500.0)))
    assert [p[0] for p in problems] == ["GPU power limit"] and problems[0][1:3] == ("700.0 W", "500.0 W")


def test_the_report_warns_about_a_throttled_variant(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from qie_bench.report.tables import speed_memory_table

    s = _summary({"usd_per_kwh": 0.2}, throttled=True)
    assert s["variants"]["bf16"]["gpu"]["throttled"] is True
    col = SimpleNamespace(summary=s["variants"]["bf16"], run=SimpleNamespace(label="H200"), variant="bf16",
                          is_baseline=True, status_line="3/3 OK", value=lambda k: s["variants"]["bf16"].get(k))
    data = SimpleNamespace(columns=[col], baseline_of=lambda c: c)
    table = speed_memory_table(data)
    assert "energy per edit" in table.header and "cost per 1,000 edits" in table.header
    assert "WARNING" in table.caption and "H200 bf16" in table.caption
    quiet = _summary(throttled=False)  # and without prices the cost column is not shown at all
    col.summary, col.value = quiet["variants"]["bf16"], (lambda k: quiet["variants"]["bf16"].get(k))
    table = speed_memory_table(data)
    assert "WARNING" not in table.caption and "cost per 1,000 edits" not in table.header


def test_require_idle_gpu_refuses_when_it_cannot_tell(tmp_path: Path, write_suite) -> None:
    pytest.importorskip("pynvml")
    from qie_bench.cli import main
    from qie_bench.nvml import Nvml

    if Nvml().available:
        pytest.skip("a GPU is visible here: the refusal path needs a machine without NVML")
    out = tmp_path / "out"
    assert main(["run", str(write_suite()), "--out", str(out), "--require-idle-gpu", "--no-progress"]) == 2
    assert not out.exists(), "nothing written"

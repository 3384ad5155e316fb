"""The Python API and the one model of a run: a suite built in code runs, results are typed and
tabular, thresholds are policy (not part of the fingerprint), the first screen fits 100 columns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import qie_bench
import qie_bench.errors
from qie_bench.results import MEASURES, Family, RunDir, Unit, build_summary, measure, validate_records
from qie_bench.suite import CasesConfig, GenerationConfig, MeasurementConfig, ModelConfig, Suite, VariantEntry, load_suite

from conftest import CASES, TINY_SUITE, VARIANT  # tests/ is on sys.path (rootdir conftest)


def _code_suite(gates: dict | None = None) -> Suite:
    from qie_bench.metrics.config import MetricsConfig

    return Suite(name="in-code", model=ModelConfig(source="tiny", device="cpu"),
                 cases=CasesConfig(path=str(CASES), select=("txt-price-mug",)),
                 generation=GenerationConfig(steps=2, width=64, height=64),
                 measurement=MeasurementConfig(warmup_runs=0, repeats=2, case_timeout_s=120),
                 metrics=MetricsConfig(names=("psnr", "ssim"), weights="random"),
                 variants=(VariantEntry(name="fp32", kind="dtype", dtype="fp32"),), gates=gates or {})


@pytest.mark.slow
def test_a_suite_built_in_code_runs_and_gives_one_row_per_record(tmp_path: Path) -> None:
    result = qie_bench.run(_code_suite(), out=tmp_path / "run")
    df = result.to_pandas()
    assert len(df) == 2 == len(result.records)
    assert list(df["key"]) == ["fp32/txt-price-mug/0", "fp32/txt-price-mug/1"]
    assert set(df["status"]) == {"OK"}
    assert (df["latency_s"] > 0).all()
    # metrics are scored once per case (repeat 0): a column per metric, empty for repeat 1
    assert df.loc[0, "psnr"] == pytest.approx(result.records[0].metric("psnr"))
    assert df["psnr"].isna().tolist() == [False, True]
    # the summary is the typed one read back from summary.json, equal to the records' aggregate
    v = result.summary.variants["fp32"]
    assert v.status_counts["OK"] == 2 and v.complete
    assert v.latency_p50_s == pytest.approx(float(df["latency_s"].median()))
    # run.json keeps the validated suite: a later reader needs no file
    rd = RunDir.load(tmp_path / "run")
    assert Suite.from_config(rd.suite_config).fingerprint() == _code_suite().fingerprint()


def test_a_bad_variant_in_a_code_suite_is_a_one_line_error(tmp_path: Path) -> None:
    bad = _code_suite().model_copy(update={"variants": (VariantEntry(name="x", kind="dtyp", dtype="fp32"),)})
    with pytest.raises(qie_bench.errors.UserInputError, match="unknown variant kind 'dtyp'.*did you mean 'dtype'"):
        qie_bench.run(bad, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_thresholds_are_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    text = TINY_SUITE.format(name="t", baseline="fp32", cases=CASES.as_posix(), select='["txt-price-mug"]', steps=2,
                             repeats=1, timeout=60, metrics='names = ["psnr"]\nweights = "random"')
    text += VARIANT.format(name="fp32", dtype="fp32")
    a, b, c = tmp_path / "a.toml", tmp_path / "b.toml", tmp_path / "c.toml"
    a.write_text(text + '\n[gates]\nlatency_p95_s = "+10%"\n')
    b.write_text(text + '\n[gates]\nlatency_p95_s = "+15%"\npsnr = "-1.0"\n')
    c.write_text(text.replace("steps = 2", "steps = 3") + '\n[gates]\nlatency_p95_s = "+10%"\n')
    assert load_suite(a).fingerprint() == load_suite(b).fingerprint()
    assert load_suite(a).fingerprint() != load_suite(c).fingerprint(), "generation still counts"


@pytest.mark.slow
def test_editing_a_threshold_keeps_the_old_baseline_comparable(tmp_path: Path) -> None:
    from qie_bench.cli import main

    text = TINY_SUITE.format(name="t", baseline="fp32", cases=CASES.as_posix(), select='["txt-price-mug"]', steps=2,
                             repeats=2, timeout=60, metrics='names = ["psnr"]\nweights = "random"')
    text += VARIANT.format(name="fp32", dtype="fp32")
    suite = tmp_path / "s.toml"
    suite.write_text(text + '\n[gates]\noom_rate = "0"\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["baseline", "promote", str(tmp_path / "a"), "--to", str(tmp_path / "base.json")]) == 0
    suite.write_text(text + '\n[gates]\noom_rate = "0"\npsnr = "-1.0"\n')  # a team tightens its policy
    assert main(["run", str(suite), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    result = qie_bench.gate(tmp_path / "b", tmp_path / "base.json")
    assert result.comparable and result.exit_code in (0, 1)
    assert {c.name for c in result.checks} >= {"oom_rate", "psnr"}, "the new threshold is applied"


def test_measures_are_declared_once_with_units_and_directions() -> None:
    from qie_bench.gate.compare import fmt_change, fmt_value
    from qie_bench.gate.thresholds import LATENCY_KEYS, MEMORY_KEYS, parse_threshold

    assert len({m.key for m in MEASURES}) == len(MEASURES)
    assert LATENCY_KEYS == {m.key: (m.field, m.statistic) for m in MEASURES if m.family is Family.LATENCY and m.gateable}
    assert "energy_j" in LATENCY_KEYS, "energy is gated like latency"
    assert MEMORY_KEYS == {m.key for m in MEASURES if m.family is Family.MEMORY}
    assert fmt_value("peak_vram_bytes", 3 * 2**30) == "3.00 GiB"
    assert fmt_value("oom_rate", 0.25) == "25.0%"
    assert fmt_value("latency_p95_s", 1.23456) == "1.235 s"
    thr = parse_threshold("peak_vram_bytes", "+512MiB", "gates")
    assert thr.limit == 512 * 2**20, "the unit comes from the measure, not the key's suffix"
    assert fmt_change("peak_vram_bytes", 0.1, 2**20, thr) == "+1.0 MiB (+10.0%)"
    assert measure("params").unit is Unit.COUNT and measure("ssim") is None


def _summary_with_failures() -> dict:
    recs = []
    for v, status in (("fp32", "OK"), ("a-long-variant-name+nf4", "OOM")):
        for i in range(3):
            r = {"key": f"{v}/c{i}/0", "variant": v, "case_id": f"c{i}", "repeat": 0, "status": status}
            if status == "OK":
                r.update(latency_s=1.5 + i, rss_peak_bytes=2**30, metrics={"ssim_vs_baseline": 0.98, "psnr_vs_baseline": "inf"})
            recs.append(r)
    run = {"run_id": "r1", "created_at": "t", "model": {"source": "tiny"}, "environment": {"qie_bench": "0.1.0", "project": {"commit": None, "dirty": None},
                                                                 "python": "3.11", "cpu": "x", "torch_cuda": None, "gpu_name": None,
                                                                 "gpu_memory_bytes": None, "driver": None, "packages": {}},
           "suite": {"name": "smoke", "fingerprint": "sha256:1"}, "case_set": {"name": "c", "fingerprint": "f", "cases": 3},
           "plan": {"items": [r["key"] for r in recs]},
           "suite_config": {"model": {"device": "cpu"}, "gates": {"latency_p95_s": "+25%", "ssim_vs_baseline": "-0.02",
                                                                   "psnr_vs_baseline": "-1.0"}}}
    return build_summary(run, validate_records(recs, "t"), {"fp32": {"device": "cpu", "weights_bytes": 3_500_000}})


def test_the_run_table_fits_100_columns_without_truncation() -> None:
    from rich.console import Console

    from qie_bench.commands.run import print_summary

    console = Console(width=100, file=io.StringIO(), force_terminal=False)
    print_summary(console, _summary_with_failures(), "runs/20261202T180000Z-smoke")
    text = console.file.getvalue()
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 100
    assert "a-long-variant-name+nf4" in text and "0/3" in text and "3 OOM" in text
    assert "ssim_vs" in text and "baseline" in text, "the suite's gated metrics are columns"
    assert "summary.json" in text, "says where the full figures are"


def test_build_summary_matches_the_summary_schema_and_aggregates_records() -> None:
    s = _summary_with_failures()
    fp32 = s["variants"]["fp32"]
    assert fp32["latency_p50_s"] == 2.5 and fp32["rss_peak_bytes"] == 2**30 and fp32["weights_bytes"] == 3_500_000
    assert s["variants"]["a-long-variant-name+nf4"]["oom_rate"] == 1.0
    assert s["gates"]["latency_p95_s"] == "+25%"
    assert s["fingerprint"]["environment"]["hardware_class"] == "cpu:x"
    assert json.loads(json.dumps(s)) == s

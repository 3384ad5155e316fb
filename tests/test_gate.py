"""The gate end to end, through `qie_bench.cli.main`: exit 0 pass, 1 regression, 2 not comparable.

Runs are drawn from a seeded noise model (tests/gate_fixtures.py) and written as the runner
writes them; a baseline is promoted from one of them with the real command.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats
from gate_fixtures import GATES, drop_metric, gate, make_world, no_fsync, promote, read_json, with_meta, write_run

from qie_bench.gate.baseline import load_baseline
from qie_bench.gate.compare import Verdict, compare
from qie_bench.gate.rundata import load_run
from noise_model import NoiseModel


@pytest.fixture(scope="module", autouse=True)
def _fast_writes() -> Iterator[None]:
    with no_fsync():
        yield


@pytest.fixture(scope="module")
def world() -> NoiseModel:
    return make_world()


@pytest.fixture(scope="module")
def baseline(world: NoiseModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    run = write_run(root / "run", world, seed=1)
    path = root / "baselines" / "synthetic" / "gpu-h100.json"
    assert promote(run, path) == 0
    return path


def failing(run_dir: Path, baseline: Path) -> list[tuple[str, str | None]]:
    result = compare(load_baseline(baseline), load_run(run_dir))
    return [(c.name, c.variant) for c in result.checks if c.failed]


# ---------------------------------------------------------------------------------------------
# Pass


def test_identical_rerun_passes(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    # The very run the baseline came from, and fresh re-runs of the same world (new noise).
    source = Path(read_json(baseline)["source"]["run_dir"])
    assert gate(source, baseline) == 0
    for seed in (2, 3, 4):
        assert gate(write_run(tmp_path / f"rerun{seed}", world, seed=seed), baseline) == 0, failing(tmp_path / f"rerun{seed}", baseline)


def test_small_slowdown_within_threshold_passes(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "slow2", world, seed=5, latency_factor={"bf16": 1.02, "nf4": 1.02})
    assert gate(run, baseline) == 0, failing(run, baseline)


# ---------------------------------------------------------------------------------------------
# Regressions (exit 1)


def test_ten_percent_latency_regression_fails(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "slow10", world, seed=6, latency_factor={"bf16": 1.10})
    assert gate(run, baseline) == 1
    fails = failing(run, baseline)
    assert ("latency_p50_s", "bf16") in fails
    assert all(v == "bf16" for _, v in fails), fails


def test_asv_rule_tests_against_no_change(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    """--latency-null no-change: the rank test asks whether the timings changed at all; the
    statistic must still be beyond the threshold, so fresh re-runs still pass."""
    from qie_bench.gate.stats import GateSettings

    asv = GateSettings(latency_null="no-change")
    base = load_baseline(baseline)
    slow = compare(base, load_run(write_run(tmp_path / "slow10", world, seed=6, latency_factor={"bf16": 1.10})), settings=asv)
    check = next(c for c in slow.checks if c.name == "latency_p50_s" and c.variant == "bf16")
    assert check.verdict is Verdict.FAIL and "significantly slower" in check.why, check.why
    default = compare(base, load_run(tmp_path / "slow10"))
    check = next(c for c in default.checks if c.name == "latency_p50_s" and c.variant == "bf16")
    assert "significantly more than 5% slower" in check.why, check.why
    for seed in (2, 3, 4):
        assert compare(base, load_run(write_run(tmp_path / f"re{seed}", world, seed=seed)), settings=asv).exit_code == 0
    # half-threshold: the timings must be more than 2.5 % slower (half of +5 %)
    half = compare(base, load_run(tmp_path / "slow10"), settings=GateSettings(latency_null="half-threshold"))
    check = next(c for c in half.checks if c.name == "latency_p50_s" and c.variant == "bf16")
    assert check.verdict is Verdict.FAIL and "significantly more than 2.5% slower" in check.why, check.why


def test_outliers_alone_are_not_a_regression(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    # Two items hit by a 60% stall move p95 past its threshold, but the shift is not significant.
    def stall(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in records:
            if r["variant"] == "bf16" and r["case_id"] in ("case-00", "case-01") and r["repeat"] == 2:
                r["latency_s"] *= 1.6
        return records

    run = write_run(tmp_path / "stall", world, seed=7, transform=stall)
    clean = write_run(tmp_path / "clean", world, seed=7)
    result = compare(load_baseline(baseline), load_run(run))
    p95 = next(c for c in result.checks if c.name == "latency_p95_s" and c.variant == "bf16")
    # The pooled p95 moved (the stalls are the slowest items of the run) ...
    assert p95.details["current"] > 1.05 * load_run(clean).latency_statistic("bf16", "latency_p95_s")
    # ... but each case is held to its own baseline by the median of its repeats, so two cases with
    # one stalled repeat each are not two cases that got slower beyond their noise.
    assert p95.verdict is Verdict.PASS and "not significant" in p95.why, p95.why
    assert len(p95.details["tail_cases"]) < 2 and p95.details["testable"]  # the p95 of 12 cases needs 2
    assert result.exit_code == 0


def test_per_variant_threshold_override(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "nf4slow", world, seed=8, latency_factor={"nf4": 1.15})
    result = compare(load_baseline(baseline), load_run(run))
    by = {(c.name, c.variant): c for c in result.checks}
    assert by[("latency_p95_s", "nf4")].threshold == "+25%" and by[("latency_p95_s", "nf4")].verdict is Verdict.PASS
    assert by[("latency_p95_s", "bf16")].threshold == "+8%"
    assert by[("latency_p50_s", "nf4")].verdict is Verdict.FAIL
    assert result.exit_code == 1


def test_per_case_ssim_drop_fails(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "ssim", world, seed=9, metric_shift={("nf4", "ssim_vs_baseline"): -0.03})
    assert gate(run, baseline) == 1
    assert failing(run, baseline) == [("ssim_vs_baseline", "nf4")]


def test_ssim_collapse_on_some_cases_fails(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    # Four of twelve edits break badly; the others are untouched (the widespread-cases rule).
    shift = {f"case-{i:02d}": -0.15 for i in (1, 4, 7, 10)}
    run = write_run(tmp_path / "ssim4", world, seed=10, metric_shift={("nf4", "ssim_vs_baseline"): shift})
    result = compare(load_baseline(baseline), load_run(run))
    check = next(c for c in result.checks if c.name == "ssim_vs_baseline" and c.variant == "nf4")
    assert check.verdict is Verdict.FAIL and check.details["worse_cases"] == sorted(shift)


def test_two_sided_window_fails_on_improvement(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "psnr", world, seed=11, metric_shift={("bf16", "psnr"): +1.5})
    assert failing(run, baseline) == [("psnr", "bf16")]


def test_new_oom_fails(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "oom", world, seed=12, statuses={("nf4", "case-03", 1): "OOM"})
    assert gate(run, baseline) == 1
    fails = failing(run, baseline)
    assert ("status", "nf4") in fails and ("oom_rate", "nf4") in fails


@pytest.mark.parametrize("broken", ["nonfinite", "constant"])
def test_broken_output_fails_whatever_the_means(world: NoiseModel, baseline: Path, tmp_path: Path, broken: str) -> None:
    run = write_run(tmp_path / broken, world, seed=13, outputs={("bf16", "case-05", 0): broken})
    assert gate(run, baseline) == 1
    assert failing(run, baseline) == [("status", "bf16")]


def test_missing_variant_does_not_pass(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "no-nf4", world, seed=14, transform=lambda rs: [r for r in rs if r["variant"] != "nf4"])
    assert gate(run, baseline) == 1
    fails = failing(run, baseline)
    assert ("status", "nf4") in fails
    assert {n for n, v in fails if v == "nf4"} >= {"latency_p50_s", "ssim_vs_baseline"}


def test_missing_metric_does_not_pass(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "no-ssim", world, seed=15, transform=drop_metric("nf4", "ssim_vs_baseline"))
    assert gate(run, baseline) == 1
    assert failing(run, baseline) == [("ssim_vs_baseline", "nf4")]


def test_gated_key_the_baseline_never_measured_does_not_pass(world: NoiseModel, tmp_path: Path) -> None:
    meta = with_meta(world, gates={**GATES, "dists": "+0.01"})
    run = write_run(tmp_path / "a", world, seed=1, meta=meta)
    assert promote(run, tmp_path / "b.json") == 0
    assert gate(write_run(tmp_path / "c", world, seed=2, meta=meta), tmp_path / "b.json") == 1


def test_incomplete_run_never_passes(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "partial", world, seed=16, drop={"nf4/case-11/2"})
    assert gate(run, baseline) == 1
    assert ("complete", None) in failing(run, baseline)


def test_variant_not_in_baseline_is_reported_not_gated(world: NoiseModel, tmp_path: Path) -> None:
    small = NoiseModel.synthetic(7, variants=("bf16",), cases=12, repeats=3, meta=world.meta)
    run = write_run(tmp_path / "one", small, seed=1)
    assert promote(run, tmp_path / "one.json") == 0
    result = compare(load_baseline(tmp_path / "one.json"), load_run(write_run(tmp_path / "two", world, seed=2)))
    assert [(c.name, c.variant, c.verdict) for c in result.checks if c.variant == "nf4"] == [("variant", "nf4", Verdict.NEW)]


# ---------------------------------------------------------------------------------------------
# Not comparable / invalid input (exit 2)


@pytest.mark.parametrize(("change", "words"), [
    ({"case_set_fingerprint": "sha256:" + "d" * 64}, ["case set fingerprint", "sha256:ccccccccccc", "sha256:ddddddddddd"]),
    ({"suite_fingerprint": "sha256:" + "6" * 64}, ["suite fingerprint"]),
    ({"hardware_class": "gpu:NVIDIA H200"}, ["hardware class", "H100", "H200"]),
    ({"metric_weights": "random"}, ["metric weights", "'real'", "'random'"]),
    ({"model": {"source": "pretrained", "id": "Qwen/Qwen-Image-Edit-2509", "revision": "abc123"}},
     ["model", "revision=None", "revision='abc123'"]),
])
def test_not_comparable_exits_2_naming_both_values(world: NoiseModel, baseline: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], change: dict[str, Any],
                                                   words: list[str]) -> None:
    run = write_run(tmp_path / "other", world, seed=2, meta=with_meta(world, **change))
    assert gate(run, baseline) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and all(w in err for w in words), err


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


@pytest.mark.parametrize(("damage", "words"), [
    (_truncate, "not valid JSON"),
    (lambda p: p.write_text("garbage"), "not valid JSON"),
    (lambda p: p.write_text(""), "not valid JSON"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "schema_version": 99})), "schema_version 99"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "records"})),
     "malformed at records"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()),
                                        "records": [{**json.loads(p.read_text())["records"][0], "latency_s": "fast"}]})),
     "latency_s"),
    (lambda p: p.unlink(), "baseline not found"),
])
def test_damaged_baseline_exits_2(world: NoiseModel, baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  damage: Any, words: str) -> None:
    copy = tmp_path / "baseline.json"
    copy.write_bytes(baseline.read_bytes())
    damage(copy)
    run = write_run(tmp_path / "run", world, seed=2)
    junit = tmp_path / "junit.xml"
    assert gate(run, copy, "--junit", str(junit)) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    root = ET.parse(junit).getroot()
    assert root.get("errors") == "1" and root.get("tests") == "1"


def test_summary_json_is_not_a_baseline(world: NoiseModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", world, seed=2)
    assert gate(run, run / "summary.json") == 2
    assert "not a qie-bench baseline" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated summary", "no summary", "garbage record", "bad record"])
def test_damaged_run_exits_2(world: NoiseModel, baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             damage: str) -> None:
    run = write_run(tmp_path / "run", world, seed=2)
    if damage == "truncated summary":
        _truncate(run / "summary.json")
    elif damage == "no summary":
        (run / "summary.json").unlink()
    elif damage == "garbage record":
        with open(run / "cases.jsonl", "a") as f:
            f.write("{not json\n")
    else:
        lines = (run / "cases.jsonl").read_text().splitlines()
        lines[3] = json.dumps({**json.loads(lines[3]), "status": "MAYBE"})
        (run / "cases.jsonl").write_text("\n".join(lines) + "\n")
    assert gate(run, baseline) == 2
    err = capsys.readouterr().err
    assert err.startswith("qie-bench: error:") and "Traceback" not in err


def test_bad_threshold_in_run_exits_2(world: NoiseModel, baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", world, seed=2, meta=with_meta(world, gates={**GATES, "latency_p95_s": "10 percent"}))
    # (Changing [gates] also changes the suite fingerprint in a real run; here only gates differ.)
    assert gate(run, baseline) == 2
    assert "gates.latency_p95_s" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Reports


def test_junit_and_markdown_reports(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", world, seed=17, latency_factor={"bf16": 1.10},
                    statuses={("nf4", "case-02", 0): "ERROR"})
    junit, md = tmp_path / "out" / "junit.xml", tmp_path / "out" / "gate.md"
    assert gate(run, baseline, "--junit", str(junit), "--markdown", str(md)) == 1
    result = compare(load_baseline(baseline), load_run(run))

    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    # comparable + complete + per variant (status + each gated key)
    expected = 2 + sum(1 + len({k for k, v in GATES.items() if not isinstance(v, dict)}) for _ in ("bf16", "nf4"))
    assert len(cases) == len(result.checks) == expected == int(root.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == int(root.get("failures")) == len(result.failures) > 0
    assert int(root.get("skipped")) == len([c for c in cases if c.find("skipped") is not None]) == 2  # *_vs_baseline of bf16
    names = {c.get("name") for c in failures}
    assert {"bf16: latency_p50_s", "nf4: status"} <= names
    assert all(f.find("failure").get("message") for f in failures)

    text = md.read_text()
    assert text.startswith("## ❌ qie-bench gate:") and "(exit 1)" in text
    assert "|  | metric | variant | baseline | current | change | threshold | verdict | why |" in text
    assert text.count("\n| ❌ |") == 2 * len(result.failures)  # once under Failures, once in All checks


# ---------------------------------------------------------------------------------------------
# baseline promote


def test_promote_refuses_overwrite_and_keeps_previous(world: NoiseModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write_run(tmp_path / "first", world, seed=1)
    second = write_run(tmp_path / "second", world, seed=2)
    target = tmp_path / "baselines" / "synthetic" / "gpu.json"
    assert promote(first, target) == 0
    old_bytes = target.read_bytes()
    assert promote(second, target) == 2
    assert "--force" in capsys.readouterr().err
    assert target.read_bytes() == old_bytes

    assert promote(second, target, "--force") == 0
    new = read_json(target)
    assert new["source"]["run_id"] == "run0002"
    [prev] = new["previous"]
    assert prev["run_id"] == "run0001" and set(prev["variants"]) == {"bf16", "nf4"}
    assert (target.parent / prev["file"]).read_bytes() == old_bytes  # kept byte for byte
    # A third promotion keeps the whole chain.
    assert promote(first, target, "--force") == 0
    assert [p["run_id"] for p in read_json(target)["previous"]] == ["run0001", "run0002"]


def test_baseline_content(world: NoiseModel, baseline: Path) -> None:
    b = read_json(baseline)
    assert b["schema_version"] == 1 and b["kind"] == "qie-bench-baseline" and b["complete"] is True
    assert b["gates"] == GATES
    assert b["fingerprint"]["environment"]["hardware_class"] == world.meta.hardware_class
    assert len(b["records"]) == len(world.planned_keys())
    assert {"latency_s", "step_s", "metrics", "peak_vram_bytes"} <= set(b["records"][0])
    assert "latency_p95_s" in b["variants"]["nf4"]


def test_promote_refuses_incomplete_run_unless_allowed(world: NoiseModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partial = write_run(tmp_path / "partial", world, seed=1, drop={"bf16/case-00/1"})
    assert promote(partial, tmp_path / "b.json") == 2
    assert "incomplete" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    assert promote(partial, tmp_path / "b.json", "--allow-incomplete") == 0
    b = read_json(tmp_path / "b.json")
    assert b["complete"] is False and "--allow-incomplete" in b["incomplete_note"]

    unfinished = write_run(tmp_path / "unfinished", world, seed=2, write_summary=False)
    assert promote(unfinished, tmp_path / "c.json") == 2
    assert "summary.json not found" in capsys.readouterr().err
    assert promote(unfinished, tmp_path / "c.json", "--allow-incomplete") == 0
    # A complete run still gates against the incomplete baseline, with a note saying so.
    result = compare(load_baseline(tmp_path / "b.json"), load_run(write_run(tmp_path / "r", world, seed=3)))
    assert any("--allow-incomplete" in n for n in result.notes)


def test_promote_default_path_from_suite_and_hardware(world: NoiseModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path / "run", world, seed=1)
    monkeypatch.chdir(tmp_path)
    assert promote(run, Path("baselines/synthetic/gpu-nvidia-h100-80gb-hbm3.json")) == 0
    from qie_bench.cli import main

    assert main(["baseline", "promote", str(run), "--force"]) == 0
    assert (tmp_path / "baselines" / "synthetic" / "gpu-nvidia-h100-80gb-hbm3.json").exists()


def test_tail_regression_fails_p95(world: NoiseModel, baseline: Path, tmp_path: Path) -> None:
    # A third of the cases got 60% slower (a kernel fell off its fast path for long sequences):
    # the bulk barely moves, the p95 does, and its bootstrap interval says so.
    slow = {f"case-{i:02d}" for i in (0, 3, 6, 9)}

    def tail(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in records:
            if r["variant"] == "bf16" and r["case_id"] in slow and r.get("latency_s"):
                r["latency_s"] *= 1.6
        return records

    result = compare(load_baseline(baseline), load_run(write_run(tmp_path / "tail", world, seed=18, transform=tail)))
    p95 = next(c for c in result.checks if c.name == "latency_p95_s" and c.variant == "bf16")
    assert p95.verdict is Verdict.FAIL and p95.details["ci_evidence"], p95.why


def test_too_few_repeats_is_untestable_never_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = make_world(cases=3, repeats=1, gates={"latency_p50_s": "+5%", "latency_mean_s": "+250ms"})
    base = write_run(tmp_path / "a", world, seed=1)
    assert promote(base, tmp_path / "b.json") == 0
    run = write_run(tmp_path / "c", world, seed=2, latency_factor={"nf4": 1.2})
    result = compare(load_baseline(tmp_path / "b.json"), load_run(run))
    check = next(c for c in result.checks if c.name == "latency_p50_s" and c.variant == "nf4")
    assert check.verdict is Verdict.UNTESTABLE and "cannot tell that from noise" in check.why, check.why
    assert check.details["n"] == 3 and "(n=3)" in check.change
    mean = next(c for c in result.checks if c.name == "latency_mean_s" and c.variant == "nf4")
    assert mean.threshold == "+0.25" and mean.verdict is Verdict.UNTESTABLE
    # not a pass: exit 1, and JUnit shows it as a failure of its own type
    junit = tmp_path / "junit.xml"
    assert gate(run, tmp_path / "b.json", "--junit", str(junit)) == 1
    assert "UNTESTABLE" in capsys.readouterr().out
    types = {f.get("type") for f in ET.parse(junit).getroot().iter("failure")}
    assert "untestable" in types


def test_example_runs_are_what_the_runner_writes(world: NoiseModel, tmp_path: Path) -> None:
    from qie_bench.results import load_json_file, read_records, validate_summary

    run = write_run(tmp_path / "run", world, seed=1)
    validate_summary(load_json_file(run / "summary.json", "summary.json"))
    assert load_json_file(run / "run.json", "run.json")["plan"]["items"] == world.planned_keys()
    assert len(read_records(run / "cases.jsonl")) == len(world.planned_keys())


# ---------------------------------------------------------------------------------------------
# Issue 14: paired latency, untestable statistics, empty baseline variants, small suites


def _slow_cases(cases: set[str], factor: float, variant: str = "bf16"):
    def t(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in records:
            if r["variant"] == variant and r["case_id"] in cases and r.get("latency_s"):
                r["latency_s"] *= factor
                r["step_s"] = [s * factor for s in r.get("step_s") or []]
        return records

    return t


def test_tail_regression_with_one_repeat_fails_and_honest_reruns_pass(tmp_path: Path) -> None:
    """The smoke settings (16 cases x 1 repeat, p95 at +10 %), 3 of 16 cases twice as slow: the
    rank test over the whole distribution called this a pass; paired per case, it fails."""
    world = make_world(cases=16, repeats=1, gates={"latency_p95_s": "+10%"})
    assert promote(write_run(tmp_path / "a", world, seed=1), tmp_path / "b.json") == 0
    base = load_baseline(tmp_path / "b.json")
    slow = {"case-02", "case-07", "case-11"}
    result = compare(base, load_run(write_run(tmp_path / "slow", world, seed=2, transform=_slow_cases(slow, 2.0))))
    p95 = next(c for c in result.checks if c.name == "latency_p95_s" and c.variant == "bf16")
    assert p95.verdict is Verdict.FAIL and set(p95.details["tail_cases"]) == slow, p95.why
    assert p95.details["n"] == 16 and "(n=16)" in p95.change and "95% CI" in p95.why
    # The statistic is the 95th percentile of the 16 per-case log ratios, by hand from the records.
    b = {r.case_id: r.latency_s for r in base.records_of("bf16")}
    c = {r.case_id: r.latency_s for r in load_run(tmp_path / "slow").records_of("bf16")}
    logs = np.log([c[k] / b[k] for k in b])
    assert p95.details["paired_statistic"] == pytest.approx(float(np.percentile(logs, 95)))
    # Its interval: order statistics of the 16 ratios with binomial coverage; the upper bound of a
    # 95th percentile from 16 cases does not exist (it would need a 17th), the lower is X_(j) for the
    # largest j with P(Binomial(16, 0.95) >= j) >= 0.975 (j = 13).
    assert scipy_stats.binom.sf(12, 16, 0.95) >= 0.975 > scipy_stats.binom.sf(13, 16, 0.95)
    assert p95.details["ci"] == (pytest.approx(float(np.sort(logs)[12])), math.inf)
    for seed in (3, 4, 5, 6):
        honest = compare(base, load_run(write_run(tmp_path / f"h{seed}", world, seed=seed)))
        assert honest.exit_code == 0, [(c.name, c.variant, c.why) for c in honest.failures]


def test_p95_the_data_cannot_test_is_untestable_not_a_pass(tmp_path: Path) -> None:
    """Four cases, one repeat: no estimate of a case's noise, and a rank test over four cases cannot
    reach p < 0.001. A p95 beyond the threshold is then UNTESTABLE, which fails (exit 1)."""
    world = make_world(cases=4, repeats=1, gates={"latency_p95_s": "+10%"})
    assert promote(write_run(tmp_path / "a", world, seed=1), tmp_path / "b.json") == 0
    run = write_run(tmp_path / "c", world, seed=2, transform=_slow_cases({"case-01"}, 2.0))
    result = compare(load_baseline(tmp_path / "b.json"), load_run(run))
    p95 = next(c for c in result.checks if c.name == "latency_p95_s" and c.variant == "bf16")
    assert p95.verdict is Verdict.UNTESTABLE and "cannot tell that from noise" in p95.why, p95.why
    assert result.exit_code == 1 and p95 in result.failures
    assert gate(run, tmp_path / "b.json") == 1


def test_a_baseline_variant_without_records_is_not_comparable(world: NoiseModel, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline lists nf4 (planned) but holds no record of it; the run has nf4 OOM on every
    case. Every check of nf4 would be SKIP and the gate would pass: it is not comparable (exit 2)."""
    empty = write_run(tmp_path / "a", world, seed=1, transform=lambda rs: [r for r in rs if r["variant"] != "nf4"])
    assert promote(empty, tmp_path / "b.json", "--allow-incomplete") == 0
    assert "nf4" in load_baseline(tmp_path / "b.json").variants
    ooms = {("nf4", f"case-{i:02d}", r): "OOM" for i in range(12) for r in range(3)}
    run = write_run(tmp_path / "c", world, seed=2, statuses=ooms)
    capsys.readouterr()
    assert gate(run, tmp_path / "b.json") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "baseline variant 'nf4'" in err and "36 OOM of 36 items" in err, err


@pytest.mark.parametrize(("shifted", "verdict"), [(1, Verdict.PASS), (2, Verdict.FAIL)])
def test_widespread_needs_more_than_one_case(tmp_path: Path, shifted: int, verdict: Verdict) -> None:
    """A 3-case suite: one case at -0.025 (threshold -0.02) while the mean moved ~-0.008 with an
    interval spanning 0 is not widespread (one case is a third of the suite); two such cases are."""
    world = make_world(cases=3, repeats=1, gates={"ssim_vs_baseline": "-0.02"})
    assert promote(write_run(tmp_path / "a", world, seed=1), tmp_path / "b.json") == 0
    shift = {f"case-{i:02d}": -0.025 for i in range(shifted)}
    run = write_run(tmp_path / "c", world, seed=2, metric_shift={("nf4", "ssim_vs_baseline"): shift})
    check = next(c for c in compare(load_baseline(tmp_path / "b.json"), load_run(run)).checks
                 if c.name == "ssim_vs_baseline" and c.variant == "nf4")
    assert len(check.details["worse_cases"]) == shifted, check.why
    assert check.verdict is verdict and check.details["widespread"] is (shifted == 2), check.why
    if shifted == 1:
        assert not check.details["systematic"] and "one case alone is not widespread" in check.why

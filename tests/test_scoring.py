"""The scoring phase apart from measuring, and `qie-bench score-run`, on the tiny pipeline.

One run (fp32 baseline + bf16, two cases, one of them a text case) is shared by the tests; the
tests that change files work on copies.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from qie_bench.cli import main
from qie_bench.results import RunDir, read_records
from qie_bench.results.scores import read_scores

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EDIT_V2 = ROOT / "suites" / "cases" / "edit-v2"
CASES = ["txt-price-mug", "rm-watermark-bottle"]
METRICS = ["psnr_vs_baseline", "ssim", "text_accuracy", "judge_sc", "judge_pq", "judge_overall"]


def _suite(path: Path, metrics: list[str] | None) -> Path:
    from conftest import TINY_SUITE, VARIANT

    block = f"names = {json.dumps(metrics)}\nweights = \"random\"" if metrics else ""
    text = TINY_SUITE.format(name=path.stem, baseline="fp32", cases=EDIT_V2.as_posix(), select=json.dumps(CASES),
                             steps=2, repeats=1, timeout=120, metrics=block)
    if not metrics:
        text = text.replace("[metrics]\n", "")
    text += VARIANT.format(name="fp32", dtype="fp32") + VARIANT.format(name="bf16", dtype="bf16")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("scoring")
    out = tmp / "out"
    assert main(["run", str(_suite(tmp / "s.toml", METRICS)), "--out", str(out), "--no-progress"]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "logs" not in p.parts}


def test_edit_records_carry_no_metrics_and_scores_are_merged_for_every_reader(scored_run: Path) -> None:
    raw = read_records(scored_run / "cases.jsonl")
    assert len(raw) == 4 and all("metrics" not in r and "metric_details" not in r for r in raw)
    scores = read_scores(scored_run)
    assert sorted(scores) == sorted(r["key"] for r in raw)  # one score per OK repeat-0 output
    for r in raw:
        assert scores[r["key"]]["output_sha256"] == r["output_sha256"]
    rd = RunDir.load(scored_run)
    by_key = {r.key: r for r in rd.records}
    assert list(by_key["bf16/txt-price-mug/0"].metrics) == METRICS
    # fidelity: bf16 against the baseline's image, which existed when bf16 was scored
    assert by_key["bf16/txt-price-mug/0"].metric("psnr_vs_baseline") > 20
    assert by_key["fp32/txt-price-mug/0"].metric("psnr_vs_baseline") is None
    text = by_key["fp32/txt-price-mug/0"].value("metric_details")["text_accuracy"]
    assert text["expected"] and isinstance(text["recognised"], list)
    judge = by_key["fp32/txt-price-mug/0"].value("metric_details")["judge_sc"]
    assert judge["reply"] and judge["scores"] is None and judge["seconds"] > 0  # tiny random judge: null with the reply
    summary = json.loads((scored_run / "summary.json").read_text())
    bf16 = summary["variants"]["bf16"]
    assert bf16["metrics"]["ssim"]["n"] == 2 and bf16["metrics"]["psnr_vs_baseline"]["n"] == 2
    assert summary["weights"]["metrics"] == "random"
    assert set(bf16["build"]["metric_descriptions"]) == set(METRICS)


def test_scoring_runs_in_its_own_process_per_variant(scored_run: Path) -> None:
    for variant in ("fp32", "bf16"):
        scoring = json.loads((scored_run / "variants" / f"{variant}.scoring.json").read_text())
        workers = {r["worker_pid"] for r in read_records(scored_run / "cases.jsonl") if r["variant"] == variant}
        assert scoring["pid"] not in workers
        assert scoring["metric_weights"] == "random" and scoring["metrics_device"] == "cpu"
        build = json.loads((scored_run / "variants" / f"{variant}.build.json").read_text())
        assert "metric_descriptions" not in build, "the worker built no scorer"


def test_resume_rescores_only_what_is_missing(scored_run: Path, tmp_path: Path) -> None:
    from qie_bench.plan import make_plan
    from qie_bench.runner.orchestrator import Orchestrator
    from qie_bench.suite import load_suite

    run = _copy(scored_run, tmp_path)
    lines = (run / "scores.jsonl").read_bytes().splitlines(keepends=True)
    # a scoring phase killed after one score, in the middle of writing the second
    (run / "scores.jsonl").write_bytes(lines[0] + lines[1][:40])
    (run / "summary.json").unlink()
    cases_before = (run / "cases.jsonl").read_bytes()
    suite = load_suite(_suite(tmp_path / "s.toml", METRICS))
    Orchestrator(make_plan(suite), run, resume=True).run()
    assert (run / "cases.jsonl").read_bytes() == cases_before, "no edit ran again"
    rd = RunDir.load(run)
    assert all(r.metrics is not None and list(r.metrics) == METRICS for r in rd.records)
    assert len(read_scores(run)) == 4


def test_score_run_adds_a_metric_and_keeps_the_others(scored_run: Path, tmp_path: Path) -> None:
    run = _copy(scored_run, tmp_path)
    before = {r.key: r for r in RunDir.load(run).records}
    assert main(["score-run", str(run), "--metrics", "psnr", "--weights", "random"]) == 0
    after = {r.key: r for r in RunDir.load(run).records}
    for key, r in after.items():
        assert r.metric("psnr") is not None and r.metric("psnr") > 0
        assert r.metric("ssim") == before[key].metric("ssim"), "other metrics kept"
        assert r.value("metric_details")["judge_sc"] == before[key].value("metric_details")["judge_sc"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["variants"]["bf16"]["metrics"]["psnr"]["n"] == 2
    # everything scored already: a second call scores nothing and changes no score
    scores_before = (run / "scores.jsonl").read_bytes()
    assert main(["score-run", str(run), "--metrics", "psnr"]) == 0
    assert (run / "scores.jsonl").read_bytes() == scores_before


def _run_in_code(suite_path: Path, out: Path, metrics: object | None, variants: int = 2) -> Path:
    """A run of the suite with its [metrics] replaced (None: no metric at all; only the Python
    API can say that, a suite file always has the default metrics)."""
    from qie_bench.plan import make_plan
    from qie_bench.runner.orchestrator import Orchestrator
    from qie_bench.suite import load_suite

    suite = load_suite(suite_path)
    suite = suite.model_copy(update={"metrics": metrics, "variants": suite.variants[:variants]})
    Orchestrator(make_plan(suite), out).run()
    return out


def test_score_run_scores_a_run_made_without_metrics(tmp_path: Path) -> None:
    out = _run_in_code(_suite(tmp_path / "bare.toml", METRICS), tmp_path / "bare", None)
    assert not (out / "scores.jsonl").exists() and not list((out / "variants").glob("*.scoring.json"))
    assert all(r.metrics is None for r in RunDir.load(out).records)
    assert main(["score-run", str(out), "--metrics", "ssim,psnr_vs_baseline", "--weights", "random"]) == 0
    by_key = {r.key: r for r in RunDir.load(out).records}
    assert by_key["bf16/rm-watermark-bottle/0"].metric("psnr_vs_baseline") > 20
    assert json.loads((out / "summary.json").read_text())["variants"]["fp32"]["metrics"]["ssim"]["n"] == 2


def test_worker_memory_peak_is_the_same_with_and_without_metrics(tmp_path: Path) -> None:
    """The worker's RSS peak per record with every default metric on (CLIP-IQA, LPIPS, CLIP-Score,
    OCR, ...) equals the one with no metric at all, within 3 %.

    Why 3 %: two workers of the same variant differ by 1-3 MiB (0.3 %) in RSS peak on this tiny
    pipeline (~930 MiB, measured); building the default metric models in the worker, as before
    the scoring phase existed, raised it by 200-250 MiB (1129-1178 against 929 MiB, +22-27 %).
    """
    from qie_bench.metrics import MetricsConfig

    suite = _suite(tmp_path / "m.toml", None)
    on = _run_in_code(suite, tmp_path / "on", MetricsConfig(weights="random"), variants=1)
    off = _run_in_code(suite, tmp_path / "off", None, variants=1)
    with_metrics = {r.key: r.rss_peak_bytes for r in RunDir.load(on).records}
    without = {r.key: r.rss_peak_bytes for r in RunDir.load(off).records}
    assert set(with_metrics) == set(without) and len(without) == 2
    assert all(r.metrics and r.metric("ssim") is not None for r in RunDir.load(on).records), "metrics were on"
    for key, peak in without.items():
        assert peak is not None and abs(with_metrics[key] - peak) <= 0.03 * peak, (key, with_metrics[key], peak)


def test_an_unreadable_output_is_null_with_the_reason_and_the_rest_is_scored(scored_run: Path, tmp_path: Path) -> None:
    run = _copy(scored_run, tmp_path)
    (run / "images" / "bf16" / "txt-price-mug.png").write_bytes(b"not a png")
    assert main(["score-run", str(run), "--metrics", "ssim", "--all"]) == 0
    by_key = {r.key: r for r in RunDir.load(run).records}
    broken = read_scores(run)["bf16/txt-price-mug/0"]
    assert broken["metrics"]["ssim"] is None and "UnidentifiedImageError" in broken["error"]
    assert by_key["bf16/txt-price-mug/0"].metric("ssim") is None
    assert by_key["bf16/rm-watermark-bottle/0"].metric("ssim") is not None


@pytest.mark.parametrize(("args", "message"), [
    (["--metrics", "ssmi"], "did you mean 'ssim'"),
    (["--weights", "real", "--metrics", "judge_overall"], "no judge named"),
    (["--device", "gpu0"], "not a torch device"),
    (["--cases", "/nonexistent"], "case set folder /nonexistent not found"),
])
def test_score_run_bad_input_is_one_line_exit_2_and_nothing_changes(scored_run: Path, tmp_path: Path, args: list[str],
                                                                    message: str, capsys: pytest.CaptureFixture) -> None:
    run = _copy(scored_run, tmp_path)
    before = _digest(run)
    assert main(["score-run", str(run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert _digest(run) == before


def test_score_run_on_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["score-run", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_report_shows_the_new_metrics_and_what_ocr_read(scored_run: Path, tmp_path: Path) -> None:
    """Quality table, per-category plots and gallery of a scored run; the recognised text of a
    text case (planted in its score line, as rapidocr would give it) under its output."""
    run = _copy(scored_run, tmp_path)
    lines = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines()]
    for line in lines:
        if line["key"] == "bf16/txt-price-mug/0":
            line["metrics"]["text_accuracy"] = 0.75
            line["metric_details"]["text_accuracy"]["recognised"] = ["$14.9", "mug"]
    (run / "scores.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    assert main(["score-run", str(run), "--metrics", "ssim"]) == 0  # nothing to score; the summary is rebuilt
    assert json.loads((run / "summary.json").read_text())["variants"]["bf16"]["metrics"]["text_accuracy"]["mean"] == 0.75
    report = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(report)]) == 0
    html = report.read_text()
    for name in ("text_accuracy ↑", "judge_overall ↑", "judge_sc ↑"):
        assert name in html, f"{name} in the quality table"
    assert "Per-category quality: text_accuracy" in html and "Per-category quality: judge_overall" in html
    assert "read: “$14.9 / mug”" in html and "read: nothing" in html
    assert "must show: “$14.99”" in html

"""`qie-bench report` and `qie-bench signoff` on a real tiny run (see test_report_helpers.py)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from test_report_helpers import as_gpu_run, copy_run, edit_json, edit_records, tiny_run  # noqa: F401

from qie_bench.cli import main

pytestmark = pytest.mark.slow

EXTERNAL = re.compile(r"""(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:https?:|ftp:|//)""", re.IGNORECASE)


def report(*runs: Path, out: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["report", *map(str, runs), "--out", str(out), *extra])


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(http" not in html
    assert not re.search(r"<script[^>]+src=", html, re.IGNORECASE)
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)


def test_report_is_one_self_contained_file(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out, md = tmp_path / "reports" / "smoke.html", tmp_path / "smoke.md"
    assert report(tiny_run, out=out, extra=("--markdown", str(md))) == 0
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temp file left
    # every variant, the weights banner at the top, every section
    for variant in ("fp32", "bf16"):
        assert f">{variant}<" in html
    assert 'id="random-weights-banner"' in html and "RANDOM MODEL WEIGHTS" in html
    assert html.index("RANDOM MODEL WEIGHTS") < html.index('id="speed"')
    for section in ('id="speed"', 'id="quality"', 'id="time-floors"', 'id="memory-floors"', 'id="projections"',
                    'id="plots"', 'id="gallery"', 'id="runs"'):
        assert section in html
    # quality metrics with their direction arrows; the gallery shows every case with its instruction
    assert "ssim_vs_baseline ↑" in html and "psnr ↑" in html
    for case in ("rm-watermark-bottle", "txt-price-mug", "add-bottle-mug-table"):
        assert f'id="case-{case}"' in html
    # 3 cases: sources (1 + 1 + 2 or 3 input images) and 2 outputs each, plus the plots
    assert len(re.findall(r"<img ", html)) >= 3 * 3 + 4
    assert len(html) < 5_000_000
    text = md.read_text(encoding="utf-8")
    assert "| hardware | variant | status |" in text and "| fp32" in text and "| bf16" in text
    assert "RANDOM MODEL WEIGHTS" in text


def test_two_hardware_classes_make_one_comparison(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    # TEST-ONLY alteration: a copy of the CPU run relabelled as an H100 run, with impossibly fast
    # latencies (1 ns per edit: the tiny model's floor on an H100 is about a microsecond), which the
    # report must flag as beating the physical floor.
    gpu = copy_run(tiny_run, tmp_path / "gpu-run")
    as_gpu_run(gpu)
    edit_records(gpu / "cases.jsonl", lambda r: r.update(latency_s=1e-9) if r.get("status") == "OK" else None)
    out = tmp_path / "hw.html"
    assert report(tiny_run, gpu, out=out) == 0
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert 'id="hardware"' in html and "hardware comparison" in html
    assert "H100 SXM 80GB" in html and "CPU " in html
    assert 'id="floor-flags"' in html and "BEATS FLOOR" in html
    assert re.search(r"H100 SXM 80GB · (fp32|bf16): latency .* is below its floor", html)


def test_runs_of_different_case_sets_are_refused(tiny_run: Path, tmp_path: Path,  # noqa: F811
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    other = copy_run(tiny_run, tmp_path / "other-cases")
    # TEST-ONLY alteration: the copy claims another case set.
    edit_json(other / "summary.json", lambda s: s["fingerprint"]["case_set"].update(fingerprint="sha256:" + "0" * 64))
    out = tmp_path / "mixed.html"
    assert report(tiny_run, other, out=out) == 2
    err = capsys.readouterr().err
    assert "case set" in err and "same case set" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_input_is_exit_2(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert report(tmp_path / "missing", out=tmp_path / "x.html") == 2
    assert report(tiny_run, out=tmp_path) == 2  # --out is a directory
    assert report(tiny_run, tiny_run, out=tmp_path / "twice.html") == 2
    err = capsys.readouterr().err
    assert "run directory not found" in err and "is a directory" in err and "given twice" in err


@pytest.fixture(scope="module")
def baseline(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("baseline") / "cpu.json"
    assert main(["baseline", "promote", str(tiny_run), "--to", str(path)]) == 0
    return path


GATES = {"latency_p50_s": "+10%", "rss_peak_bytes": "+10%", "oom_rate": "0", "psnr": "-1.0"}


def _rerun(tiny_run: Path, to: Path, slower: float) -> Path:
    # TEST-ONLY alteration: a re-run of the baseline's run, every edit `slower` times as long, gated
    # by a [gates] table (the tiny suite has none, and a gate with no threshold cannot fail).
    run = copy_run(tiny_run, to)
    edit_json(run / "summary.json", lambda s: s.update(gates=GATES))
    edit_records(run / "cases.jsonl", lambda r: r.update(latency_s=r["latency_s"] * slower) if r.get("latency_s") else None)
    return run


def test_signoff_signed_off_when_the_gate_passes(tiny_run: Path, baseline: Path, tmp_path: Path) -> None:  # noqa: F811
    rerun = _rerun(tiny_run, tmp_path / "rerun", 1.02)  # 2 % slower: within +10 %
    out = tmp_path / "smoke-signoff.html"
    gate = main(["gate", str(rerun), "--baseline", str(baseline)])
    code = main(["signoff", str(rerun), "--baseline", str(baseline), "--out", str(out)])
    assert gate == 0 and code == 0
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert 'class="verdict pass"' in html and "SIGNED OFF" in html and "BLOCKED" not in html
    for key in GATES:  # every threshold was checked, for both variants
        assert html.count(key) >= 2, key
    # The same re-run 50 % slower crosses the latency threshold: not signed off.
    slow = _rerun(tiny_run, tmp_path / "slow", 1.5)
    assert main(["gate", str(slow), "--baseline", str(baseline)]) == 1
    assert main(["signoff", str(slow), "--baseline", str(baseline), "--out", str(tmp_path / "slow.html")]) == 1
    assert "BLOCKED" in (tmp_path / "slow.html").read_text(encoding="utf-8")
    # every artefact relied on, with its sha256
    for f in (rerun / "summary.json", rerun / "cases.jsonl", rerun / "run.json", baseline):
        assert sha256(f) in html, f
    for img in (rerun / "images").rglob("*.png"):
        assert sha256(img) in html, img
    # fingerprints: model, case set, suite, environment, project commit
    summary = json.loads((rerun / "summary.json").read_text())
    fp = summary["fingerprint"]
    for value in (fp["case_set"]["fingerprint"], fp["suite"]["fingerprint"], fp["environment"]["hardware_class"]):
        assert value in html
    assert "project commit" in html and "tiny" in html


def test_signoff_blocked_when_one_gate_fails(tiny_run: Path, baseline: Path, tmp_path: Path) -> None:  # noqa: F811
    # TEST-ONLY alteration: in a copy of the run, one case that was OK in the baseline failed.
    bad = copy_run(tiny_run, tmp_path / "regressed")
    edit_records(bad / "cases.jsonl", lambda r: r.update(status="ERROR", error="injected by the test")
                 if r["key"] == "bf16/txt-price-mug/0" else None)
    out = tmp_path / "blocked.html"
    gate = main(["gate", str(bad), "--baseline", str(baseline)])
    code = main(["signoff", str(bad), "--baseline", str(baseline), "--out", str(out)])
    assert gate == 1 and code == 1
    html = out.read_text(encoding="utf-8")
    assert 'class="verdict block"' in html and "BLOCKED" in html and "SIGNED OFF" not in html
    assert "txt-price-mug" in html and "FAIL — status · bf16" in html


def test_signoff_blocked_when_not_comparable(tiny_run: Path, baseline: Path, tmp_path: Path) -> None:  # noqa: F811
    # TEST-ONLY alteration: the copy claims another hardware class -> the gate says not comparable (2).
    other = copy_run(tiny_run, tmp_path / "other-hw")
    as_gpu_run(other, on_device=False)
    out = tmp_path / "nc.html"
    gate = main(["gate", str(other), "--baseline", str(baseline)])
    code = main(["signoff", str(other), "--baseline", str(baseline), "--out", str(out)])
    assert gate == 2 and code == 1
    html = out.read_text(encoding="utf-8")
    assert "BLOCKED" in html and "NOT COMPARABLE" in html and "hardware class" in html


def test_signoff_bad_input_is_exit_2(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    out = tmp_path / "x.html"
    assert main(["signoff", str(tiny_run), "--baseline", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "baseline not found" in capsys.readouterr().err
    assert not out.exists()


def test_budget_table_names_the_lightest_offload_mode_that_fits(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    # TEST-ONLY alteration: three copies of the CPU run relabelled as H100 runs under budgets and
    # offload modes, as `benchmarks/vram_budgets.py` makes them: at 8 GiB bf16 runs out of memory
    # without offload (in the VAE decode) and fits with model offload; at 12 GiB it fits as is.
    def variant_run(name: str, budget: str, offload: str, status: str) -> Path:
        run = copy_run(tiny_run, tmp_path / name)
        as_gpu_run(run)
        edit_json(run / "summary.json", lambda s: s["measurement"].update(memory_budget=budget, offload=offload))

        def set_status(r: dict) -> None:
            if status == "OOM":
                r.update(status="OOM", at_failure={"phase": "vae-decode", "steps_done": 2})

        edit_records(run / "cases.jsonl", set_status)
        return run

    # at 16 GiB only group offload was run; no offload, which ran under 12 GiB, runs there too
    runs = [variant_run("b8-none", "8GiB", "none", "OOM"), variant_run("b8-model", "8GiB", "model", "OK"),
            variant_run("b12-none", "12GiB", "none", "OK"), variant_run("b16-group", "16GiB", "group", "OK")]
    out, md = tmp_path / "budgets.html", tmp_path / "budgets.md"
    assert report(*runs, out=out, extra=("--markdown", str(md))) == 0
    text = md.read_text(encoding="utf-8")
    assert "### Memory budgets: what fits, and how" in text
    row = next(line for line in text.splitlines() if line.startswith("| bf16 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "bf16"
    assert cells[1].startswith("model offload") and cells[2].startswith("no offload"), cells
    assert cells[3].startswith("no offload") and "measured at 12GiB" in cells[3], cells
    # runs of one GPU are told apart by their settings, not by run ids
    assert "H100 SXM 80GB · 8GiB budget · model offload" in text and "H100 SXM 80GB · 12GiB budget" in text
    assert 'id="budgets"' in out.read_text(encoding="utf-8")


def test_budget_table_reports_where_every_mode_ran_out(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    run = copy_run(tiny_run, tmp_path / "b8-group")
    as_gpu_run(run)
    edit_json(run / "summary.json", lambda s: s["measurement"].update(memory_budget="8GiB", offload="group"))
    edit_records(run / "cases.jsonl", lambda r: r.update(status="OOM", at_failure={"phase": "text-encode"}))
    md = tmp_path / "b.md"
    assert report(run, out=tmp_path / "b.html", extra=("--markdown", str(md))) == 0
    row = next(line for line in md.read_text(encoding="utf-8").splitlines() if line.startswith("| fp32 |"))
    assert "does not fit" in row and "group: OOM in text-encode" in row

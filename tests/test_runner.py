"""The runner end to end on the tiny pipeline: child process per variant, failures recorded,
the run goes on. Faults are injected for real through the orchestrator's test hook (see worker.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from qie_bench.cli import main
from qie_bench.errors import UserInputError
from qie_bench.results import read_records, validate_summary

pytestmark = pytest.mark.slow

THREE = ["rm-watermark-bottle", "txt-price-mug", "add-hat-chelsea"]


def _run(suite: Path, out: Path, monkeypatch: pytest.MonkeyPatch, faults: list[dict] | None = None, *extra: str) -> int:
    if faults:  # the fault hook is reachable from Python only, never from the command line
        assert not extra
        from qie_bench.plan import make_plan
        from qie_bench.runner.orchestrator import Orchestrator
        from qie_bench.suite import load_suite

        Orchestrator(make_plan(load_suite(suite)), out, faults=faults).run()
        return 0
    return main(["run", str(suite), "--out", str(out), "--no-progress", *extra])


def _by_key(out: Path) -> dict[str, dict]:
    records = read_records(out / "cases.jsonl")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "one record per planned item"
    return {r["key"]: r for r in records}


@pytest.fixture(scope="module")
def oom_and_crash_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32: an OOM in the middle case; bf16: a segfault in its first case."""
    tmp = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    from conftest import CASES, TINY_SUITE, VARIANT  # tests/ is on sys.path (rootdir conftest)

    text = TINY_SUITE.format(name="faults", baseline="fp32", cases=CASES.as_posix(), select=json.dumps(THREE), steps=2,
                             repeats=1, timeout=60, metrics="names = [\"psnr\", \"ssim\"]\nweights = \"random\"")
    text += VARIANT.format(name="fp32", dtype="fp32") + VARIANT.format(name="bf16", dtype="bf16")
    suite = tmp / "faults.toml"
    suite.write_text(text)
    out = tmp / "out"
    code = _run(suite, out, mp, [
        {"variant": "fp32", "case": "txt-price-mug", "fault": "oom"},
        {"variant": "bf16", "case": "rm-watermark-bottle", "fault": "segfault"},
    ])
    mp.undo()
    assert code == 0
    return out


def test_oom_is_recorded_and_the_run_continues(oom_and_crash_run: Path) -> None:
    recs = _by_key(oom_and_crash_run)
    assert recs["fp32/rm-watermark-bottle/0"]["status"] == "OK"
    oom = recs["fp32/txt-price-mug/0"]
    assert oom["status"] == "OOM" and "OutOfMemoryError" in oom["error"]
    assert recs["fp32/add-hat-chelsea/0"]["status"] == "OK", "the case after the OOM ran in the same variant"
    # The fault fires in the first step's callback: the record says the edit died while
    # denoising, one step in, and what memory it had reached (RSS on the CPU, no VRAM).
    where = oom["at_failure"]
    assert (where["phase"], where["steps_done"], where["warmup"]) == ("denoise", 1, False)
    assert where["rss_peak_bytes"] > 0 and where["peak_vram_bytes"] is None
    summary = json.loads((oom_and_crash_run / "summary.json").read_text())
    fp32 = summary["variants"]["fp32"]
    assert fp32["status_counts"] == {"OK": 2, "OOM": 1, "ERROR": 0, "TIMEOUT": 0, "SKIPPED": 0}
    assert fp32["oom_rate"] == pytest.approx(1 / 3)
    assert fp32["complete"] is False and summary["complete"] is True


def test_crashed_child_is_error_and_other_items_still_run(oom_and_crash_run: Path) -> None:
    recs = _by_key(oom_and_crash_run)
    crash = recs["bf16/rm-watermark-bottle/0"]
    assert crash["status"] == "ERROR"
    assert "SIGSEGV" in crash["error"]
    assert "injected fault: segfault" in crash["stderr_tail"]
    # a fresh worker (attempt 1) finished the variant
    for case in THREE[1:]:
        assert recs[f"bf16/{case}/0"]["status"] == "OK"
        assert recs[f"bf16/{case}/0"]["attempt"] == 1


def test_records_carry_units_and_raw_values(oom_and_crash_run: Path) -> None:
    rec = _by_key(oom_and_crash_run)["fp32/rm-watermark-bottle/0"]
    assert rec["latency_s"] > 0 and len(rec["step_s"]) == 2
    # CPU run: VRAM figures absent (null), not zero; RSS present
    assert rec["peak_vram_bytes"] is None and rec["torch_peak_allocated_bytes"] is None
    assert rec["rss_peak_bytes"] > 100 * 2**20
    assert (oom_and_crash_run / rec["output_path"]).is_file()
    assert rec["output_finite"] is True
    # the seed is derived from the case id alone: the first 4 bytes of sha256("0:<case id>"), by hand
    import hashlib

    assert rec["seed"] == int(hashlib.sha256(b"0:rm-watermark-bottle").hexdigest()[:8], 16)
    recs = _by_key(oom_and_crash_run)
    other = recs["fp32/add-hat-chelsea/0"]["seed"]
    assert other == int(hashlib.sha256(b"0:add-hat-chelsea").hexdigest()[:8], 16) != rec["seed"]
    assert recs["bf16/add-hat-chelsea/0"]["seed"] == other, "same case, same seed in every variant"


def test_summary_matches_schema(oom_and_crash_run: Path) -> None:
    summary = json.loads((oom_and_crash_run / "summary.json").read_text())
    validate_summary(summary)
    for key in ("status_counts", "latency_p50_s", "latency_p95_s", "peak_vram_bytes", "peak_vram_process_bytes",
                "torch_peak_allocated_bytes", "torch_peak_reserved_bytes", "oom_rate", "weights_bytes"):
        assert key in summary["variants"]["fp32"]
    assert summary["fingerprint"]["case_set"]["fingerprint"].startswith("sha256:")
    assert summary["weights"]["model"] == "random (tiny)"
    broken = json.loads(json.dumps(summary))
    del broken["variants"]["fp32"]["oom_rate"]
    with pytest.raises(UserInputError, match="variants/fp32.*'oom_rate' is a required property"):
        validate_summary(broken)
    broken = json.loads(json.dumps(summary))
    broken["variants"]["fp32"]["peak_vram_bytes"] = -1
    with pytest.raises(UserInputError, match="variants/fp32/peak_vram_bytes"):
        validate_summary(broken)


def test_hang_exit_and_build_failure(write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite({"a": "fp32", "b": "fp32", "c": "bf16"}, select=THREE[:2], timeout=12)
    out = tmp_path / "out"
    code = _run(suite, out, monkeypatch, [
        {"variant": "a", "case": "rm-watermark-bottle", "fault": "hang"},
        {"variant": "b", "case": "txt-price-mug", "fault": "exit"},
        {"variant": "c", "case": "@build", "fault": "error"},
    ])
    assert code == 0
    recs = _by_key(out)
    assert recs["a/rm-watermark-bottle/0"]["status"] == "TIMEOUT"
    assert "case_timeout_s" in recs["a/rm-watermark-bottle/0"]["error"]
    assert recs["a/txt-price-mug/0"]["status"] == "OK"
    assert recs["b/rm-watermark-bottle/0"]["status"] == "OK"
    assert recs["b/txt-price-mug/0"]["status"] == "ERROR"
    assert "exited with code 3" in recs["b/txt-price-mug/0"]["error"]
    for case in THREE[:2]:
        assert recs[f"c/{case}/0"]["status"] == "ERROR"
        assert "injected fault" in recs[f"c/{case}/0"]["error"]
    assert Counter(r["status"] for r in recs.values()) == {"OK": 2, "TIMEOUT": 1, "ERROR": 3}


def test_resume_finishes_without_duplicates(write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite({"fp32": "fp32"}, select=THREE, repeats=2)
    out = tmp_path / "out"
    assert _run(suite, out, monkeypatch) == 0
    full = _by_key(out)
    # Simulate a kill: keep two records and a torn third line.
    lines = (out / "cases.jsonl").read_bytes().splitlines(keepends=True)
    (out / "cases.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:40])
    (out / "summary.json").unlink()
    assert _run(suite, out, monkeypatch, None) == 2, "an existing run needs --resume"
    assert _run(suite, out, monkeypatch, None, "--resume") == 0
    resumed = _by_key(out)
    assert set(resumed) == set(full)
    for key, rec in full.items():
        assert resumed[key]["seed"] == rec["seed"] and resumed[key]["status"] == rec["status"]
        assert resumed[key]["output_sha256"] == rec["output_sha256"], "deterministic on the CPU"


def test_resume_refuses_changed_suite(write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    suite = write_suite({"fp32": "fp32"}, select=THREE[:1])
    out = tmp_path / "out"
    assert _run(suite, out, monkeypatch) == 0
    before = (out / "cases.jsonl").read_bytes()
    suite.write_text(suite.read_text().replace("steps = 2", "steps = 3"))
    assert _run(suite, out, monkeypatch, None, "--resume") == 2
    assert "suite fingerprint changed" in capsys.readouterr().err
    assert (out / "cases.jsonl").read_bytes() == before, "nothing already written is damaged"


def test_size_override_reaches_the_worker_and_the_fingerprint(write_suite, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    suite = write_suite({"fp32": "fp32"}, select=THREE[:1])
    out = tmp_path / "out"
    assert _run(suite, out, monkeypatch, None, "--size", "48x32") == 0
    (rec,) = read_records(out / "cases.jsonl")
    assert (rec["output_width"], rec["output_height"]) == (48, 32)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["generation"]["width"], summary["generation"]["height"]) == (48, 32)
    # another size is another suite: resuming this run at 64x64 is refused
    before = (out / "cases.jsonl").read_bytes()
    assert _run(suite, out, monkeypatch, None, "--resume") == 2
    assert "suite fingerprint changed" in capsys.readouterr().err
    assert (out / "cases.jsonl").read_bytes() == before


def test_out_dir_that_is_a_file(write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    suite = write_suite()
    target = tmp_path / "file"
    target.write_text("keep me")
    assert _run(suite, target, monkeypatch) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_atomic_writes_replace_whole_files_with_the_users_permissions(tmp_path: Path) -> None:
    import os

    from qie_bench.results import atomic_write_json

    target = tmp_path / "summary.json"
    target.write_text("old")
    old_umask = os.umask(0o022)
    try:
        atomic_write_json(target, {"a": 1.5})
    finally:
        os.umask(old_umask)
    assert json.loads(target.read_text()) == {"a": 1.5}
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left

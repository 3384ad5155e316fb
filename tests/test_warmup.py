"""Warm-up edits: before each case's first repeat, and before the first timed edit of every worker
process whatever its repeat, so a restarted or resumed worker never times a cold edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from qie_bench.cli import main
from qie_bench.results import read_records

pytestmark = pytest.mark.slow

CASE = "rm-watermark-bottle"


def test_a_resumed_worker_warms_up_before_its_first_timed_edit(write_suite, tmp_path: Path) -> None:
    suite = write_suite({"fp32": "fp32"}, select=[CASE], repeats=2, metrics="names = [\"psnr\"]\nweights = \"random\"")
    suite.write_text(suite.read_text().replace("warmup_runs = 0", "warmup_runs = 1"))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0
    first = {r["key"]: r for r in read_records(out / "cases.jsonl")}
    # One worker: the case's first repeat is warmed up, the second follows a warm edit.
    assert first[f"fp32/{CASE}/0"]["warmup_edits"] == 1
    assert first[f"fp32/{CASE}/1"]["warmup_edits"] == 0

    # A kill after repeat 0: the resumed worker's first item is repeat 1, and it starts cold.
    lines = (out / "cases.jsonl").read_bytes().splitlines(keepends=True)
    keep = [ln for ln in lines if f"fp32/{CASE}/0".encode() in ln]
    (out / "cases.jsonl").write_bytes(b"".join(keep))
    (out / "summary.json").unlink()
    assert main(["run", str(suite), "--out", str(out), "--resume", "--no-progress"]) == 0
    resumed = {r["key"]: r for r in read_records(out / "cases.jsonl")}
    assert resumed[f"fp32/{CASE}/0"]["warmup_edits"] == 1  # kept from the first run
    assert resumed[f"fp32/{CASE}/1"]["warmup_edits"] == 1, "the resumed worker warmed up before repeat 1"
    assert resumed[f"fp32/{CASE}/1"]["status"] == "OK"


def test_no_warm_up_when_the_suite_asks_for_none(write_suite, tmp_path: Path) -> None:
    suite = write_suite({"fp32": "fp32"}, select=[CASE], repeats=1, metrics="names = [\"psnr\"]\nweights = \"random\"")
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0
    [rec] = read_records(out / "cases.jsonl")
    assert rec["warmup_edits"] == 0

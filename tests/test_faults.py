"""Fault injection: kill a real `qie-bench run` at random moments, resume it, and compare
with a clean run. Marked `faults`: `pytest -m faults` runs them alone.

The default test run uses a few kill points; `QIE_BENCH_KILL_POINTS=24 pytest -m faults`
runs the full set (half SIGKILL, half SIGTERM).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qie_bench.results import read_records

pytestmark = [pytest.mark.faults, pytest.mark.slow]

KILL_POINTS = int(os.environ.get("QIE_BENCH_KILL_POINTS", "4"))
DETERMINISTIC = ("key", "variant", "case_id", "repeat", "seed", "status", "output_sha256", "output_width")


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "qie_bench.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)


def _final(out: Path) -> dict[str, dict]:
    records = read_records(out / "cases.jsonl")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), f"duplicated records in {out}"
    return {r["key"]: {k: r.get(k) for k in DETERMINISTIC} for r in records}


def test_kill_and_resume_loses_and_duplicates_nothing(write_suite, tmp_path: Path) -> None:
    suite = write_suite({"fp32": "fp32", "bf16": "bf16"}, select=["rm-watermark-bottle", "add-mug-table"], repeats=2)
    clean_out = tmp_path / "clean"
    t0 = time.monotonic()
    proc = _cli("run", str(suite), "--out", str(clean_out), "--no-progress")
    assert proc.wait() == 0, proc.stderr.read().decode()
    clean_s = time.monotonic() - t0
    clean = _final(clean_out)
    assert len(clean) == 8

    rng = random.Random(20261121)
    outcomes = []
    for point in range(KILL_POINTS):
        sig = signal.SIGKILL if point % 2 == 0 else signal.SIGTERM
        delay = rng.uniform(0.5, clean_s)
        out = tmp_path / f"kill{point}"
        proc = _cli("run", str(suite), "--out", str(out), "--no-progress")
        time.sleep(delay)
        proc.send_signal(sig)
        code = proc.wait()
        before = len(read_records(out / "cases.jsonl")) if (out / "cases.jsonl").exists() else 0
        if code == 0:  # finished before the signal: nothing to resume
            outcomes.append((sig.name, round(delay, 1), "finished", before))
        else:
            # 143: SIGTERM handled (the run stops cleanly); -SIGTERM: it came while Python was still
            # starting, before the handler existed (nothing written yet); -SIGKILL: killed outright.
            assert code in (-signal.SIGKILL, -signal.SIGTERM, 143), (sig, code, proc.stderr.read().decode()[-2000:])
            resume = _cli("run", str(suite), "--out", str(out), "--no-progress", "--resume")
            assert resume.wait() == 0, resume.stderr.read().decode()[-3000:]
            outcomes.append((sig.name, round(delay, 1), f"killed with {before}/8 recorded", code))
        print(point, *outcomes[-1], flush=True)
        assert _final(out) == clean, f"kill point {point} ({sig.name} after {delay:.1f}s)"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["complete"] and summary["recorded_items"] == 8
    print("\n".join(map(str, outcomes)))

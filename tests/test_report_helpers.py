"""Shared by the report tests: one real tiny run per test session, and test-only edits of copies.

The run is the tiny random-weight pipeline on the CPU over 3 cases (two single-image cases and
one with several input images) x 2 variants, through `qie_bench.cli.main(["run", ...])`. It is
made once per session and cached under pytest's base temp folder, so test modules that import
the fixture share it.

Every `edit_*` helper alters a COPY of that run for a test (a different hardware class, a
different case-set fingerprint, a failed case). Such copies are test-only alterations of real
result files; nothing here is a way to produce results.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CASES, TINY_SUITE, VARIANT

from qie_bench.cli import main

SELECT = ["rm-watermark-bottle", "txt-price-mug", "add-bottle-mug-table"]
METRICS = 'names = ["ssim_vs_baseline", "psnr_vs_baseline", "ssim", "psnr"]\nweights = "real"'
H100 = "NVIDIA H100 80GB HBM3"


def write_report_suite(path: Path) -> Path:
    text = TINY_SUITE.format(name="report-test", baseline="fp32", cases=CASES.as_posix(),
                             select=json.dumps(SELECT), steps=2, repeats=1, timeout=120, metrics=METRICS)
    text += VARIANT.format(name="fp32", dtype="fp32") + VARIANT.format(name="bf16", dtype="bf16")
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp() / "report-tiny-run"
    run = base / "run"
    if (run / "summary.json").is_file():
        return run
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    suite = write_report_suite(base / "report-test.toml")
    assert main(["run", str(suite), "--out", str(run), "--no-progress"]) == 0
    return run


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2))


def edit_records(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for rec in lines:
        change(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def as_gpu_run(run: Path, gpu_name: str = H100, *, on_device: bool = True) -> None:
    """TEST-ONLY: relabel a CPU run as a run on `gpu_name` (hardware class and, with
    `on_device`, the variants' device), so reports treat it as another GPU's run."""

    def env(s: dict[str, Any]) -> None:
        e = s["fingerprint"]["environment"]
        e["hardware_class"] = f"gpu:{gpu_name}"
        e["gpu_name"] = gpu_name
        if on_device:
            e["device"] = "cuda:0"
            for v in s["variants"].values():
                if v.get("build"):
                    v["build"]["device"] = "cuda:0"

    edit_json(run / "summary.json", env)
    if on_device:
        for p in (run / "variants").glob("*.build.json"):
            edit_json(p, lambda b: b.update(device="cuda:0"))

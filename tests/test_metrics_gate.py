"""The gate refuses to compare metric values recorded under different conventions (issue 14 item 9).

Runs are drawn from the gate's seeded noise model (tests/gate_fixtures.py) and given the
metric descriptions a real scorer records; the baseline is promoted with the real command.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gate_fixtures import gate, make_world, no_fsync, promote, write_run

from qie_bench.gate.compare import metric_convention_problems
from qie_bench.gate.rundata import load_run
from qie_bench.metrics import MetricsConfig, Scorer, to_json_value

SKIMAGE_CONVENTION = "scikit-image: map cropped by the window radius, interior averaged"


@pytest.fixture(scope="module", autouse=True)
def _fast_writes() -> Iterator[None]:
    with no_fsync():
        yield


@pytest.fixture(scope="module")
def descriptions() -> dict[str, Any]:
    """What a run records today for the gated pixel metrics (from the real scorer)."""
    scorer = Scorer(MetricsConfig(names=("ssim", "ssim_vs_baseline", "psnr")))
    return to_json_value(scorer.describe())


def _with_descriptions(run_dir: Path, descriptions: dict[str, Any]) -> Path:
    """Put `descriptions` where the orchestrator records them: each variant's build info in summary.json."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    for variant in summary["variants"].values():
        variant["build"] = {"kind": "dtype", "metric_descriptions": descriptions}
    path.write_text(json.dumps(summary))
    return run_dir


def _changed(descriptions: dict[str, Any], name: str, convention: str | None, *, drop: bool = False) -> dict[str, Any]:
    out = json.loads(json.dumps(descriptions))
    if drop:
        del out[name]["convention"]
    else:
        out[name]["convention"] = convention
    return out


@pytest.fixture(scope="module")
def baseline(descriptions: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conv")
    run = _with_descriptions(write_run(root / "run", make_world(), seed=1), descriptions)
    path = root / "baseline.json"
    assert promote(run, path) == 0
    return path


def test_same_convention_is_compared(descriptions: dict[str, Any], baseline: Path, tmp_path: Path) -> None:
    run = _with_descriptions(write_run(tmp_path / "rerun", make_world(), seed=2), descriptions)
    assert gate(run, baseline) == 0


def test_ssim_of_another_convention_is_not_comparable(descriptions: dict[str, Any], baseline: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other = _changed(descriptions, "ssim_vs_baseline", SKIMAGE_CONVENTION)
    run = _with_descriptions(write_run(tmp_path / "skimage", make_world(), seed=2), other)
    assert gate(run, baseline) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and "ssim_vs_baseline convention" in err
    assert descriptions["ssim_vs_baseline"]["convention"] in err and SKIMAGE_CONVENTION in err
    assert "ssim convention" not in err  # ssim itself was recorded the same way on both sides


def test_a_side_that_recorded_no_convention_is_not_comparable(descriptions: dict[str, Any], tmp_path: Path) -> None:
    """A baseline written before conventions were recorded cannot show its SSIM was computed the
    same way (ssim_outside_mask changed definition): refused, with the reason. PSNR, whose
    convention is None, stays comparable with a description that lacks the key."""
    old = _changed(_changed(descriptions, "ssim", None, drop=True), "psnr", None, drop=True)
    base = load_run(_with_descriptions(write_run(tmp_path / "old", make_world(), seed=1), old))
    run = load_run(_with_descriptions(write_run(tmp_path / "new", make_world(), seed=2), descriptions))
    problems = metric_convention_problems(base, run)
    assert [p[0] for p in problems] == ["ssim convention"]
    assert "baseline recorded no convention" in problems[0][3]
    assert [p[0] for p in metric_convention_problems(run, base)] == ["ssim convention"]
    assert "run recorded no convention" in metric_convention_problems(run, base)[0][3]


def test_a_side_without_descriptions_is_not_refused(descriptions: dict[str, Any], tmp_path: Path) -> None:
    """No metric described on one side (build info null, as in simulated runs): nothing to compare."""
    bare = load_run(write_run(tmp_path / "bare", make_world(), seed=1))
    described = load_run(_with_descriptions(write_run(tmp_path / "new", make_world(), seed=2),
                                            _changed(descriptions, "ssim", SKIMAGE_CONVENTION)))
    assert metric_convention_problems(bare, described) == [] and metric_convention_problems(described, bare) == []

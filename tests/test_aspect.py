"""Outputs at the source's aspect ratio ([generation] area), and every resized score said so.

The size rule itself and the shipped suites are tested in test_suite.py; here: the tiny pipeline
really makes a non-square case at its own size, and the record of a score that compared a resized
output says how it was resized (scored_output_resized), down to the report's gallery.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from qie_bench.cli import main
from qie_bench.results import RunDir, read_records
from qie_bench.results.records import Record
from qie_bench.results.scores import UNRECORDED_RESIZE, apply_scores, read_scores

ROOT = Path(__file__).resolve().parent.parent
EDIT_V1 = ROOT / "suites" / "cases" / "edit-v1"
EDIT_V3 = ROOT / "suites" / "cases" / "edit-v3"  # edit-v2's cases and three chains


@pytest.mark.slow
def test_non_square_cases_and_chain_turns_are_made_at_their_aspect_ratio_and_resized_scores_say_so(tmp_path: Path) -> None:
    from conftest import TINY_SUITE, VARIANT

    text = TINY_SUITE.format(name="aspect", baseline="fp32", cases=EDIT_V3.as_posix(),
                             select='["add-hat-chelsea", "chain-coffee-zh"]',
                             steps=1, repeats=1, timeout=120, metrics='names = ["psnr", "ssim"]\nweights = "random"')
    assert "width = 64\nheight = 64\n" in text
    suite = tmp_path / "aspect.toml"
    suite.write_text(text.replace("width = 64\nheight = 64\n", "area = 4096\n") + VARIANT.format(name="fp32", dtype="fp32"))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0

    records = {r["case_id"] + (f"@t{r['turn']}" if r.get("turn") else ""): r for r in read_records(out / "cases.jsonl")}
    assert list(records) == ["add-hat-chelsea", *(f"chain-coffee-zh@t{k}" for k in range(1, 5))]
    assert all(r["status"] == "OK" for r in records.values()), records
    raw = records["add-hat-chelsea"]
    # chelsea is 451x300 (ratio 1.503). By hand: width = sqrt(4096 * 1.503) = 78.5 -> 4.9 x 16 = 80,
    # height = 78.5 / 1.503 = 52.2 -> 3.3 x 16 = 48; 80 vs 48 * 1.503 = 72.2: within one 16-px step.
    W, H = 451, 300
    w, h = raw["output_width"], raw["output_height"]
    assert (w, h) == (80, 48)
    assert abs(w - h * W / H) <= 16
    assert Image.open(out / raw["output_path"]).size == (80, 48)  # the pipeline made what the record says

    # a chain (512x341, ratio 1.501: also 80x48 by the same arithmetic): each turn edits the previous
    # turn's 80x48 output and is made at the size of the first, from the chain's original
    for k in range(1, 5):
        assert (records[f"chain-coffee-zh@t{k}"]["output_width"], records[f"chain-coffee-zh@t{k}"]["output_height"]) == (80, 48)

    note = "vs source: output resized from 80x48 to 451x300 (PIL bicubic)"
    assert read_scores(out)[raw["key"]]["scored_output_resized"] == note
    by_case = {r.case_id + (f"@t{r.turn}" if r.turn else ""): r for r in RunDir.load(out).records}
    record = by_case["add-hat-chelsea"]
    assert record.scored_output_resized == note and record.metric("psnr") is not None
    assert by_case["chain-coffee-zh@t3"].scored_output_resized == "vs source: output resized from 80x48 to 512x341 (PIL bicubic)"
    assert json.loads((out / "summary.json").read_text())["generation"]["area"] == 4096

    from qie_bench.report.data import build_report_data
    from qie_bench.report.gallery import build_gallery

    rows = {row.case_id: row for row in build_gallery(build_report_data([out])).rows}
    assert "scored resized 80x48→451x300" in rows["add-hat-chelsea"].outputs[0].lines


@pytest.mark.parametrize(("size", "resized"), [((512, 512), None),
                                                ((128, 128), "vs source: output resized from 128x128 to 512x512 (PIL bicubic)")])
def test_the_scoring_child_reports_a_resize_and_only_a_resize(tmp_path: Path, size: tuple[int, int],
                                                              resized: str | None) -> None:
    from qie_bench.cases import load_case_set
    from qie_bench.metrics.config import MetricsConfig
    from qie_bench.metrics.scorer import Scorer
    from qie_bench.runner.scoring import _score_one

    case = load_case_set(EDIT_V1, check_images=False).get("rm-watermark-bottle")  # 512x512 source
    (tmp_path / "images").mkdir()
    Image.new("RGB", size, (90, 120, 150)).save(tmp_path / "images" / "o.png")
    scorer = Scorer(MetricsConfig(names=("psnr",), weights="random"))
    values, _details, note = _score_one(scorer, case, tmp_path, {"key": "v/c/0", "output_path": "images/o.png"})
    assert values["psnr"] is not None and note == resized


def _record(**extra: object) -> Record:
    return Record(key="v/c/0", variant="v", case_id="c", repeat=0, status="OK", output_sha256="sha256:a", **extra)


def test_records_take_the_resize_from_their_score_line() -> None:
    line = {"key": "v/c/0", "output_sha256": "sha256:a", "metrics": {"psnr": 20.0}}
    resized = "vs source: output resized from 160x112 to 451x300 (PIL bicubic)"
    (r,) = apply_scores([_record()], {"v/c/0": {**line, "scored_output_resized": resized}})
    assert r.scored_output_resized == resized
    (r,) = apply_scores([_record()], {"v/c/0": {**line, "scored_output_resized": None}})
    assert r.scored_output_resized is None  # compared at its own size
    # a score line from before the field: not "not resized", but unknown
    (r,) = apply_scores([_record()], {"v/c/0": line})
    assert r.scored_output_resized == UNRECORDED_RESIZE

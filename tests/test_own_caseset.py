"""A team's own case set: its own categories, a Chinese target caption and an expected text, run
through the smoke suite's settings; and what CLIP-Score does with a caption it cannot read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qie_bench.cases import load_case_set
from qie_bench.metrics import MetricsConfig, Scorer, ScoreInputs
from qie_bench.results import RunDir
from qie_bench.runner.orchestrator import Orchestrator, make_plan
from qie_bench.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "suites" / "cases" / "edit-v2"

CASES = [
    {
        "id": "logo-new-box",
        "category": "logo-swap",
        "language": "zh",
        "instruction": "把贴纸上的“NEW”换成品牌字样“新品上市”，其余不变。",
        "target_caption": "蓝色礼盒上的白色贴纸写着新品上市",
        "expected_text": "新品上市",
        "images": ["images/box_label.png"],
        "mask": "masks/box_label.png",
        "source": "copied from edit-v2",
    },
    {
        "id": "wm-bottle",
        "category": "watermark",
        "language": "en",
        "instruction": "Remove the diagonal watermark and restore the bottle underneath.",
        "target_caption": "a clean product photo of a green glass water bottle on a beige background",
        "images": ["images/bottle_watermark.png"],
        "mask": "masks/bottle_watermark.png",
        "source": "copied from edit-v2",
    },
]


def write_team_set(root: Path) -> Path:
    for case in CASES:
        for rel in [*case["images"], case["mask"]]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHIPPED / rel, root / rel)
    (root / "cases.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in CASES), "utf-8")
    return root


def test_team_set_validates(tmp_path: Path) -> None:
    loaded = load_case_set(write_team_set(tmp_path / "team-v1"))
    assert loaded.categories() == ("logo-swap", "watermark")
    assert loaded.get("logo-new-box").target_caption == "蓝色礼盒上的白色贴纸写着新品上市"
    assert loaded.get("logo-new-box").expected_text == "新品上市"


def test_clip_score_skips_a_caption_that_is_not_english() -> None:
    scorer = Scorer(MetricsConfig(names=["clip_score"], weights="random"))
    image = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    chinese = scorer.score_detailed(ScoreInputs(output=image, source=image, caption="一个绿色的瓶子"))[0]["clip_score"]
    assert chinese.value is None
    assert chinese.reason == "target caption is not English (CLIP's text encoder reads English only)"
    english = scorer.score_detailed(ScoreInputs(output=image, source=image, caption="a green bottle"))[0]["clip_score"]
    assert english.value is not None and english.reason is None


@pytest.mark.slow
def test_team_set_runs_through_the_smoke_settings(tmp_path: Path) -> None:
    """The smoke suite (tiny model, all default metrics, random metric weights) with only its
    fp32 variant, over the team's set: one case per category."""
    team = write_team_set(tmp_path / "team-v1")
    text = (ROOT / "suites" / "smoke.toml").read_text()
    text = text[: text.index("[[variants]]", text.index('name = "fp32"') - 40)]  # up to the fp32 variant
    text = text.replace('path = "cases/edit-v3"', f'path = "{team.as_posix()}"')
    text += '[[variants]]\nname = "fp32"\nkind = "dtype"\ndtype = "fp32"\n'
    suite_path = tmp_path / "team.toml"
    suite_path.write_text(text)
    suite = load_suite(suite_path)
    assert [v.name for v in suite.variants] == ["fp32"] and suite.model.source == "tiny"

    out = tmp_path / "run"
    summary = Orchestrator(make_plan(suite), out).run()

    assert summary["variants"]["fp32"]["status_counts"]["OK"] == 2
    # the scoring phase's scores, merged into the records as every reader sees them
    records = {r.case_id: r.model_dump() for r in RunDir.load(out).records}
    logo, wm = records["logo-new-box"], records["wm-bottle"]
    assert logo["metrics"]["clip_score"] is None  # Chinese caption: not scored
    assert isinstance(wm["metrics"]["clip_score"], float)
    # OCR ran on the text case (random edit weights: whatever it read, it is kept)
    assert 0.0 <= logo["metrics"]["text_accuracy"] <= 1.0
    assert logo["metrics"]["text_found"] in (0.0, 1.0)
    detail = logo["metric_details"]["text_accuracy"]
    assert detail["expected"] == "新品上市" and isinstance(detail["recognised"], list)
    assert wm["metrics"]["text_accuracy"] is None and not wm.get("metric_details")
    for record in (logo, wm):
        assert 0.0 <= record["metrics"]["change_inside_mask"] <= 1.0
        assert 0.0 <= record["metrics"]["change_outside_mask"] <= 1.0
        assert record["metrics"]["change_ratio"] is not None

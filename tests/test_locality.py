"""Edit locality: change inside / outside the mask and their ratio, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from qie_bench.metrics import MetricsConfig, Scorer, ScoreInputs

NAMES = ("change_inside_mask", "change_outside_mask", "change_ratio")


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(MetricsConfig(names=list(NAMES), weights="random"))


def rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array.astype(np.uint8), "RGB")


def top_left_mask() -> np.ndarray:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # 4 pixels inside, 12 outside
    return mask


def results(scorer: Scorer, output: Image.Image, source: Image.Image, mask: np.ndarray | None) -> dict:
    return scorer.score_detailed(ScoreInputs(output=output, source=source, mask=mask))[0]


def test_hand_computed_values(scorer: Scorer) -> None:
    source = np.zeros((4, 4, 3), np.uint8)
    output = source.copy()
    output[:2, :2, 0] = 51  # inside: red +51 on all 4 pixels -> (51/255)/3 per pixel
    output[3, 3] = 255  # outside: one of 12 pixels fully changed -> 1/12
    values = {k: r.value for k, r in results(scorer, rgb(output), rgb(source), top_left_mask()).items()}
    assert values["change_inside_mask"] == pytest.approx(0.2 / 3)
    assert values["change_outside_mask"] == pytest.approx(1 / 12)
    assert values["change_ratio"] == pytest.approx((0.2 / 3) / (1 / 12))  # 0.8


def test_matches_a_plain_numpy_reference(scorer: Scorer) -> None:
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (37, 53, 3))
    output = np.clip(source + rng.integers(-40, 41, source.shape), 0, 255)
    mask = rng.random((37, 53)) < 0.3
    diff = np.abs(output / 255.0 - source / 255.0)  # H x W x 3
    inside, outside = diff[mask].mean(), diff[~mask].mean()
    values = {k: r.value for k, r in results(scorer, rgb(output), rgb(source), mask).items()}
    assert values["change_inside_mask"] == pytest.approx(inside, rel=1e-12)
    assert values["change_outside_mask"] == pytest.approx(outside, rel=1e-12)
    assert values["change_ratio"] == pytest.approx(inside / outside, rel=1e-12)


def test_did_nothing_and_edited_only_inside(scorer: Scorer) -> None:
    source = np.full((4, 4, 3), 100, np.uint8)
    nothing = results(scorer, rgb(source), rgb(source), top_left_mask())
    assert nothing["change_inside_mask"].value == 0.0 and nothing["change_outside_mask"].value == 0.0
    assert nothing["change_ratio"].value is None
    assert nothing["change_ratio"].reason == "output identical to the source: nothing changed (0/0)"
    only_inside = source.copy()
    only_inside[:2, :2] = 0
    local = results(scorer, rgb(only_inside), rgb(source), top_left_mask())
    assert local["change_inside_mask"].value == pytest.approx(100 / 255)
    assert local["change_outside_mask"].value == 0.0
    assert local["change_ratio"].value == math.inf  # perfectly local


def test_edited_everywhere(scorer: Scorer) -> None:
    source = np.full((4, 4, 3), 100, np.uint8)
    values = {k: r.value for k, r in results(scorer, rgb(source + 51), rgb(source), top_left_mask()).items()}
    assert values == pytest.approx({"change_inside_mask": 0.2, "change_outside_mask": 0.2, "change_ratio": 1.0})


def test_output_is_compared_at_the_source_size(scorer: Scorer) -> None:
    source = np.full((4, 4, 3), 100, np.uint8)
    output = rgb(np.full((8, 8, 3), 151, np.uint8))  # constant, so the bicubic resize is exact
    row, notes = scorer.score_detailed(ScoreInputs(output=output, source=rgb(source), mask=top_left_mask()))
    assert row["change_inside_mask"].value == pytest.approx(0.2)
    assert any("resized from 8x8 to 4x4" in note for note in notes)


def test_missing_or_degenerate_mask(scorer: Scorer) -> None:
    image = rgb(np.zeros((4, 4, 3)))
    for name, result in results(scorer, image, image, None).items():
        assert (result.value, result.reason) == (None, "case has no mask"), name
    everything = results(scorer, image, image, np.ones((4, 4), bool))
    assert everything["change_inside_mask"].value == 0.0
    for name in ("change_outside_mask", "change_ratio"):
        assert everything[name].reason == "mask covers the whole image: no pixel outside it"
    nothing = results(scorer, image, image, np.zeros((4, 4), bool))
    assert nothing["change_outside_mask"].value == 0.0
    for name in ("change_inside_mask", "change_ratio"):
        assert nothing[name].reason == "mask is empty: no pixel inside it"


def test_declarations(scorer: Scorer) -> None:
    described = scorer.describe()
    assert {n: described[n]["direction"] for n in NAMES} == {
        "change_inside_mask": "higher", "change_outside_mask": "lower", "change_ratio": "higher"}
    assert {n: described[n]["region"] for n in NAMES} == {
        "change_inside_mask": "inside_mask", "change_outside_mask": "outside_mask",
        "change_ratio": "inside_and_outside_mask"}
    assert tuple(described["change_ratio"]["range"]) == (0.0, math.inf)
    assert all(described[n]["weights"] == "none" and described[n]["reference"] == "source" for n in NAMES)

"""text_accuracy / text_found: the matching rules by hand, then real OCR (the PP-OCRv4 models
bundled in the rapidocr-onnxruntime wheel) on text rendered with real fonts: Latin with Pillow's
bundled font, Chinese with Noto Sans CJK (Debian's fonts-noto-cjk; skipped without it)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from qie_bench.cli import main
from qie_bench.metrics import MetricsConfig, Scorer, ScoreInputs
from qie_bench.metrics.catalog.text_accuracy import (
    best_match,
    crop_box,
    levenshtein,
    normalize_text,
    ocr_engine,
    similarity,
)

# -- matching rules, hand-computed ----------------------------------------------------------


def test_normalize_text() -> None:
    assert normalize_text("  Monday\tMOOD \n") == "mondaymood"  # case and every whitespace
    assert normalize_text("＄１４．９９") == "$14.99"  # full-width forms (NFKC)
    assert normalize_text("年终　大促") == "年终大促"  # ideographic space
    assert normalize_text("$14.99") != normalize_text("1499")  # punctuation is kept


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("flaw", "lawn", 2), ("新品上市", "新品", 2),
     ("年终大促", "年博大奖", 2), ("same", "same", 0)],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_similarity() -> None:
    assert similarity("launchnight", "launchnlght") == pytest.approx(1 - 1 / 11)
    assert similarity("新品", "新品上市") == pytest.approx(1 - 2 / 4)  # extra text in one line costs
    assert similarity("abc", "xyz") == 0.0
    assert similarity("", "") == 1.0


def test_best_match_over_runs_of_lines() -> None:
    # a title split over two lines counts; an unrelated line before it does not
    m = best_match("LAUNCH NIGHT", ["SpaceX", "LAUNCH", "NIGHT"])
    assert (m.accuracy, m.found, m.best) == (1.0, True, "LAUNCH NIGHT")
    m = best_match("Monday mood", ["Mondaymood"])
    assert (m.accuracy, m.found) == (1.0, True)
    m = best_match("Monday mood", ["Monday mood 2026"])  # 14 vs 10 characters: 4 extra
    assert m.accuracy == pytest.approx(1 - 4 / 14) and m.found
    m = best_match("$14.99", ["$14.98"])
    assert m.accuracy == pytest.approx(1 - 1 / 6) and not m.found
    m = best_match("新品上市", ["新品"])
    assert m.accuracy == pytest.approx(0.5) and not m.found and m.best == "新品"
    m = best_match("NewLife", [])
    assert (m.accuracy, m.found, m.best) == (0.0, False, None)
    with pytest.raises(ValueError, match="empty"):
        best_match("  ", ["x"])


def test_best_match_equals_brute_force() -> None:
    """The early stop in best_match never changes the result: compare with every run, no pruning."""
    rng = np.random.default_rng(0)
    alphabet = list("ab新品$1 ")
    for _ in range(300):
        expected = "".join(rng.choice(alphabet[:-1], size=rng.integers(1, 6)))
        lines = ["".join(rng.choice(alphabet, size=rng.integers(0, 7))) for _ in range(rng.integers(0, 6))]
        runs = ["".join(normalize_text(x) for x in lines[i : j + 1]) for i in range(len(lines)) for j in range(i, len(lines))]
        target = normalize_text(expected)
        brute = max((similarity(target, r) for r in runs), default=0.0)
        m = best_match(expected, lines)
        assert m.accuracy == pytest.approx(brute), (expected, lines)
        assert m.found == any(target in r for r in runs)


def test_crop_box_pads_the_mask_bounds() -> None:
    mask = np.zeros((100, 200), bool)
    mask[40:60, 50:150] = True  # 100 x 20 box: pad 10 px across, max(4, 2) = 4 px down
    assert crop_box(mask) == (40, 36, 160, 64)
    mask[:] = False
    mask[0:3, 195:200] = True  # at the corner: clipped to the image
    assert crop_box(mask) == (191, 0, 200, 7)


# -- real OCR on rendered text ----------------------------------------------------------------

CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
)


def cjk_font(size: int) -> ImageFont.FreeTypeFont:
    """Noto Sans CJK from Debian's fonts-noto-cjk (or any font fontconfig lists for Chinese)."""
    paths = [p for p in CJK_FONTS if Path(p).exists()]
    if not paths and shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, check=False).stdout
        paths = sorted(line.split(":")[0].strip() for line in listed.splitlines() if line.strip())
    if not paths:
        pytest.skip("no Chinese font: install Debian's fonts-noto-cjk (apt-get install fonts-noto-cjk)")
    return ImageFont.truetype(paths[0], size)


def latin_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Aileron, bundled with Pillow


def background(width: int = 320, height: int = 160, seed: int = 0) -> Image.Image:
    """A beige studio-like gradient with sensor noise: not a blank page."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    bg = np.array([225, 215, 190]) * (1 - y) + np.array([180, 170, 150]) * y + rng.normal(0, 3, (height, width, 3))
    return Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))


def render(base: Image.Image, text: str, font: ImageFont.FreeTypeFont, xy: tuple[int, int] = (40, 50)) -> tuple[Image.Image, tuple[int, int, int, int]]:
    image = base.copy()
    draw = ImageDraw.Draw(image)
    draw.text(xy, text, font=font, fill=(40, 30, 90))
    return image, draw.textbbox(xy, text, font=font)


def cover_right(image: Image.Image, bbox: tuple[int, int, int, int], fraction: float) -> Image.Image:
    """Paint over the right ``fraction`` of the text's box, as a sticker would."""
    left, top, right, bottom = bbox
    covered = image.copy()
    ImageDraw.Draw(covered).rectangle([left + (right - left) * (1 - fraction), top - 4, right + 4, bottom + 4], fill=(200, 190, 170))
    return covered


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    # weights="random" on purpose: OCR always uses its bundled real weights
    return Scorer(MetricsConfig(names=["text_accuracy", "text_found"], weights="random"))


def score(scorer: Scorer, output: Image.Image, text: str, source: Image.Image | None = None, mask: np.ndarray | None = None) -> tuple[dict, dict]:
    return scorer.score_with_details(ScoreInputs(output=output, source=source if source is not None else output, mask=mask, expected_text=text))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_clean_blurred_covered_and_absent_text(scorer: Scorer, language: str) -> None:
    text, font = ("NewLife", latin_font(40)) if language == "en" else ("新品上市", cjk_font(40))
    base = background()
    clean, bbox = render(base, text, font)

    values, details = score(scorer, clean, text, source=base)
    assert values == {"text_accuracy": 1.0, "text_found": 1.0}
    assert details["text_accuracy"]["recognised"] == [text] and details["text_accuracy"]["best_match"] == text
    assert details["text_accuracy"]["region"] == "whole output"

    blurred, _ = score(scorer, clean.filter(ImageFilter.GaussianBlur(1.5)), text)  # still readable
    assert blurred["text_accuracy"] >= 0.9

    # half of the text painted over: partial credit, not found
    half, half_details = score(scorer, cover_right(clean, bbox, 0.5), text)
    assert 0.25 <= half["text_accuracy"] <= 0.75 and half["text_found"] == 0.0
    assert 0 < len(half_details["text_accuracy"]["best_match"]) < len(text)

    # the same picture without the text
    absent, absent_details = score(scorer, base, text)
    assert absent["text_accuracy"] <= 0.3 and absent["text_found"] == 0.0
    assert absent_details["text_accuracy"]["recognised"] == []


def test_heavy_blur_scores_lower(scorer: Scorer) -> None:
    clean, _ = render(background(), "NewLife", latin_font(40))
    unreadable, _ = score(scorer, clean.filter(ImageFilter.GaussianBlur(5)), "NewLife")
    assert unreadable["text_accuracy"] < 0.5 and unreadable["text_found"] == 0.0


def test_only_the_text_inside_the_mask_counts(scorer: Scorer) -> None:
    """With a mask, the padded mask box of the output is read: the expected text elsewhere in the
    picture does not count, and other text outside the box does not count against it."""
    base = background(480, 200)
    font = latin_font(36)
    mask = np.zeros((200, 480), bool)
    mask[110:170, 240:460] = True
    inside, _ = render(base, "NewLife", font, (260, 120))
    inside, _ = render(inside, "SUMMER SALE", font, (20, 20))  # outside the box
    outside, _ = render(base, "NewLife", font, (20, 20))
    values, details = score(scorer, inside, "NewLife", source=base, mask=mask)
    assert values == {"text_accuracy": 1.0, "text_found": 1.0}
    assert details["text_accuracy"]["recognised"] == ["NewLife"]
    assert details["text_accuracy"]["region"] == [218, 104, 480, 176]  # pad 22 px across (clipped at 480), 6 px down
    values, _ = score(scorer, outside, "NewLife", source=base, mask=mask)
    assert values == {"text_accuracy": 0.0, "text_found": 0.0}


def test_small_output_is_read_at_the_source_size(scorer: Scorer) -> None:
    """A 128x128 output of a 512x512 source (the smoke suite's size) is resized to the source
    before the mask box is cropped; text a few pixels high is still read."""
    source = background(512, 512)
    mask = np.zeros((512, 512), bool)
    mask[400:500, 100:420] = True
    edited, _ = render(source, "$14.99", latin_font(64), (140, 410))
    values, details = score(scorer, edited.resize((128, 128), Image.Resampling.BICUBIC), "$14.99", source=source, mask=mask)
    assert values["text_accuracy"] >= 0.8, details


def test_without_expected_text_is_null_with_reason(scorer: Scorer) -> None:
    image = background()
    results, _ = scorer.score_detailed(ScoreInputs(output=image, source=image))
    for name in ("text_accuracy", "text_found"):
        assert results[name].value is None and results[name].reason == "case has no expected text"
        assert results[name].detail is None


def test_description_says_the_weights_are_real_and_bundled(scorer: Scorer) -> None:
    for name, info in scorer.describe().items():
        assert info["weights"] == "real", name
        assert info["weights_source"].startswith("rapidocr-onnxruntime 1.4.4 bundled PP-OCRv4")
        assert info["reference"] == "expected_text" and info["direction"] == "higher"
        assert tuple(info["range"]) == (0.0, 1.0) and info["version"] == "1.4.4"


def test_engine_is_loaded_once_for_both_metrics() -> None:
    ocr_engine.cache_clear()
    Scorer(MetricsConfig(names=["text_accuracy", "text_found"], weights="random"))
    assert ocr_engine.cache_info().misses == 1


@pytest.mark.parametrize(("text", "language"), [("NewLife", "en"), ("新品上市", "zh")])
def test_cli_done_when(text: str, language: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`qie-bench score --expected-text TEXT --metrics text_accuracy --json`: >= 0.9 with the text
    rendered in the image, <= 0.3 on the same image without it."""
    font = latin_font(48) if language == "en" else cjk_font(48)
    base = background(384, 256, seed=1)
    with_text, _ = render(base, text, font, (60, 100))
    base.save(tmp_path / "source.png")
    with_text.save(tmp_path / "with.png")
    got = {}
    for name in ("with", "source"):
        argv = ["score", "--source", str(tmp_path / "source.png"), "--output", str(tmp_path / f"{name}.png"),
                "--expected-text", text, "--metrics", "text_accuracy", "--json"]
        assert main(argv) == 0
        payload = json.loads(capsys.readouterr().out)
        got[name] = payload["scores"]["text_accuracy"]
        assert payload["metrics"]["text_accuracy"]["weights"] == "real"
        assert payload["details"]["text_accuracy"]["expected"] == text
    assert got["with"] >= 0.9 and got["source"] <= 0.3, got

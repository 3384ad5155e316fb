"""Did the text edit happen? ``text_accuracy`` and ``text_found`` by OCR (rapidocr PP-OCRv4).

Text cases (``text-replace``, ``text-add``) carry the text the output must show
(``expected_text`` in the case set). The output is read with PaddleOCR's PP-OCRv4 Chinese/English
detection and recognition models as shipped *inside* the ``rapidocr-onnxruntime`` 1.4.4 wheel,
run by onnxruntime on the CPU. The weights are always the real ones, whatever a suite's
``[metrics] weights`` says (random weights exist for CLIP/LPIPS, which would need a download;
OCR never does), and every description says so.

How a value is made:

1. **Region.** With a mask, the output (resized to the source's size, the one documented resize
   of ``images.py``) is cropped to the mask's bounding box, padded by `PAD_FRACTION` of the box
   on each side (at least `PAD_MIN_PX` pixels), so text that spills a little past a tight mask
   is still read and text elsewhere in the picture is not. Without a mask the whole output is
   read at its own size.
2. **OCR.** rapidocr finds text lines, reads each, keeps lines read with confidence of at least
   `MIN_CONFIDENCE`, and sorts them in reading order (top to bottom, left to right). The
   detector sees the crop at its own scale (``limit_type = "max"``, longest side at most
   `DET_MAX_SIDE`); rapidocr's default would upscale the shorter side to 736 px, which was 10 to
   150 times slower on these crops (0.3-3 s against 0.01-0.15 s) and misread 4 of 18 that this
   setting read right (the ``edit-v2`` text cases: source, text drawn in the mask, and that
   drawn image through a 128x128 round trip).
   Small crops need no upscaling of ours: rapidocr pads and enlarges images under 30 px itself,
   and lines 8-18 px high in 128 px wide strips were read as well without it (measured).
3. **Normalisation** (`normalize_text`), applied to the expected and the recognised text:
   Unicode NFKC (full-width ``＄１４`` -> ``$14``, ideographic space -> space), case folded
   (``LAUNCH`` = ``launch``; Chinese is unaffected), and every whitespace character removed
   (OCR splits or merges words unpredictably: ``Monday mood`` may come back as one line, two
   lines or ``Mondaymood``). Punctuation and digits are kept: ``$14.99`` is not ``1499``.
4. **Best match.** The candidates are every run of consecutive recognised lines in reading order,
   concatenated (one line, two neighbouring lines, ...): a title split over two lines counts, and
   an unrelated line elsewhere in the crop does not count against the text.
   ``text_accuracy`` = max over candidates of ``1 - levenshtein(expected, candidate) /
   max(len(expected), len(candidate))`` (character-level similarity, 1 = exact), 0.0 when nothing
   is recognised. ``text_found`` = 1.0 when the normalised expected text occurs, contiguous and
   in order, in some candidate (every expected character recognised), else 0.0.

The recognised lines, the best-matching candidate and the region read are kept with the value
(``MetricResult.detail``; a run's record holds them under ``metric_details``), so a report can
show what the model actually wrote.

Besides the shared metric base, only numpy and Pillow are imported here at module level (no
torch); rapidocr (onnxruntime, OpenCV) is imported when the first OCR metric is built, and its engine is loaded once per process
(`ocr_engine`) and shared by both metrics; the OCR itself runs once per image for both.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import Metric, MetricResult, Reference, library_version
from ..registry import register_metric

if TYPE_CHECKING:
    from PIL import Image

    from ..prepared import Prepared

OCR_DISTRIBUTION = "rapidocr-onnxruntime"
OCR_MODELS = "PP-OCRv4 det+rec (zh/en)"
PAD_FRACTION = 0.1
PAD_MIN_PX = 4
MIN_CONFIDENCE = 0.5  # rapidocr's default text_score
DET_MAX_SIDE = 960

SETTINGS: dict[str, Any] = {
    "region": f"mask bounding box padded by {PAD_FRACTION:.0%} per side (at least {PAD_MIN_PX} px), output at source size; "
    "whole output without a mask",
    "min_confidence": MIN_CONFIDENCE,
    "detector": f"limit_type max, limit_side_len {DET_MAX_SIDE}",
    "normalisation": "NFKC, case-folded, all whitespace removed",
    "candidates": "runs of consecutive recognised lines in reading order, concatenated",
    "similarity": "1 - levenshtein / max(len(expected), len(candidate))",
}


# -- pure functions -----------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace removed: the form in which texts are compared."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each costing 1) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(expected: str, recognised: str) -> float:
    """``1 - levenshtein / max(len)`` of two (already normalised) strings; 1.0 for two empty ones."""
    longest = max(len(expected), len(recognised))
    return 1.0 if longest == 0 else 1.0 - levenshtein(expected, recognised) / longest


@dataclass(frozen=True)
class TextMatch:
    """The best match of an expected text among recognised lines."""

    accuracy: float  # best similarity, in [0, 1]
    found: bool  # the expected text occurs in some candidate
    best: str | None  # the best-matching candidate as recognised (lines joined by a space), None if no line


def best_match(expected: str, lines: Sequence[str]) -> TextMatch:
    """Compare ``expected`` with every run of consecutive ``lines`` (reading order), normalised.

    A run longer than the expected text can only lose similarity as it grows (its distance is at
    least the length difference), so runs stop growing once they cannot beat the best so far.
    """
    target = normalize_text(expected)
    if not target:
        raise ValueError("expected text is empty after normalisation")
    normalised = [normalize_text(line) for line in lines]
    # in some run of consecutive lines <=> in all of them joined (any substring lies in a run)
    found = target in "".join(normalised)
    best, best_score = None, 0.0
    for start in range(len(lines)):
        candidate = ""
        for stop in range(start, len(lines)):
            candidate += normalised[stop]
            if len(candidate) > len(target) and len(target) / len(candidate) <= best_score:
                break  # 1 - d/len(c) <= 1 - (len(c) - len(t))/len(c) = len(t)/len(c): cannot win
            score = similarity(target, candidate)
            if best is None or score > best_score:
                best, best_score = " ".join(lines[start : stop + 1]), score
    return TextMatch(accuracy=best_score, found=found, best=best)


def crop_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the mask's bounding box, padded, clipped to the image."""
    ys, xs = np.nonzero(mask)
    left, right, top, bottom = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    pad_x = max(PAD_MIN_PX, round((right - left) * PAD_FRACTION))
    pad_y = max(PAD_MIN_PX, round((bottom - top) * PAD_FRACTION))
    height, width = mask.shape
    return max(0, left - pad_x), max(0, top - pad_y), min(width, right + pad_x), min(height, bottom + pad_y)


def read_text(engine: Any, image: Image.Image) -> list[str]:
    """The text lines ``engine`` (a rapidocr ``RapidOCR``) reads in ``image``, in reading order."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # rapidocr reads OpenCV's BGR
    found, _elapsed = engine(bgr)
    return [str(text) for _box, text, _confidence in found or []]


@lru_cache(maxsize=1)
def ocr_engine() -> Any:
    """The rapidocr engine with the wheel's bundled models, loaded once per process."""
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(text_score=MIN_CONFIDENCE, det_limit_type="max", det_limit_side_len=DET_MAX_SIDE)


# -- metrics ------------------------------------------------------------------------------


def _read(item: Prepared, engine: Any) -> tuple[TextMatch, dict[str, Any]]:
    """OCR of one output (once, shared by both metrics through the memo) and its best match."""

    def compute() -> tuple[TextMatch, dict[str, Any]]:
        if item.mask is None:
            region, image = None, item.output
        else:
            region = crop_box(item.mask)
            image = item.output_at_source_size.crop(region)
        lines = read_text(engine, image)
        expected = item.inputs.expected_text or ""
        match = best_match(expected, lines)
        detail = {
            "expected": expected,
            "recognised": lines,
            "best_match": match.best,
            "region": list(region) if region else "whole output",
        }
        return match, detail

    return item.memo(("ocr", item.inputs.expected_text), compute)


class _OCRMetric(Metric):
    direction = "higher"
    range = (0.0, 1.0)
    order = 60
    reference = Reference.EXPECTED_TEXT
    library = OCR_DISTRIBUTION
    function = "rapidocr_onnxruntime.RapidOCR + qie_bench best_match"
    settings = SETTINGS

    def __init__(self, loaded: Any = None) -> None:
        super().__init__(loaded)
        self.engine = ocr_engine()

    @property
    def backbone(self) -> str | None:
        return OCR_MODELS

    def describe(self) -> dict[str, Any]:
        """As every metric, but the weights are the real ones bundled in the wheel, always."""
        version = library_version(OCR_DISTRIBUTION)
        return {
            **super().describe(),
            "weights": "real",
            "weights_source": f"{OCR_DISTRIBUTION} {version} bundled PP-OCRv4 (inside the wheel, no download)",
        }


@register_metric
class TextAccuracy(_OCRMetric):
    """Character-level similarity of the expected text with the best-matching recognised text."""

    name = "text_accuracy"
    label = "text accuracy (OCR)"
    headline = True  # the report plots it per category and shows it (and what was read) in the gallery

    def compute(self, batch: Sequence[Prepared]) -> list[MetricResult]:
        results = []
        for item in batch:
            match, detail = _read(item, self.engine)
            results.append(MetricResult(match.accuracy, detail=detail))
        return results


@register_metric
class TextFound(_OCRMetric):
    """1.0 when the expected text is recognised in full (contiguous, in order), else 0.0."""

    name = "text_found"
    label = "text found (OCR)"

    def compute(self, batch: Sequence[Prepared]) -> list[MetricResult]:
        results = []
        for item in batch:
            match, detail = _read(item, self.engine)
            results.append(MetricResult(1.0 if match.found else 0.0, detail=detail))
        return results

"""Edit locality from pixels: how much changed inside the case's mask against outside it.

SSIM and PSNR against the source reward an output that changed nothing. These three make both
failure modes visible, with no model and no weights:

``change_inside_mask``   mean absolute change from the source over the pixels inside the mask
                         (where the edit should happen), in [0, 1]. *Higher* is declared better:
                         0 means the edit did not happen. It is not "more is always better" — a
                         recolour needs less change than a replaced object — so gate it against a
                         baseline (a drop means edits stopped happening), not on its own.
``change_outside_mask``  the same over the pixels outside the mask (what must stay), in [0, 1];
                         lower is better: an "edited everywhere" output shows here.
``change_ratio``         inside / outside, in [0, inf]; higher is better (a local edit).
                         Division by zero: an output identical to the source outside the mask but
                         changed inside is ``inf`` (perfectly local; written ``"inf"`` in JSON,
                         as PSNR's); one identical everywhere is ``None`` with the reason "output
                         identical to the source: nothing changed (0/0)" — the
                         ``change_inside_mask`` of 0 already says the edit did not happen.

Mean absolute change = mean over the region's pixels and the three RGB channels of
``|output - source|`` on 8-bit values divided by 255, with the output resized to the source's
size first (the documented resize of ``images.py``; the mask is in source coordinates). Cases
without a mask get ``None`` with "case has no mask".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from typing import TYPE_CHECKING

from ..base import Metric, MetricResult, Reference
from ..registry import register_metric

if TYPE_CHECKING:
    from ..prepared import Prepared

SETTINGS = {"change": "mean |output - source| / 255 over the region's pixels and RGB channels", "output": "at source size"}


def change_map(output: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per-pixel absolute change, ``H x W`` float64 in [0, 1], of two ``H x W x 3`` uint8 images
    (mean over the channels)."""
    if output.shape != source.shape:
        raise ValueError(f"images differ in shape: {output.shape} vs {source.shape}")
    return np.abs(output.astype(np.int16) - source.astype(np.int16)).mean(axis=-1) / 255.0


def mean_change(change: np.ndarray, region: np.ndarray) -> float:
    """Mean of a change map over the ``True`` pixels of ``region`` (``H x W`` bool, not empty)."""
    return float(change[region].mean())


def change_ratio(inside: float, outside: float) -> float | None:
    """``inside / outside``; ``inf`` when only the inside changed, ``None`` when nothing changed."""
    if outside > 0:
        return inside / outside
    return math.inf if inside > 0 else None


def _change(item: Prepared) -> np.ndarray:
    """The item's change map, computed once for all three metrics."""
    return item.memo(
        "change_map",
        lambda: change_map(np.asarray(item.output_at_source_size, dtype=np.uint8), np.asarray(item.source, dtype=np.uint8)),
    )


class _Locality(Metric):
    range = (0.0, 1.0)
    order = 70
    reference = Reference.SOURCE
    library = "numpy"
    settings = SETTINGS


@register_metric
class ChangeInsideMask(_Locality):
    """Mean absolute change from the source inside the mask: 0 = the edit did not happen."""

    name = "change_inside_mask"
    label = "change inside mask"
    direction = "higher"
    region = "inside_mask"
    function = "qie_bench.metrics.locality.mean_change"

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        return [mean_change(_change(item), item.mask) for item in batch]


@register_metric
class ChangeOutsideMask(_Locality):
    """Mean absolute change from the source outside the mask: what must stay, 0 = untouched."""

    name = "change_outside_mask"
    label = "change outside mask"
    direction = "lower"
    region = "outside_mask"
    function = "qie_bench.metrics.locality.mean_change"

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        return [mean_change(_change(item), ~item.mask) for item in batch]


@register_metric
class ChangeRatio(_Locality):
    """Change inside the mask over change outside it: high = a local edit."""

    name = "change_ratio"
    label = "change ratio (inside/outside)"
    headline = True  # the report plots it per category and shows it under every gallery image
    direction = "higher"
    range = (0.0, math.inf)
    region = "inside_and_outside_mask"
    function = "qie_bench.metrics.locality.change_ratio"

    def compute(self, batch: Sequence[Prepared]) -> list[MetricResult]:
        results = []
        for item in batch:
            change = _change(item)
            ratio = change_ratio(mean_change(change, item.mask), mean_change(change, ~item.mask))
            results.append(
                MetricResult(None, "output identical to the source: nothing changed (0/0)")
                if ratio is None
                else MetricResult(ratio)
            )
        return results

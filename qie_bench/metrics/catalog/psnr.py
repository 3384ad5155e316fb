"""PSNR through torchmetrics: whole image, outside the case's mask, and against the baseline output.

PSNR = 10 log10(data_range^2 / MSE) with data_range = 1 on [0, 1] images, MSE over all pixels
and all three channels — equal to scikit-image's ``peak_signal_noise_ratio`` on the uint8 images
with ``data_range=255``. Masked PSNR is the same formula with the MSE taken over the pixels
outside the mask only.

Identical images have MSE = 0 and PSNR = ``float("inf")``. That is kept as ``inf`` in memory (it
is the right answer: a lossless variant, or an edit that left the protected region untouched);
JSON writers must encode it with :func:`qie_bench.metrics.to_json_value` (``"inf"``). Computed
in float64 so the tiny MSE of near-identical images is not lost to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..base import Metric, Reference
from ..registry import register_metric

if TYPE_CHECKING:
    import torch

    from ..prepared import Prepared

DATA_RANGE = 1.0
SETTINGS = {"data_range": DATA_RANGE, "mse_over": "all pixels and RGB channels", "dtype": "float64"}


def psnr(preds: torch.Tensor, target: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR per image, ``(B,)``, of ``(B, C, H, W)`` images in [0, 1] (torchmetrics).

    ``keep`` (``H x W`` bool) restricts the MSE to those pixels. Infinite where the compared
    pixels are identical.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if keep is not None:
        preds, target = preds[..., keep], target[..., keep]  # (B, C, N)
    dims = tuple(range(1, preds.ndim))
    return peak_signal_noise_ratio(preds, target.to(preds.dtype), data_range=DATA_RANGE, reduction="none", dim=dims)


def psnr_outside_mask(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR over the pixels outside ``mask`` (``H x W`` bool, True = may change), ``(B,)``."""
    return psnr(preds, target, keep=~mask)


class _PSNRBase(Metric):
    direction = "higher"
    range = (0.0, math.inf)
    unit = "dB"
    order = 30
    library = "torchmetrics"
    function = "torchmetrics.functional.image.peak_signal_noise_ratio"
    settings = SETTINGS


@register_metric
class PSNR(_PSNRBase):
    """PSNR (dB) of the output (resized to the source's size if needed) against the source image."""

    name = "psnr"
    label = "PSNR"
    fidelity_rank = 8
    reference = Reference.SOURCE

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        import torch

        return [float(psnr(*item.pair(Reference.SOURCE, torch.float64))) for item in batch]


@register_metric
class PSNROutsideMask(_PSNRBase):
    """PSNR (dB) against the source over the pixels the edit must not change (outside the mask)."""

    name = "psnr_outside_mask"
    label = "PSNR outside mask"
    fidelity_rank = 5
    reference = Reference.SOURCE
    region = "outside_mask"

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        import torch

        return [float(psnr(*item.pair(Reference.SOURCE, torch.float64), keep=item.outside_mask)) for item in batch]


@register_metric
class PSNRVsBaseline(_PSNRBase):
    """PSNR (dB) of the variant's output against the baseline variant's output (same case and seed)."""

    name = "psnr_vs_baseline"
    label = "PSNR vs baseline"
    fidelity_rank = 3
    reference = Reference.BASELINE

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        import torch

        return [float(psnr(*item.pair(Reference.BASELINE, torch.float64))) for item in batch]

"""LPIPS of the variant's output against the baseline variant's output, through torchmetrics.

Learned Perceptual Image Patch Similarity (Zhang et al. 2018), lower is better (0 = identical):
AlexNet features, unit-normalised per layer, squared differences weighted by the LPIPS v0.1
linear heads and averaged spatially. torchmetrics' implementation is used because its linear
heads ship inside the wheel and its AlexNet can be built without downloading (the backbone
weights are then loaded from a verified local file, or left random — see
:mod:`qie_bench.metrics.weights`). Images are fed at full resolution in [0, 1]
(``normalize=True`` maps them to [-1, 1]). If the output's size differs from the baseline
output's, the output is resized to it (bicubic, documented in :mod:`qie_bench.metrics.images`).

The range (0, 1) is LPIPS' nominal one (as pyiqa declares it); it is not a hard bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Metric, Prepared, Reference, size_groups
from .registry import register_metric
from .weights import LPIPS_MODEL

MAX_BATCH = 8


def lpips(preds: torch.Tensor, target: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
    """LPIPS per image pair, ``(B,)``, of ``(B, 3, H, W)`` images in [0, 1] (torchmetrics' LPIPS module)."""
    return net(preds, target, normalize=True).reshape(-1)


@register_metric
class LPIPSVsBaseline(Metric):
    """Perceptual distance between the variant's and the baseline's output (compression fidelity)."""

    name = "lpips_vs_baseline"
    direction = "lower"
    range = (0.0, 1.0)
    reference = Reference.BASELINE
    library = "torchmetrics"
    function = "torchmetrics LPIPS module (_NoTrainLpips, as LearnedPerceptualImagePatchSimilarity uses), net='alex'"
    model_key = LPIPS_MODEL
    settings = {"net": "alex", "version": "0.1", "normalize": True, "input": "full resolution"}

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        values = [0.0] * len(batch)
        for group in size_groups(batch, lambda item: item.baseline.size, MAX_BATCH):
            pairs = [batch[i].pair(Reference.BASELINE, torch.float32) for i in group]
            preds = torch.cat([p for p, _ in pairs])
            target = torch.cat([t for _, t in pairs])
            for i, value in zip(group, lpips(preds, target, self.model.model).tolist(), strict=True):
                values[i] = value
        return values

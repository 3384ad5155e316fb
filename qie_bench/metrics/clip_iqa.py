"""CLIP-IQA (no-reference quality) through pyiqa's ``clipiqa`` metric.

pyiqa's ``CLIPIQA`` (metric name ``clipiqa``; Wang et al., AAAI 2023, with pyiqa's prompt
ensemble) scores an image by how much CLIP prefers the first prompt of five antonym pairs —
"Good image"/"bad image", "Sharp image"/"blurry image", "sharp edges"/"blurry edges",
"High resolution image"/"low resolution image", "Noise-free image"/"noisy image" — as the mean
softmax probability, in [0, 1], higher is better. The backbone is openai CLIP RN50; the image is
fed at its native resolution (pyiqa does not resize; the attention pool runs without positional
embedding), normalised with CLIP's mean/std.

Which model runs (real RN50 or a tiny random one of the same class) is decided by
:mod:`qie_bench.metrics.weights`; this module only feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Metric, Prepared, Reference, size_groups
from .registry import register_metric
from .weights import CLIP_IQA_MODEL

MAX_BATCH = 8  # images of one size per forward pass; bounds memory at ~1 MP inputs


def clip_iqa(images: torch.Tensor, arch: torch.nn.Module) -> torch.Tensor:
    """CLIP-IQA score per image, ``(B,)``, of ``(B, 3, H, W)`` RGB images in [0, 1] (pyiqa ``CLIPIQA``)."""
    return arch(images).reshape(-1)


@register_metric
class CLIPIQA(Metric):
    """No-reference perceptual quality of the output alone."""

    name = "clip_iqa"
    direction = "higher"
    range = (0.0, 1.0)
    reference = Reference.NONE
    library = "pyiqa"
    function = "pyiqa.archs.clipiqa_arch.CLIPIQA (pyiqa metric 'clipiqa')"
    model_key = CLIP_IQA_MODEL
    settings = {
        "prompts": "5 antonym pairs: good/bad image, sharp/blurry image, sharp/blurry edges, "
        "high/low resolution image, noise-free/noisy image",
        "input": "native resolution, CLIP mean/std, no positional embedding (pyiqa defaults)",
    }

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        values = [0.0] * len(batch)
        for group in size_groups(batch, lambda item: item.output.size, MAX_BATCH):
            images = torch.cat([batch[i].tensor("output", torch.float32) for i in group])
            for i, value in zip(group, clip_iqa(images, self.model.model).tolist(), strict=True):
                values[i] = value
        return values

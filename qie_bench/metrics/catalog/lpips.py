"""LPIPS of the variant's output against the baseline variant's output, through torchmetrics.

Learned Perceptual Image Patch Similarity (Zhang et al. 2018), lower is better (0 = identical):
AlexNet features, unit-normalised per layer, squared differences weighted by the LPIPS v0.1
linear heads and averaged spatially. torchmetrics' implementation is used because its linear
heads ship inside the wheel and its AlexNet can be built without downloading (the backbone
weights are then loaded from a verified local file, or left random). Images are fed at full
resolution in [0, 1] (``normalize=True`` maps them to [-1, 1]). If the output's size differs
from the baseline output's, the output is resized to it (bicubic, documented in
:mod:`qie_bench.metrics.images`).

The range (0, 1) is LPIPS' nominal one (as pyiqa declares it); it is not a hard bound.

Model ``lpips_alex``: real weights are torchvision's AlexNet ``IMAGENET1K_V1`` checkpoint
(``alexnet-owt-7be5be79.pth``), looked up in ``<weights_dir>/``, ``<weights_dir>/checkpoints/``
and ``<torch hub dir>/checkpoints/`` (torchvision's cache); the SHA-256 prefix in its name is
checked. The random stand-in is AlexNet randomly initialised, with the same bundled heads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ..base import Metric, Reference, size_groups
from ..registry import register_metric
from ..weights import (
    ModelSpec,
    deduplicated,
    first_verified_file,
    seeded,
    torch_hub_dir,
)

if TYPE_CHECKING:
    import torch

    from ..prepared import Prepared

MAX_BATCH = 8


def alexnet_file() -> tuple[str, str]:
    """torchvision's AlexNet ``IMAGENET1K_V1`` checkpoint: (file name, SHA-256 prefix in the name)."""
    import torch
    from torchvision.models import AlexNet_Weights

    name = os.path.basename(urlparse(AlexNet_Weights.IMAGENET1K_V1.url).path)
    match = torch.hub.HASH_REGEX.search(name)
    return name, (match.group(1) if match else "")


def locate_alexnet(weights_dir: Path | None) -> Path:
    """torchvision AlexNet ImageNet weights (LPIPS backbone); see the module docstring."""
    name, prefix = alexnet_file()
    candidates = []
    if weights_dir is not None:
        candidates += [weights_dir / name, weights_dir / "checkpoints" / name]
    candidates += [torch_hub_dir() / "checkpoints" / name]
    return first_verified_file(deduplicated(candidates), prefix)


def build_lpips(alexnet_path: Path | None, seed: int, device: torch.device | str) -> torch.nn.Module:
    """torchmetrics' LPIPS module (AlexNet, v0.1 linear heads) with real or seeded random AlexNet weights.

    ``pnet_rand=True`` makes torchmetrics build AlexNet with ``weights=None`` (no download); its
    linear heads always come from the file inside the torchmetrics wheel. With ``alexnet_path``
    the ImageNet weights are then loaded from that verified local file.
    """
    import torch
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    with seeded(seed):
        net = _NoTrainLpips(pretrained=True, net="alex", pnet_rand=True)
    if alexnet_path is not None:
        state = torch.load(str(alexnet_path), map_location="cpu", weights_only=True)
        # LPIPS slices AlexNet's `features` keeping the indices: slice2.3.weight = features.3.weight.
        trunk = net.net
        trunk.load_state_dict({key: state["features." + key.split(".", 1)[1]] for key in trunk.state_dict()})
    return net.eval().to(device)


LPIPS_ALEX = ModelSpec(
    key="lpips_alex",
    label="torchvision AlexNet IMAGENET1K_V1 weights",
    real_backbone="AlexNet (torchvision IMAGENET1K_V1) + LPIPS v0.1 linear heads (torchmetrics)",
    random_backbone="AlexNet (random init) + LPIPS v0.1 linear heads (torchmetrics)",
    locate=locate_alexnet,
    build_real=lambda path, device: build_lpips(path, 0, device),
    build_random=lambda seed, device: build_lpips(None, seed, device),
    how_to_get="python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\" "
    "(fills <torch hub dir>/checkpoints/), or copy that file into <weights_dir>/",
)


def lpips(preds: torch.Tensor, target: torch.Tensor, net: torch.nn.Module) -> torch.Tensor:
    """LPIPS per image pair, ``(B,)``, of ``(B, 3, H, W)`` images in [0, 1] (torchmetrics' LPIPS module)."""
    return net(preds, target, normalize=True).reshape(-1)


@register_metric
class LPIPSVsBaseline(Metric):
    """Perceptual distance between the variant's and the baseline's output (compression fidelity)."""

    name = "lpips_vs_baseline"
    label = "LPIPS vs baseline"
    direction = "lower"
    range = (0.0, 1.0)
    reference = Reference.BASELINE
    fidelity_rank = 1
    order = 40
    library = "torchmetrics"
    function = "torchmetrics LPIPS module (_NoTrainLpips, as LearnedPerceptualImagePatchSimilarity uses), net='alex'"
    model = LPIPS_ALEX
    settings = {"net": "alex", "version": "0.1", "normalize": True, "input": "full resolution"}

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        import torch

        values = [0.0] * len(batch)
        for group in size_groups(batch, lambda item: item.baseline.size, MAX_BATCH):
            pairs = [batch[i].pair(Reference.BASELINE, torch.float32) for i in group]
            preds = torch.cat([p for p, _ in pairs])
            target = torch.cat([t for _, t in pairs])
            for i, value in zip(group, lpips(preds, target, self.loaded.model).tolist(), strict=True):
                values[i] = value
        return values

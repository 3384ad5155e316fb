"""SSIM through torchmetrics: whole image, outside the case's mask, and against the baseline output.

Settings (Wang et al. 2004, as torchmetrics' defaults): Gaussian window sigma = 1.5 truncated at
3.5 sigma (11 x 11), K1 = 0.01, K2 = 0.03, population (not sample) covariance, data_range = 1 on
[0, 1] images. Colour images are scored per channel and averaged over channels and pixels.
The scikit-image call with the same settings is::

    structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                          sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03)

Borders: torchmetrics (1.9) pads each image with ``F.pad(mode="reflect")`` (mirror that does not
repeat the edge pixel, numpy's ``"reflect"``) by the window radius (5 px), so its SSIM map has a
value at every pixel, and its SSIM is the mean of that whole map. scikit-image filters with
scipy's ``"reflect"`` (which *does* repeat the edge pixel) and averages only the map cropped by
5 px. Away from the border (``map[..., 5:-5, 5:-5]``) both maps are identical; the whole-image
values differ slightly. We report torchmetrics' value; the tests check the map interior against
scikit-image and the whole map against scikit-image run on numpy-reflect-padded images.

That choice is this module's ``convention``, recorded with every SSIM a run writes; the gate
refuses to compare SSIMs recorded under different conventions. It matters at small sizes: the
5-px border holds 15 % of a 128 px image's pixels (20 % at 96 px), and its mirrored windows score
differently from interior ones, so the two conventions differ on the same pair, either way, by
up to 0.023 at 96-128 px on scikit-image's photos with noise, JPEG or blur (0.025-0.033 was
measured on smoke-suite outputs), up to 0.010 at 256 px and 0.005 at 512 px: at small sizes more
than a "-0.02" gate (docs/metrics.md).

Masked SSIM (``ssim_outside_mask``) = mean of that same per-pixel SSIM map over the pixels
outside the mask whose whole 11 x 11 window lies outside the mask (all three channels): the
outside region eroded by the window radius, 5 px (Chebyshev distance). A pixel nearer the mask
would "see" edited pixels and score the edit itself (an edit confined to the mask scored 0.974
before this rule; it now scores exactly 1). The reflect padding only mirrors pixels that are
within 5 px of the window's centre, so the rule also holds at the image border. An empty mask
gives exactly the whole-image ``ssim``; a mask that leaves no pixel 6 px or more away from it
gives ``None`` with the reason.

The map is computed in float32 with the three colour channels laid out as three grayscale
images: torchmetrics' grouped 11 x 11 convolution is ~8x slower on CPU than the same
convolution on single-channel images, and the per-channel maps are identical (bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..base import Metric, Reference
from ..registry import register_metric

if TYPE_CHECKING:
    import torch

    from ..prepared import Prepared

SIGMA = 1.5
K1 = 0.01
K2 = 0.03
DATA_RANGE = 1.0
WINDOW_RADIUS = int(3.5 * SIGMA + 0.5)  # 5: torchmetrics' and scipy's truncation of the Gaussian
SETTINGS = {
    "window": f"gaussian sigma={SIGMA}, {2 * WINDOW_RADIUS + 1}x{2 * WINDOW_RADIUS + 1}",
    "k1": K1,
    "k2": K2,
    "data_range": DATA_RANGE,
    "covariance": "population",
    "border": "torch reflect padding, whole map averaged (torchmetrics)",
    "dtype": "float32",
}
# What differs between SSIM implementations and moves the value (see the module docstring).
CONVENTION = "torchmetrics: reflect-padded borders, whole map averaged"
CONVENTION_OUTSIDE_MASK = (
    f"torchmetrics map (reflect-padded borders), averaged over pixels whose {2 * WINDOW_RADIUS + 1}x"
    f"{2 * WINDOW_RADIUS + 1} window lies outside the mask"
)


def ssim_map(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM map ``(B, C, H, W)`` of images ``(B, C, H, W)`` in [0, 1] (torchmetrics)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    b, c, h, w = preds.shape
    _, full = structural_similarity_index_measure(
        preds.reshape(b * c, 1, h, w),
        target.reshape(b * c, 1, h, w).to(preds.dtype),
        gaussian_kernel=True,
        sigma=SIGMA,
        data_range=DATA_RANGE,
        k1=K1,
        k2=K2,
        reduction="none",
        return_full_image=True,
    )
    return full.reshape(b, c, h, w)


def ssim(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image, ``(B,)``: the mean of :func:`ssim_map` (torchmetrics' whole-image SSIM)."""
    return ssim_map(preds, target).mean(dim=(1, 2, 3))


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of a ``(B, C, H, W)`` map over the pixels where the ``H x W`` bool ``keep`` is True, ``(B,)``."""
    return values[..., keep].mean(dim=(1, 2))


def windows_outside(mask: torch.Tensor, radius: int = WINDOW_RADIUS) -> torch.Tensor:
    """Bool ``H x W``: pixels whose ``(2 radius + 1)``-square window holds no pixel of ``mask``
    (``H x W`` bool, True = may change), i.e. ``~mask`` eroded by ``radius``. Windows reaching past
    the image border count only the pixels inside it (reflect padding mirrors those)."""
    import torch.nn.functional as F

    dilated = F.max_pool2d(mask[None, None].float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return dilated[0, 0] == 0


def ssim_outside_mask(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SSIM over the pixels whose window lies outside ``mask`` (``H x W`` bool, True = may change), ``(B,)``.

    An all-False mask gives :func:`ssim`; a mask within 5 px of every pixel leaves none and gives
    NaN, which the metric class turns into ``None`` before calling this.
    """
    return masked_mean(ssim_map(preds, target), windows_outside(mask))


def _source_map(item: Prepared) -> torch.Tensor:
    """The output-vs-source SSIM map, shared by ``ssim`` and ``ssim_outside_mask``."""
    import torch

    return item.memo(("ssim_map", Reference.SOURCE), lambda: ssim_map(*item.pair(Reference.SOURCE, torch.float32)))


def _outside_windows(item: Prepared) -> torch.Tensor:
    assert item.mask is not None
    return item.memo(("ssim_windows_outside", WINDOW_RADIUS), lambda: windows_outside(~item.outside_mask))


class _SSIMBase(Metric):
    direction = "higher"
    range = (-1.0, 1.0)
    convention = CONVENTION
    order = 20
    library = "torchmetrics"
    function = "torchmetrics.functional.image.structural_similarity_index_measure(return_full_image=True)"
    settings = SETTINGS


@register_metric
class SSIM(_SSIMBase):
    """SSIM of the output (resized to the source's size if needed) against the source image."""

    name = "ssim"
    label = "SSIM"
    fidelity_rank = 7
    reference = Reference.SOURCE

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        return [float(_source_map(item).mean()) for item in batch]


@register_metric
class SSIMOutsideMask(_SSIMBase):
    """SSIM against the source over the pixels the edit must not change (outside the mask)."""

    name = "ssim_outside_mask"
    label = "SSIM outside mask"
    fidelity_rank = 4
    reference = Reference.SOURCE
    region = "outside_mask"
    convention = CONVENTION_OUTSIDE_MASK

    def unavailable(self, item: Prepared) -> str | None:
        reason = super().unavailable(item)
        if reason is None and not bool(_outside_windows(item).any()):
            reason = (f"no pixel outside the mask is more than {WINDOW_RADIUS} px from it "
                      f"(SSIM's {2 * WINDOW_RADIUS + 1}x{2 * WINDOW_RADIUS + 1} window would see the edit)")
        return reason

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        return [float(masked_mean(_source_map(item), _outside_windows(item))) for item in batch]


@register_metric
class SSIMVsBaseline(_SSIMBase):
    """SSIM of the variant's output against the baseline variant's output (same case and seed)."""

    name = "ssim_vs_baseline"
    label = "SSIM vs baseline"
    fidelity_rank = 2
    reference = Reference.BASELINE

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        import torch

        return [float(ssim(*item.pair(Reference.BASELINE, torch.float32))) for item in batch]

"""Pixel values of an image file as 8-bit RGB, without clipping (torch-free, below every reader).

PIL's ``convert("RGB")`` clips modes with more than 8 bits: a 16-bit grayscale PNG (``I;16``)
becomes white. :func:`as_rgb` scales them instead, and both the case loader (:mod:`qie_bench.cases`,
what the pipeline is given) and the metrics (:mod:`qie_bench.metrics.images`, what is scored) read
images through it, so the model and the metrics see the same pixels:

* 16-bit grayscale (``I;16*``) as ``value / 65535``;
* 32-bit integer (``I``, how older Pillow opened 16-bit PNGs) the same when every value is in
  [0, 65535];
* float (``F``) when every value is in [0, 1];
* anything else in those modes is refused (:class:`ImageModeError`) rather than guessed;
* every other mode (L, P, RGBA, CMYK, ...) through ``convert("RGB")`` (alpha dropped, not
  composited). 16-bit RGB PNGs are opened by Pillow as 8-bit ``RGB`` already.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import UserInputError

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
SIXTEEN_BIT_MAX = 65535


class ImageModeError(UserInputError):
    """An image mode whose values cannot be read as intensities without guessing."""

    def __init__(self, mode: str, problem: str) -> None:
        super().__init__("image", f"mode {mode}: {problem}", "save it as an 8-bit or 16-bit PNG (RGB or grayscale)")


def _scaled_to_8bit(values: np.ndarray) -> Image.Image:
    """Grayscale intensities in [0, 1] as an 8-bit ``L`` image (rounded to nearest)."""
    return Image.fromarray(np.rint(values * 255.0).astype(np.uint8))  # 2-D uint8: mode L


def as_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB (alpha dropped, palette and grayscale expanded, 16-bit and float
    grayscale scaled to 8 bits); :class:`ImageModeError` for values that cannot be read."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode in SIXTEEN_BIT_MODES:
            return _scaled_to_8bit(values / SIXTEEN_BIT_MAX).convert("RGB")
        if not np.isfinite(values).all():
            raise ImageModeError(mode, "has non-finite values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode == "I":
            if low < 0 or high > SIXTEEN_BIT_MAX:
                raise ImageModeError(mode, f"32-bit integer values from {low:.0f} to {high:.0f} are not 16-bit intensities")
            return _scaled_to_8bit(values / SIXTEEN_BIT_MAX).convert("RGB")
        if low < 0 or high > 1:
            raise ImageModeError(mode, f"float values from {low:.4g} to {high:.4g} are outside [0, 1]")
        return _scaled_to_8bit(values).convert("RGB")
    return image.convert("RGB")

"""Image plumbing shared by every metric: colour mode, the one documented resize, tensors, masks, files.

Conventions (every metric relies on them, so they live in one place):

* Images are scored as 8-bit RGB. 8-bit modes (L, P, RGBA, CMYK, ...) are converted with
  ``Image.convert("RGB")``; an alpha channel is dropped, not composited (edit outputs are opaque;
  a transparent PNG given to ``qie-bench score`` is scored as its colour channels).
* Modes with more than 8 bits are scaled, never clipped (PIL's ``convert`` clips them: a 16-bit
  grayscale PNG would become white): 16-bit grayscale (``I;16*``) as ``value / 65535``; 32-bit
  integer (``I``, how older Pillow opened 16-bit PNGs) the same when every value is in
  [0, 65535]; float (``F``) when every value is in [0, 1]. Anything else in those modes is
  refused with a one-line error rather than guessed. 16-bit RGB PNGs are opened by Pillow as
  8-bit ``RGB`` already (its decoder keeps the high byte). :func:`as_rgb` lives in
  :mod:`qie_bench.pixels`, so the case loader gives the pipeline the same pixels.
* Pixel values become floats in [0, 1] (``uint8 / 255``), so every pixel metric uses
  ``data_range = 1.0``. The range is passed explicitly: letting torchmetrics infer it from the
  data would make a constant image's PSNR/SSIM depend on the other image's contrast.
* When two images that are compared pixel by pixel differ in size (the edit may return another
  size than the source), the *output* is resized to the reference's size with Pillow's bicubic
  filter (``Image.Resampling.BICUBIC``, which low-pass filters when shrinking). The reference is
  never touched, and masks stay in source pixel coordinates. The resize is reported as a note.
* A mask is a boolean ``H x W`` array in source coordinates, ``True`` where the edit may change
  pixels. On disk (the case set's ``masks/*.png``) it is a single-channel PNG, white = may change;
  any pixel >= 128 after conversion to 8-bit grayscale as above counts as white (a 16-bit mask:
  >= 32896 of 65535).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import UserInputError
# The mode conversion lives below the case loader, which reads the pipeline's inputs the same way.
from ..pixels import ImageModeError, as_rgb

RESIZE_FILTER = Image.Resampling.BICUBIC
RESIZE_FILTER_NAME = "PIL bicubic"
MASK_THRESHOLD = 128


def match_size(image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, str | None]:
    """``image`` at ``size`` (PIL's (width, height)), plus a note when it had to be resized."""
    if image.size == size:
        return image, None
    note = f"output resized from {image.size[0]}x{image.size[1]} to {size[0]}x{size[1]} ({RESIZE_FILTER_NAME})"
    return image.resize(size, RESIZE_FILTER), note


def to_tensor(image: Image.Image, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """An RGB image as a ``(1, 3, H, W)`` tensor in [0, 1]."""
    array = np.asarray(as_rgb(image), dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(device=device, dtype=dtype) / 255.0


def check_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Validate a mask against the source's PIL ``size`` and return it as a bool ``H x W`` array.

    Non-bool arrays are accepted as "non-zero = may change" (so a 0/255 array read from a PNG
    works), but the shape must be exactly the source's: masks are in source pixel coordinates and
    silently resizing one would blur the boundary of the region that must not change.
    """
    mask = np.asarray(mask)
    width, height = size
    if mask.ndim != 2 or mask.shape != (height, width):
        raise UserInputError(
            "mask",
            f"mask has shape {tuple(mask.shape)} but the source image is {height}x{width} (HxW)",
            "masks are HxW arrays in source-image pixel coordinates; save the mask at the source's size",
        )
    return mask if mask.dtype == np.bool_ else mask != 0


def load_image(path: str | Path) -> Image.Image:
    """Read an image file fully (so a truncated file fails here, not mid-scoring) as 8-bit RGB.

    Raises :class:`UserInputError` naming the file when it is missing, a directory, not an image
    Pillow can decode, or in a mode whose values cannot be read (see :func:`as_rgb`).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return as_rgb(image)
    except ImageModeError as err:
        raise UserInputError(str(path), err.problem, err.fix) from None
    except FileNotFoundError:
        raise UserInputError(str(path), "file not found", "check the path") from None
    except IsADirectoryError:
        raise UserInputError(str(path), "is a directory, not an image file", "pass a PNG or JPEG file") from None
    except UnidentifiedImageError:
        raise UserInputError(str(path), "not an image Pillow can read", "pass a PNG or JPEG file") from None
    except OSError as err:  # truncated data, permission denied, ...
        raise UserInputError(str(path), f"cannot read image ({err})", "pass a readable PNG or JPEG file") from None


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask PNG (white = may change) as a bool ``H x W`` array; check it against ``size``."""
    image = load_image(path).convert("L")
    mask = np.asarray(image) >= MASK_THRESHOLD
    if size is not None and image.size != size:
        raise UserInputError(
            str(path),
            f"mask is {image.size[0]}x{image.size[1]} but the source image is {size[0]}x{size[1]}",
            "masks are in source-image pixel coordinates; save the mask at the source's size",
        )
    return mask

"""Shared helpers for the metric tests: offline test images, perturbations, references, no-network guard."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image, ImageEnhance, ImageFilter
from skimage.metrics import structural_similarity

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
SSIM_RADIUS = 5  # Gaussian sigma 1.5 truncated at 3.5 sigma


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Test images are small: one thread is about as fast, and immune to OpenMP spin-waiting when
    the 2-core machine is shared (there, 2 threads ran 3-6x slower). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def skimage_photo(name: str) -> Image.Image:
    """A photo shipped inside the scikit-image wheel, read straight from the package folder.

    (``skimage.data.<name>()`` goes through pooch, which may try the network for some images.)
    """
    with Image.open(SKIMAGE_DATA / f"{name}.png") as image:
        return image.convert("RGB")


def random_image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def noisy(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = np.asarray(image, dtype=np.float64) + rng.normal(0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def blurred(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def brighter(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def as_float(image: Image.Image) -> np.ndarray:
    """H x W x 3 float64 in [0, 1], the reference implementations' input."""
    return np.asarray(image, dtype=np.float64) / 255.0


def skimage_ssim(a: Image.Image, b: Image.Image, *, full: bool = False):
    """scikit-image SSIM with the settings equivalent to torchmetrics' defaults (Wang et al.)."""
    return structural_similarity(
        as_float(a), as_float(b), channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, K1=0.01, K2=0.03, full=full,
    )


def skimage_ssim_map_torch_borders(a: Image.Image, b: Image.Image) -> np.ndarray:
    """scikit-image's SSIM map at every pixel, with torch-style ("reflect" = no edge repeat) borders.

    Pad both images by the window radius with numpy's "reflect" (what torch's F.pad(mode="reflect")
    does), let scikit-image compute its map on the padded images, and crop the padding: every
    kept pixel's 11 x 11 window then lies inside the padded image, so scikit-image's own border
    mode never matters. Shape H x W x 3.
    """
    pad = ((SSIM_RADIUS, SSIM_RADIUS), (SSIM_RADIUS, SSIM_RADIUS), (0, 0))
    pa, pb = np.pad(as_float(a), pad, mode="reflect"), np.pad(as_float(b), pad, mode="reflect")
    _, full_map = structural_similarity(
        pa, pb, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, K1=0.01, K2=0.03, full=True,
    )
    return full_map[SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]


def rectangle_mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Bool mask, True (may change) inside ``box`` = (top, left, bottom, right)."""
    mask = np.zeros((height, width), dtype=bool)
    top, left, bottom, right = box
    mask[top:bottom, left:right] = True
    return mask


def blob_mask(height: int, width: int, seed: int) -> np.ndarray:
    """An irregular mask: a few random discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(4):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(5, max(6, min(height, width) // 4))
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    return mask


class NetworkAttempted(AssertionError):
    pass


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any socket connection or DNS lookup fail the test at once (instead of timing out)."""

    def refuse(*args, **kwargs):
        raise NetworkAttempted(f"network access attempted: {args[1:] if args else kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def empty_caches(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    """Point HOME and every cache the metric libraries use at empty folders under ``root``."""
    home = root / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home

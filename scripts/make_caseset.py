"""Generate the `edit-v2` (or `edit-v1`) case set: images, masks, `cases.jsonl` and `README.md`.

Usage::

    python scripts/make_caseset.py                      # writes suites/cases/edit-v2/
    python scripts/make_caseset.py --set edit-v1        # the previous version, suites/cases/edit-v1/
    python scripts/make_caseset.py --out /tmp/edit-v2   # anywhere else

`edit-v2` is `edit-v1` (same images, masks, instructions) plus `expected_text` on every
text-replace and text-add case: the text the output must show, read back by the OCR metrics.

Two kinds of input image are used, both redistributable and both available offline:

* photos that ship *inside* the scikit-image wheel (``skimage/data/*.png|jpg``). They are read
  straight from the package folder with Pillow, never through ``skimage.data.<name>()``, so
  pooch can never try to download anything;
* procedurally drawn e-commerce product shots (bottle, mug, gift box, sneaker, table and
  podium scenes) with promo tags, watermarks, price labels and banners. Because we draw them we
  know exactly which pixels an edit may change, so those cases get exact masks.

Everything is deterministic: fixed RNG seeds, Pillow's built-in font (no font files), PNGs
saved with fixed options and no metadata chunks. Re-running reproduces byte-identical files
for the same Pillow/numpy/zlib build; `tests/test_cases.py` checks that against the shipped set.

Changing any pixel here changes the case set's fingerprint, which makes old results
incomparable with new ones: bump the set's name (`edit-v3`) instead of editing a published set.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO_ROOT = Path(__file__).resolve().parents[1]
SETS = ("edit-v1", "edit-v2")
LATEST = "edit-v2"
CASES_DIR = REPO_ROOT / "suites" / "cases"

MAX_SIDE = 512  # longest side of every image; the pipeline resizes anyway, small keeps the repo light
SS = 4  # supersampling factor for anti-aliased shape edges
PROCEDURAL = "procedural:make_caseset.py"

RGB = tuple[int, int, int]
FloatImg = np.ndarray  # float32 HxWx3 in [0, 1]
Alpha = np.ndarray  # float32 HxW in [0, 1]


# --------------------------------------------------------------------------------------------
# Low-level helpers
# --------------------------------------------------------------------------------------------


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (Aileron), so no font file has to exist on the machine."""
    return ImageFont.load_default(size=size)


def to_float(img: Image.Image) -> FloatImg:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def to_image(arr: FloatImg) -> Image.Image:
    # Round (not truncate) so tiny float differences cannot flip a whole level.
    return Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8), "RGB")


def color(c: RGB) -> np.ndarray:
    return np.asarray(c, dtype=np.float32) / 255.0


def shape_alpha(size: tuple[int, int], draw_fn: Callable[[ImageDraw.ImageDraw, float], None]) -> Alpha:
    """Anti-aliased coverage of a shape: draw at SS x resolution, downsample with a box filter.

    ``draw_fn(draw, s)`` draws in white using coordinates multiplied by ``s``.
    """
    w, h = size
    big = Image.new("L", (w * SS, h * SS), 0)
    draw_fn(ImageDraw.Draw(big), float(SS))
    small = big.resize((w, h), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def composite(base: FloatImg, layer: FloatImg | np.ndarray, alpha: Alpha) -> FloatImg:
    """``layer`` over ``base`` with coverage ``alpha``; only the alpha's bounding box is touched
    (most layers are small, and this keeps the generator fast enough to run in the tests)."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    out = base.copy()
    if rows.size == 0:
        return out
    ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    a = alpha[ys, xs, None]
    out[ys, xs] = base[ys, xs] * (1.0 - a) + np.broadcast_to(layer, base.shape)[ys, xs] * a
    return out


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square, as separable running maxima (PIL's MaxFilter is slow)."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, r + 1):
            fwd = [slice(None)] * 2
            bwd = [slice(None)] * 2
            fwd[axis], bwd[axis] = slice(k, None), slice(None, -k)
            out[tuple(fwd)] |= src[tuple(bwd)]
            out[tuple(bwd)] |= src[tuple(fwd)]
    return out


def smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency value noise in [0, 1]: a coarse random grid upsampled bicubically.

    Low frequency on purpose: per-pixel noise would make the PNGs several times larger.
    """
    w, h = size
    grid = rng.random((cells[1], cells[0])).astype(np.float32)
    up = Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def vertical_gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> FloatImg:
    w, h = size
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    row = color(top) * (1 - t) + color(bottom) * t
    return np.broadcast_to(row, (h, w, 3)).copy()


def vignette(img: FloatImg, strength: float = 0.18) -> FloatImg:
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / math.sqrt(2)
    return img * (1.0 - strength * r**2)[..., None]


def blur_alpha(alpha: Alpha, radius: float) -> Alpha:
    img = Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8), "L")
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def contact_shadow(img: FloatImg, box: tuple[float, float, float, float], radius: float, strength: float) -> FloatImg:
    """Darken the background under a product with a soft elliptical shadow."""
    h, w, _ = img.shape
    a = shape_alpha((w, h), lambda d, s: d.ellipse([v * s for v in box], fill=255))
    a = blur_alpha(a, radius)
    return img * (1.0 - strength * a)[..., None]


def cylinder_shade(size: tuple[int, int], cx: float, rx: float) -> np.ndarray:
    """Per-pixel shading factor of a vertical cylinder lit from the upper left, with a highlight.

    Returns HxWx2: [..., 0] multiplies the base colour, [..., 1] is additive white specular.
    """
    w, h = size
    x = np.arange(w, dtype=np.float32)
    t = np.clip((x - cx) / max(rx, 1.0), -1.0, 1.0)
    normal_z = np.sqrt(1.0 - t**2)
    diffuse = 0.42 + 0.58 * np.clip(0.85 * normal_z - 0.4 * t, 0.0, 1.0)
    spec = 0.55 * np.exp(-(((t + 0.5) / 0.09) ** 2)) + 0.12 * np.exp(-(((t - 0.72) / 0.06) ** 2))
    out = np.zeros((h, w, 2), dtype=np.float32)
    out[..., 0] = diffuse[None, :]
    out[..., 1] = spec[None, :]
    return out


def shaded(base: RGB, shade: np.ndarray, spec_scale: float = 1.0) -> FloatImg:
    c = color(base)[None, None, :]
    return np.clip(c * shade[..., 0:1] + spec_scale * shade[..., 1:2], 0.0, 1.0)


def text_layer(
    size: tuple[int, int],
    text: str,
    xy: tuple[float, float],
    px: int,
    anchor: str = "mm",
    angle: float = 0.0,
) -> Alpha:
    """Anti-aliased coverage of a text string (optionally rotated about its anchor point)."""
    w, h = size
    if angle == 0.0:
        img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(img).text(xy, text, fill=255, font=font(px), anchor=anchor)
        return np.asarray(img, dtype=np.float32) / 255.0
    # Rotated: draw centred on a big square, rotate about the centre, paste at xy.
    side = int(math.hypot(w, h))
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).text((side / 2, side / 2), text, fill=255, font=font(px), anchor="mm")
    img = img.rotate(angle, resample=Image.BICUBIC, center=(side / 2, side / 2))
    canvas = Image.new("L", (w, h), 0)
    canvas.paste(img, (round(xy[0] - side / 2), round(xy[1] - side / 2)))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def mask_from(alpha: Alpha, grow: int = 0, threshold: float = 0.02) -> Image.Image:
    """Binary mask (L, 0/255) of where ``alpha`` covers, grown by ``grow`` px.

    Growing is deliberate: a mask marks what an edit MAY change, and an edit legitimately
    touches the anti-aliased rim and a few pixels of surroundings (shadows, blending).
    """
    covered = alpha > threshold
    if grow > 0:
        covered = dilate(covered, grow)
    return Image.fromarray(np.where(covered, 255, 0).astype(np.uint8), "L")


def rect_mask(size: tuple[int, int], *boxes: tuple[float, float, float, float], ellipse: bool = False) -> Image.Image:
    m = Image.new("L", size, 0)
    d = ImageDraw.Draw(m)
    for b in boxes:
        (d.ellipse if ellipse else d.rectangle)([round(v) for v in b], fill=255)
    return m


def invert(mask: Image.Image) -> Image.Image:
    return Image.fromarray(255 - np.asarray(mask, dtype=np.uint8), "L")


def union(*masks: Image.Image) -> Image.Image:
    return Image.fromarray(np.maximum.reduce([np.asarray(m, dtype=np.uint8) for m in masks]), "L")


def save_png(img: Image.Image, path: Path) -> None:
    """Save with fixed options: no metadata (Pillow writes no tIME chunk unless asked), fixed zlib level."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6, optimize=False)
    path.write_bytes(buf.getvalue())


# --------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------


def studio_backdrop(size: tuple[int, int], top: RGB, bottom: RGB, seed: int) -> FloatImg:
    """Seamless paper backdrop: gradient, gentle light falloff, faint paper mottling."""
    rng = np.random.default_rng(seed)
    img = vertical_gradient(size, top, bottom)
    mottling = smooth_noise(rng, size, (6, 6)) - 0.5
    img = img * (1.0 + 0.05 * mottling[..., None])
    return vignette(img, 0.22)


def wood_surface(size: tuple[int, int], seed: int, base: RGB = (140, 92, 56)) -> FloatImg:
    """Wooden table top: warped sinusoidal grain plus a few darker planks."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = smooth_noise(rng, size, (5, 4)) * 26.0
    grain = 0.5 + 0.5 * np.sin((yy * 0.55 + warp + xx * 0.03) * 0.9)
    fine = smooth_noise(rng, size, (48, 24))
    planks = np.floor(xx / (w / 3.2))
    plank_tone = (rng.random(8).astype(np.float32)[planks.astype(int) % 8] - 0.5) * 0.12
    tone = 0.78 + 0.16 * grain + 0.08 * fine + plank_tone
    img = color(base)[None, None, :] * tone[..., None]
    return np.clip(img, 0.0, 1.0)


def cluttered_room(size: tuple[int, int], seed: int) -> FloatImg:
    """A busy, out-of-focus shop floor: wall, shelf, boxes, plant, floor, all blurred like a
    shallow depth of field, so a background-change edit has something real to replace."""
    rng = np.random.default_rng(seed)
    w, h = size
    horizon = int(h * 0.62)
    img = Image.new("RGB", size, (0, 0, 0))
    wall = to_image(studio_backdrop((w, horizon), (196, 188, 176), (168, 158, 146), seed + 1))
    floor = to_image(wood_surface((w, h - horizon), seed + 2, base=(120, 96, 74)))
    img.paste(wall, (0, 0))
    img.paste(floor, (0, horizon))
    d = ImageDraw.Draw(img)
    # shelf with assorted boxes
    d.rectangle([20, 70, w - 30, 80], fill=(92, 70, 52))
    d.rectangle([20, 170, w - 30, 180], fill=(92, 70, 52))
    palette = [(186, 64, 52), (58, 96, 150), (222, 190, 92), (70, 128, 90), (230, 230, 224), (40, 40, 44)]
    for shelf_y in (70, 170):
        x = 30
        while x < w - 70:
            bw, bh = int(rng.integers(26, 64)), int(rng.integers(28, 62))
            c = palette[int(rng.integers(0, len(palette)))]
            d.rectangle([x, shelf_y - bh, x + bw, shelf_y], fill=c)
            d.rectangle(
                [x + 4, shelf_y - bh + 6, x + bw - 4, shelf_y - bh + 12], fill=tuple(min(255, v + 40) for v in c)
            )
            x += bw + int(rng.integers(4, 14))
    # potted plant on the left
    d.rectangle([36, horizon - 70, 86, horizon], fill=(150, 84, 60))
    for i in range(14):
        ang = -math.pi / 2 + (i - 6.5) * 0.19
        L = 70 + 30 * math.sin(i * 1.7)
        x2, y2 = 61 + math.cos(ang) * L, horizon - 70 + math.sin(ang) * L
        d.line([61, horizon - 70, x2, y2], fill=(56, 110 + (i * 7) % 40, 60), width=9)
    # cardboard boxes on the floor at the right
    d.rectangle([w - 150, horizon - 40, w - 40, horizon + 40], fill=(176, 134, 88))
    d.rectangle([w - 150, horizon - 40, w - 40, horizon - 30], fill=(150, 112, 72))
    d.rectangle([w - 120, horizon - 95, w - 60, horizon - 40], fill=(190, 146, 98))
    img = img.filter(ImageFilter.GaussianBlur(3.0))  # depth of field: background is soft
    return vignette(to_float(img), 0.25)


def table_scene(size: tuple[int, int], seed: int) -> FloatImg:
    """Empty wooden table against a warm wall, with a small plant on the far left."""
    w, h = size
    edge = int(h * 0.55)
    img = np.zeros((h, w, 3), dtype=np.float32)
    img[:edge] = studio_backdrop((w, edge), (226, 214, 196), (200, 186, 166), seed)
    table = wood_surface((w, h - edge), seed + 1)
    # perspective-ish: darken the table towards the front edge
    t = np.linspace(0.0, 1.0, h - edge, dtype=np.float32)[:, None, None]
    img[edge:] = table * (1.05 - 0.25 * t)
    img[edge : edge + 3] *= 0.7  # the table's back edge
    # small plant (far left) so the scene is not empty
    pot = shape_alpha(
        (w, h),
        lambda d, s: d.polygon(
            [
                (30 * s, (edge + 18) * s),
                (78 * s, (edge + 18) * s),
                (72 * s, (edge + 70) * s),
                (36 * s, (edge + 70) * s),
            ],
            fill=255,
        ),
    )
    img = contact_shadow(img, (22, edge + 60, 92, edge + 80), 6, 0.45)
    img = composite(img, shaded((196, 190, 180), cylinder_shade((w, h), 54, 26)), pot)
    leaves = shape_alpha(
        (w, h),
        lambda d, s: [
            d.ellipse(
                [
                    (54 + 22 * math.cos(a) - 11) * s,
                    (edge + 4 - 34 * abs(math.sin(a)) - 16) * s,
                    (54 + 22 * math.cos(a) + 11) * s,
                    (edge + 4 - 34 * abs(math.sin(a)) + 16) * s,
                ],
                fill=255,
            )
            for a in np.linspace(0.3, math.pi - 0.3, 7)
        ],
    )
    img = composite(img, np.broadcast_to(color((64, 120, 70)), img.shape) * 1.0, leaves)
    return vignette(img, 0.2)


# --------------------------------------------------------------------------------------------
# Products. Each returns (image, product_alpha) so masks can be derived exactly.
# --------------------------------------------------------------------------------------------


class Rendered(NamedTuple):
    img: FloatImg
    alpha: Alpha  # where the product is (for product / background masks)


def draw_bottle(
    bg: FloatImg, cx: float, bottom: float, height: float, glass: RGB, label_text: str, label_color: RGB
) -> Rendered:
    """A glass bottle with cap and wrap-around label, cylinder-shaded."""
    h, w, _ = bg.shape
    size = (w, h)
    bw = height * 0.36  # body width
    body_top = bottom - height * 0.62
    neck_w = bw * 0.34
    neck_top = bottom - height * 0.9
    cap_top = bottom - height
    img = contact_shadow(bg, (cx - bw * 0.62, bottom - 12, cx + bw * 0.62, bottom + 12), 8, 0.55)

    def body(d: ImageDraw.ImageDraw, s: float) -> None:
        d.rounded_rectangle(
            [(cx - bw / 2) * s, body_top * s, (cx + bw / 2) * s, bottom * s], radius=bw * 0.12 * s, fill=255
        )
        # shoulders: ellipse joining body and neck
        d.ellipse(
            [(cx - bw / 2) * s, (body_top - bw * 0.42) * s, (cx + bw / 2) * s, (body_top + bw * 0.42) * s], fill=255
        )
        d.rectangle([(cx - neck_w / 2) * s, (neck_top + 2) * s, (cx + neck_w / 2) * s, body_top * s], fill=255)

    body_a = shape_alpha(size, body)
    img = composite(img, shaded(glass, cylinder_shade(size, cx, bw / 2)), body_a * 0.97)
    cap_a = shape_alpha(
        size,
        lambda d, s: d.rounded_rectangle(
            [(cx - neck_w * 0.62) * s, cap_top * s, (cx + neck_w * 0.62) * s, (neck_top + 4) * s],
            radius=3 * s,
            fill=255,
        ),
    )
    img = composite(img, shaded((200, 200, 204), cylinder_shade(size, cx, neck_w * 0.62)), cap_a)
    # label band
    ly0, ly1 = body_top + height * 0.14, bottom - height * 0.12
    label_a = shape_alpha(
        size, lambda d, s: d.rectangle([(cx - bw / 2) * s, ly0 * s, (cx + bw / 2) * s, ly1 * s], fill=255)
    )
    img = composite(img, shaded(label_color, cylinder_shade(size, cx, bw / 2), 0.35), label_a)
    txt = text_layer(size, label_text, (cx, (ly0 + ly1) / 2 - 6), int(bw * 0.2))
    img = composite(img, np.broadcast_to(color((40, 44, 52)), img.shape), txt * label_a)
    small = text_layer(size, "NATURAL MINERAL WATER", (cx, (ly0 + ly1) / 2 + bw * 0.16), max(7, int(bw * 0.065)))
    img = composite(img, np.broadcast_to(color((70, 74, 84)), img.shape), small * label_a)
    alpha = np.maximum.reduce([body_a, cap_a, label_a])
    return Rendered(img, alpha)


def draw_mug(bg: FloatImg, cx: float, bottom: float, height: float, glaze: RGB) -> Rendered:
    """A ceramic mug: shaded body, elliptical rim with a darker inside, ring handle."""
    h, w, _ = bg.shape
    size = (w, h)
    mw = height * 0.92
    top = bottom - height
    rim_h = mw * 0.22
    img = contact_shadow(bg, (cx - mw * 0.6, bottom - 10, cx + mw * 0.75, bottom + 12), 8, 0.55)
    hx0, hx1 = cx + mw * 0.36, cx + mw * 0.78
    handle_a = shape_alpha(
        size,
        lambda d, s: d.ellipse(
            [hx0 * s, (top + height * 0.2) * s, hx1 * s, (top + height * 0.75) * s],
            outline=255,
            width=int(mw * 0.09 * s),
        ),
    )
    img = composite(img, shaded(glaze, cylinder_shade(size, (hx0 + hx1) / 2, (hx1 - hx0) / 2)), handle_a)

    def body(d: ImageDraw.ImageDraw, s: float) -> None:
        d.rectangle([(cx - mw / 2) * s, (top + rim_h / 2) * s, (cx + mw / 2) * s, (bottom - mw * 0.06) * s], fill=255)
        d.ellipse([(cx - mw / 2) * s, (bottom - mw * 0.12) * s, (cx + mw / 2) * s, bottom * s], fill=255)
        d.ellipse([(cx - mw / 2) * s, top * s, (cx + mw / 2) * s, (top + rim_h) * s], fill=255)

    body_a = shape_alpha(size, body)
    img = composite(img, shaded(glaze, cylinder_shade(size, cx, mw / 2)), body_a)
    inner_a = shape_alpha(
        size,
        lambda d, s: d.ellipse(
            [(cx - mw / 2 + 5) * s, (top + 3) * s, (cx + mw / 2 - 5) * s, (top + rim_h - 3) * s], fill=255
        ),
    )
    inner = vertical_gradient(size, tuple(int(v * 0.45) for v in glaze), tuple(int(v * 0.8) for v in glaze))  # type: ignore[arg-type]
    img = composite(img, inner, inner_a)
    alpha = np.maximum(body_a, handle_a)
    return Rendered(img, alpha)


def draw_gift_box(bg: FloatImg, x0: float, bottom: float, fw: float, fh: float, paper: RGB, ribbon: RGB) -> Rendered:
    """A gift box seen slightly from above-right: front, top and side faces plus a ribbon."""
    h, w, _ = bg.shape
    size = (w, h)
    depth_x, depth_y = fw * 0.32, fh * 0.28
    x1, top = x0 + fw, bottom - fh
    img = contact_shadow(bg, (x0 - 10, bottom - 14, x1 + depth_x + 10, bottom + 10), 9, 0.55)
    front = [(x0, top), (x1, top), (x1, bottom), (x0, bottom)]
    side = [(x1, top), (x1 + depth_x, top - depth_y), (x1 + depth_x, bottom - depth_y), (x1, bottom)]
    lid = [(x0, top), (x0 + depth_x, top - depth_y), (x1 + depth_x, top - depth_y), (x1, top)]
    faces = [(front, 0.95), (side, 0.7), (lid, 1.12)]
    alpha_all = np.zeros((h, w), dtype=np.float32)
    rng = np.random.default_rng(7)
    paper_tex = 1.0 + 0.04 * (smooth_noise(rng, size, (40, 40)) - 0.5)
    for poly, tone in faces:
        a = shape_alpha(size, lambda d, s, p=poly: d.polygon([(px * s, py * s) for px, py in p], fill=255))
        img = composite(img, np.clip(color(paper)[None, None, :] * tone * paper_tex[..., None], 0, 1), a)
        alpha_all = np.maximum(alpha_all, a)
    # ribbon: vertical strip on the front, matching strip across the lid
    rw = fw * 0.1
    rx = x0 + fw * 0.5
    rib = shape_alpha(
        size, lambda d, s: d.rectangle([(rx - rw / 2) * s, top * s, (rx + rw / 2) * s, bottom * s], fill=255)
    )
    rib_lid = shape_alpha(
        size,
        lambda d, s: d.polygon(
            [
                ((rx - rw / 2) * s, top * s),
                ((rx + rw / 2) * s, top * s),
                ((rx + rw / 2 + depth_x) * s, (top - depth_y) * s),
                ((rx - rw / 2 + depth_x) * s, (top - depth_y) * s),
            ],
            fill=255,
        ),
    )
    img = composite(img, np.broadcast_to(color(ribbon) * 0.95, img.shape), rib)
    img = composite(img, np.broadcast_to(np.clip(color(ribbon) * 1.15, 0, 1), img.shape), rib_lid)
    # bow on the lid
    bx, by = rx + depth_x / 2, top - depth_y / 2
    bow = shape_alpha(
        size,
        lambda d, s: [
            d.ellipse([(bx - 34) * s, (by - 22) * s, (bx - 2) * s, (by + 2) * s], fill=255),
            d.ellipse([(bx + 2) * s, (by - 22) * s, (bx + 34) * s, (by + 2) * s], fill=255),
        ],
    )
    img = composite(img, np.broadcast_to(np.clip(color(ribbon) * 1.05, 0, 1), img.shape), bow)
    alpha_all = np.maximum.reduce([alpha_all, rib, rib_lid, bow])
    return Rendered(img, alpha_all)


def catmull_rom(points: list[tuple[float, float]], steps: int = 10) -> list[tuple[float, float]]:
    """A smooth open curve through ``points`` (end points repeated as phantom controls)."""
    pts = [points[0], *points, points[-1]]
    out: list[tuple[float, float]] = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        for k in range(steps):
            t = k / steps
            t2, t3 = t * t, t * t * t
            out.append(
                tuple(  # type: ignore[arg-type]
                    0.5
                    * (
                        2 * p1[j]
                        + (-p0[j] + p2[j]) * t
                        + (2 * p0[j] - 5 * p1[j] + 4 * p2[j] - p3[j]) * t2
                        + (-p0[j] + 3 * p1[j] - 3 * p2[j] + p3[j]) * t3
                    )
                    for j in range(2)
                )
            )
    out.append(points[-1])
    return out


# Side view of a low-top sneaker, toe to the right: (x along the length, height), both as
# fractions of the length. Heel bottom -> heel counter -> padded collar -> tongue -> lacing
# -> toe box -> toe tip.
SNEAKER_UPPER = [
    (0.03, 0.0),
    (0.0, 0.1),
    (0.02, 0.24),
    (0.07, 0.31),
    (0.16, 0.27),
    (0.25, 0.27),
    (0.31, 0.36),
    (0.37, 0.37),
    (0.42, 0.32),
    (0.56, 0.25),
    (0.7, 0.18),
    (0.84, 0.13),
    (0.95, 0.09),
    (1.0, 0.04),
    (1.0, 0.0),
]


def draw_sneaker(bg: FloatImg, x0: float, bottom: float, length: float, upper: RGB, accent: RGB, trim: RGB) -> Rendered:
    """A low-top sneaker in side view: cupsole, smooth upper, toe cap, heel tab, laces, side stripe."""
    h, w, _ = bg.shape
    size = (w, h)
    L = length
    sole_h = L * 0.085
    base = bottom - sole_h * 0.55  # the upper sits into the sole
    img = contact_shadow(bg, (x0 - 10, bottom - 10, x0 + L + 10, bottom + 9), 7, 0.6)

    def xy(u: float, v: float, s: float) -> tuple[float, float]:
        return ((x0 + u * L) * s, (base - v * L) * s)

    outline = catmull_rom(SNEAKER_UPPER, 12)
    up_a = shape_alpha(size, lambda d, s: d.polygon([xy(u, v, s) for u, v in outline], fill=255))
    hi = tuple(min(255, int(c * 1.12 + 8)) for c in upper)
    lo = tuple(int(c * 0.78) for c in upper)
    tone = vertical_gradient(size, hi, lo)  # type: ignore[arg-type]
    # darker rim so the silhouette reads as a rounded, stitched object, not a flat cut-out
    rim = np.clip(up_a - blur_alpha(up_a, 3.0) * 1.0, 0.0, 1.0)
    img = composite(img, tone * (1.0 - 0.5 * rim[..., None]), up_a)
    # toe cap and heel counter: overlays in the trim colour, clipped to the upper
    toe = shape_alpha(size, lambda d, s: d.ellipse([*xy(0.74, 0.17, s), *xy(1.12, -0.1, s)], fill=255))
    heel = shape_alpha(size, lambda d, s: d.ellipse([*xy(-0.2, 0.3, s), *xy(0.17, -0.12, s)], fill=255))
    trim_c = np.broadcast_to(color(trim), img.shape)
    img = composite(img, trim_c, toe * up_a * 0.9)
    img = composite(img, trim_c, heel * up_a * 0.9)
    # collar lining visible at the ankle opening
    collar = shape_alpha(
        size,
        lambda d, s: d.line(
            [xy(u, v - 0.015, s) for u, v in catmull_rom([(0.07, 0.3), (0.16, 0.26), (0.25, 0.26), (0.31, 0.34)], 6)],
            fill=255,
            width=int(L * 0.02 * s),
            joint="curve",
        ),
    )
    img = composite(img, np.broadcast_to(color((60, 60, 64)), img.shape), collar * up_a)
    # side stripe: a generic swept band (no brand shapes)
    band = catmull_rom([(0.2, 0.05), (0.34, 0.12), (0.5, 0.2), (0.62, 0.2)], 8)
    stripe = shape_alpha(
        size, lambda d, s: d.line([xy(u, v, s) for u, v in band], fill=255, width=int(L * 0.045 * s), joint="curve")
    )
    img = composite(img, np.broadcast_to(color(accent), img.shape), stripe * up_a)
    # eyestay with laces
    eyestay = [(0.33, 0.33), (0.42, 0.29), (0.55, 0.23), (0.66, 0.18)]
    img = composite(
        img,
        np.broadcast_to(np.clip(color(upper) * 0.7, 0, 1), img.shape),
        shape_alpha(
            size,
            lambda d, s: d.line([xy(u, v, s) for u, v in eyestay], fill=255, width=int(L * 0.03 * s), joint="curve"),
        )
        * up_a,
    )
    laces = shape_alpha(
        size,
        lambda d, s: [
            d.line(
                [xy(0.35 + 0.075 * i, 0.35 - 0.04 * i, s), xy(0.39 + 0.075 * i, 0.3 - 0.04 * i, s)],
                fill=255,
                width=int(L * 0.014 * s),
            )
            for i in range(4)
        ],
    )
    img = composite(img, np.broadcast_to(color((246, 246, 242)), img.shape), laces)
    # cupsole with a slight toe spring, a foxing line and dark tread
    sole = shape_alpha(
        size,
        lambda d, s: d.rounded_rectangle(
            [(x0 - L * 0.015) * s, (bottom - sole_h) * s, (x0 + L * 1.02) * s, bottom * s],
            radius=sole_h * 0.5 * s,
            fill=255,
        ),
    )
    img = composite(img, vertical_gradient(size, (250, 250, 246), (214, 214, 208)), sole)
    fox = shape_alpha(
        size,
        lambda d, s: d.line(
            [(x0 * s, (bottom - sole_h * 0.55) * s), ((x0 + L) * s, (bottom - sole_h * 0.55) * s)],
            fill=255,
            width=int(2 * s),
        ),
    )
    img = composite(img, np.broadcast_to(color((170, 170, 166)), img.shape), fox * sole)
    tread = shape_alpha(
        size,
        lambda d, s: d.rectangle([(x0 - L * 0.02) * s, (bottom - 4) * s, (x0 + L * 1.03) * s, bottom * s], fill=255),
    )
    img = composite(img, np.broadcast_to(color((96, 96, 94)), img.shape), tread * sole)
    return Rendered(img, np.maximum(up_a, sole))


# --------------------------------------------------------------------------------------------
# Overlays typical of marketplace listings. Each returns the overlay's alpha for its mask.
# --------------------------------------------------------------------------------------------


def promo_tag(
    img: FloatImg, box: tuple[float, float, float, float], text: str, fill: RGB = (214, 38, 44)
) -> tuple[FloatImg, Alpha]:
    h, w, _ = img.shape
    a = shape_alpha((w, h), lambda d, s: d.rounded_rectangle([v * s for v in box], radius=10 * s, fill=255))
    img = composite(img, np.broadcast_to(color(fill), img.shape), a)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    t = text_layer((w, h), text, (cx, cy), int((box[3] - box[1]) * 0.42))
    img = composite(img, np.ones_like(img), t)
    return img, a


def watermark(
    img: FloatImg, text: str, center: tuple[float, float], px: int, angle: float, opacity: float = 0.42
) -> tuple[FloatImg, Alpha]:
    h, w, _ = img.shape
    a = text_layer((w, h), text, center, px, angle=angle)
    img = composite(img, np.ones_like(img), a * opacity)
    return img, a


def price_label(img: FloatImg, box: tuple[float, float, float, float], text: str) -> tuple[FloatImg, Alpha]:
    h, w, _ = img.shape
    x0, y0, x1, y1 = box
    a = shape_alpha(
        (w, h),
        lambda d, s: d.polygon(
            [
                (x0 * s, ((y0 + y1) / 2) * s),
                ((x0 + 18) * s, y0 * s),
                (x1 * s, y0 * s),
                (x1 * s, y1 * s),
                ((x0 + 18) * s, y1 * s),
            ],
            fill=255,
        ),
    )
    hole = shape_alpha(
        (w, h),
        lambda d, s: d.ellipse(
            [(x0 + 9) * s, ((y0 + y1) / 2 - 4) * s, (x0 + 17) * s, ((y0 + y1) / 2 + 4) * s], fill=255
        ),
    )
    img = composite(img, np.broadcast_to(color((250, 204, 60)), img.shape), a)
    img = composite(img, np.broadcast_to(color((120, 100, 60)), img.shape), hole)
    t = text_layer((w, h), text, ((x0 + 18 + x1) / 2, (y0 + y1) / 2), int((y1 - y0) * 0.5))
    img = composite(img, np.broadcast_to(color((30, 30, 30)), img.shape), t)
    return img, a


def banner(
    img: FloatImg, box: tuple[float, float, float, float], text: str, fill: RGB, ink: RGB
) -> tuple[FloatImg, Alpha]:
    h, w, _ = img.shape
    a = shape_alpha((w, h), lambda d, s: d.rectangle([v * s for v in box], fill=255))
    img = composite(img, np.broadcast_to(color(fill), img.shape), a * 0.92)
    t = text_layer((w, h), text, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), int((box[3] - box[1]) * 0.5))
    img = composite(img, np.broadcast_to(color(ink), img.shape), t)
    return img, a


# --------------------------------------------------------------------------------------------
# Photos shipped inside the scikit-image wheel
# --------------------------------------------------------------------------------------------

# name -> (file in skimage/data, license line for README). Licenses are quoted from the
# docstrings of the matching `skimage.data` functions (skimage/data/README.txt has none).
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": (
        "astronaut.png",
        "Eileen Collins, NASA Great Images database; public domain (no known copyright restrictions).",
    ),
    "coffee": ("coffee.png", "Courtesy of Pikolo Espresso Bar; CC0 by the photographer (Rachel Michetti)."),
    "chelsea": ("chelsea.png", "Chelsea the cat; CC0 by the photographer (Stefan van der Walt)."),
    "rocket": (
        "rocket.jpg",
        "DSCOVR launch on Falcon 9, SpaceX Photos on Flickr; released into the public domain by SpaceX.",
    ),
    "camera": (
        "camera.png",
        "Man with a camera on a tripod (grayscale; converted to RGB); CC0 by the photographer (Lav Varshney).",
    ),
    "coins": (
        "coins.png",
        "Greek coins from Pompeii, Brooklyn Museum Collection (grayscale; converted to RGB); no known copyright restrictions.",
    ),
}


def skimage_photo(name: str) -> Image.Image:
    """Read a photo straight from the installed scikit-image package (never from the network)."""
    import skimage  # imported here so `--help` works without it

    path = Path(skimage.__file__).resolve().parent / "data" / SKIMAGE_PHOTOS[name][0]
    if not path.is_file():
        raise SystemExit(
            f"make_caseset: {path} is missing; this scikit-image build does not ship '{name}' in its wheel"
        )
    with Image.open(path) as im:
        img = im.convert("RGB")
    if max(img.size) > MAX_SIDE:
        scale = MAX_SIDE / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    return img


def scaled_boxes(
    orig_size: tuple[int, int], new_size: tuple[int, int], *boxes: tuple[float, float, float, float]
) -> list[tuple[float, float, float, float]]:
    """Boxes measured on the original photo, mapped onto the resized one."""
    sx, sy = new_size[0] / orig_size[0], new_size[1] / orig_size[1]
    return [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes]


# --------------------------------------------------------------------------------------------
# The set
# --------------------------------------------------------------------------------------------


def build_images() -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    """All images and masks, keyed by their file stem."""
    images: dict[str, Image.Image] = {}
    masks: dict[str, Image.Image] = {}
    sq = (512, 512)
    land = (512, 384)

    # --- bottle shots -------------------------------------------------------------------
    bg = studio_backdrop(sq, (236, 226, 208), (204, 190, 168), seed=11)
    r = draw_bottle(bg, 256, 452, 360, glass=(70, 150, 110), label_text="NORDLY", label_color=(238, 234, 222))
    images["bottle_plain"] = to_image(r.img)
    masks["bottle_plain_product"] = mask_from(r.alpha, grow=4)
    # empty band above the bottle where a slogan can go (the bottle's cap starts at y=92)
    masks["bottle_plain_top"] = rect_mask(sq, (40, 14, 472, 84))
    # below and around the base: where a reflection / soft shadow may be added
    masks["bottle_plain_base"] = union(rect_mask(sq, (120, 400, 392, 512)), mask_from(r.alpha, grow=4))

    wm_img, wm_a = watermark(r.img.copy(), "stockshop SAMPLE", (256, 262), 46, angle=24)
    images["bottle_watermark"] = to_image(wm_img)
    masks["bottle_watermark"] = mask_from(wm_a, grow=3)

    bn_img, bn_a = banner(r.img.copy(), (0, 470, 512, 512), "SUMMER SALE", fill=(236, 96, 40), ink=(255, 255, 255))
    images["bottle_banner"] = to_image(bn_img)
    masks["bottle_banner"] = mask_from(bn_a, grow=1)

    # --- mug shots ----------------------------------------------------------------------
    bg = studio_backdrop(sq, (210, 222, 230), (176, 190, 202), seed=21)
    r = draw_mug(bg, 236, 420, 230, glaze=(196, 88, 64))
    images["mug_plain"] = to_image(r.img)
    masks["mug_plain_product"] = mask_from(r.alpha, grow=4)
    masks["mug_plain_background"] = invert(mask_from(r.alpha, threshold=0.98))  # product interior must stay

    pr_img, pr_a = price_label(r.img.copy(), (352, 440, 496, 492), "$19.99")
    images["mug_price"] = to_image(pr_img)
    masks["mug_price"] = mask_from(pr_a, grow=3)

    # --- gift boxes ---------------------------------------------------------------------
    bg = studio_backdrop(sq, (244, 236, 238), (214, 200, 206), seed=31)
    r = draw_gift_box(bg, 120, 430, 240, 200, paper=(40, 84, 140), ribbon=(214, 176, 82))
    box_img = r.img
    # sticker label on the front face, left of the ribbon
    lbl_box = (138, 262, 226, 302)
    lbl_a = shape_alpha(sq, lambda d, s: d.rounded_rectangle([v * s for v in lbl_box], radius=6 * s, fill=255))
    box_img = composite(box_img, np.broadcast_to(color((250, 248, 240)), box_img.shape), lbl_a)
    t = text_layer(sq, "NEW", ((lbl_box[0] + lbl_box[2]) / 2, (lbl_box[1] + lbl_box[3]) / 2), 24)
    box_img = composite(box_img, np.broadcast_to(color((200, 40, 48)), box_img.shape), t)
    images["box_label"] = to_image(box_img)
    masks["box_label"] = mask_from(lbl_a, grow=4)

    # dusty, scratched copy of the box for product retouching
    rng = np.random.default_rng(32)
    dusty = box_img.copy()
    specks = shape_alpha(
        sq,
        lambda d, s: [
            d.ellipse([(x - rr) * s, (y - rr) * s, (x + rr) * s, (y + rr) * s], fill=255)
            for x, y, rr in zip(rng.uniform(125, 400, 70), rng.uniform(180, 425, 70), rng.uniform(0.8, 2.2, 70))
        ],
    )
    scratches = shape_alpha(
        sq,
        lambda d, s: [
            d.line([(x * s, y * s), ((x + dx) * s, (y + dy) * s)], fill=255, width=int(1.2 * s))
            for x, y, dx, dy in zip(
                rng.uniform(130, 330, 9), rng.uniform(240, 400, 9), rng.uniform(-40, 40, 9), rng.uniform(-12, 12, 9)
            )
        ],
    )
    dusty = composite(dusty, np.broadcast_to(color((226, 222, 210)), dusty.shape), specks * r.alpha * 0.85)
    dusty = composite(dusty, np.broadcast_to(color((200, 200, 196)), dusty.shape), scratches * r.alpha * 0.7)
    images["box_dusty"] = to_image(dusty)
    masks["box_dusty"] = mask_from(r.alpha, grow=3)

    # --- sneakers -----------------------------------------------------------------------
    bg = cluttered_room(sq, seed=41)
    r = draw_sneaker(bg, 86, 430, 350, upper=(46, 62, 104), accent=(236, 120, 60), trim=(34, 44, 74))
    images["sneaker_clutter"] = to_image(r.img)
    masks["sneaker_clutter_background"] = Image.fromarray(
        np.where(dilate(r.alpha < 0.98, 2), 255, 0).astype(np.uint8), "L"
    )

    bg = studio_backdrop(sq, (214, 224, 234), (178, 190, 204), seed=42)
    r = draw_sneaker(bg, 80, 380, 350, upper=(238, 238, 234), accent=(40, 120, 200), trim=(205, 208, 212))
    images["sneaker_white"] = to_image(r.img)
    tg_img, tg_a = promo_tag(r.img.copy(), (20, 20, 190, 80), "SALE -30%")
    images["sneaker_promo"] = to_image(tg_img)
    masks["sneaker_promo_tag"] = mask_from(tg_a, grow=4)

    # --- scenes for add-object ----------------------------------------------------------
    images["table_scene"] = to_image(table_scene(land, seed=51))
    masks["table_scene_right"] = rect_mask(land, (250, 110, 500, 384))
    masks["table_scene_center"] = rect_mask(land, (110, 90, 490, 384))

    bg = studio_backdrop(sq, (246, 222, 214), (226, 196, 196), seed=61)
    # leaf shadows on the backdrop, as in many lifestyle product shots
    rng = np.random.default_rng(62)
    leaves = shape_alpha(
        sq,
        lambda d, s: [
            d.ellipse([(x - 40) * s, (y - 12) * s, (x + 40) * s, (y + 12) * s], fill=255)
            for x, y in zip(rng.uniform(300, 500, 10), rng.uniform(20, 220, 10))
        ],
    )
    bg = bg * (1.0 - 0.16 * blur_alpha(leaves, 6))[..., None]
    pod_top, pod_bot, pcx, prx = 330, 470, 256, 170
    bg = contact_shadow(bg, (pcx - prx - 10, pod_bot - 18, pcx + prx + 30, pod_bot + 16), 10, 0.45)
    pod_body = shape_alpha(
        sq,
        lambda d, s: [
            d.rectangle([(pcx - prx) * s, (pod_top + 20) * s, (pcx + prx) * s, (pod_bot - 20) * s], fill=255),
            d.ellipse([(pcx - prx) * s, (pod_bot - 40) * s, (pcx + prx) * s, pod_bot * s], fill=255),
        ],
    )
    bg = composite(bg, shaded((236, 232, 228), cylinder_shade(sq, pcx, prx), 0.4), pod_body)
    pod_lid = shape_alpha(
        sq, lambda d, s: d.ellipse([(pcx - prx) * s, pod_top * s, (pcx + prx) * s, (pod_top + 40) * s], fill=255)
    )
    bg = composite(bg, vertical_gradient(sq, (250, 248, 246), (238, 234, 230)), pod_lid)
    images["podium_scene"] = to_image(vignette(bg, 0.15))
    masks["podium_scene_top"] = rect_mask(sq, (pcx - prx - 20, 90, pcx + prx + 20, pod_top + 44))

    # --- photos -------------------------------------------------------------------------
    for name in SKIMAGE_PHOTOS:
        images[name] = skimage_photo(name)

    # coffee (600x400 original): spoon handle + bowl, and the saucer
    cs = images["coffee"].size
    spoon_m = Image.new("L", cs, 0)
    d = ImageDraw.Draw(spoon_m)
    sx, sy = cs[0] / 600, cs[1] / 400
    d.polygon([(p[0] * sx, p[1] * sy) for p in [(392, 58), (428, 66), (404, 245), (380, 250), (362, 232)]], fill=255)
    d.ellipse([320 * sx, 228 * sy, 412 * sx, 332 * sy], fill=255)
    masks["coffee_spoon"] = Image.fromarray(np.where(dilate(np.asarray(spoon_m) > 0, 3), 255, 0).astype(np.uint8), "L")
    masks["coffee_saucer"] = rect_mask(cs, *scaled_boxes((600, 400), cs, (70, 66, 486, 396)), ellipse=True)

    # camera (512x512): skyline right of the camera, and the low buildings on the far left
    masks["camera_buildings"] = rect_mask(images["camera"].size, (334, 108, 512, 242), (0, 164, 62, 238))

    # coins (384x303): the large coin at the right end of the third row
    masks["coins_large"] = rect_mask(images["coins"].size, (310, 148, 384, 224), ellipse=True)

    # chelsea (451x300): bottom band for a caption; rocket: sky band for a title
    masks["chelsea_bottom"] = rect_mask(
        images["chelsea"].size, (0, 232, images["chelsea"].width, images["chelsea"].height)
    )
    rs = images["rocket"].size
    masks["rocket_sky"] = rect_mask(rs, *scaled_boxes((640, 427), rs, (90, 8, 550, 118)))

    # astronaut (512x512): face and neck, for skin retouching
    masks["astronaut_face"] = rect_mask(images["astronaut"].size, (164, 52, 284, 200), ellipse=True)
    return images, masks


def case(
    id: str,
    category: str,
    language: str,
    instruction: str,
    target_caption: str,
    images: list[str],
    mask: str | None,
    source: str,
) -> dict[str, object]:
    # key order is the manifest's documented order
    return {
        "id": id,
        "category": category,
        "language": language,
        "instruction": instruction,
        "target_caption": target_caption,
        "images": [f"images/{n}.png" for n in images],
        "mask": f"masks/{mask}.png" if mask else None,
        "source": source,
    }


def sk(name: str) -> str:
    return f"skimage.data.{name}"


CASES: list[dict[str, object]] = [
    # remove-object
    case(
        "rm-watermark-bottle",
        "remove-object",
        "en",
        "Remove the diagonal 'stockshop SAMPLE' watermark from the photo and restore the bottle and background underneath.",
        "a clean product photo of a green glass water bottle with a white label on a beige studio background, no watermark",
        ["bottle_watermark"],
        "bottle_watermark",
        PROCEDURAL,
    ),
    case(
        "rm-promo-tag-sneaker",
        "remove-object",
        "zh",
        "去掉左上角红色的“SALE -30%”促销标签，用干净的背景补全该区域。",
        "a white sneaker with a blue stripe on a light gray studio background, no sale tag",
        ["sneaker_promo"],
        "sneaker_promo_tag",
        PROCEDURAL,
    ),
    case(
        "rm-spoon-coffee",
        "remove-object",
        "zh",
        "移除咖啡杯右边的金属勺子，碟子和桌面要自然补全。",
        "an espresso cup on a red saucer on a wooden table, without a spoon",
        ["coffee"],
        "coffee_spoon",
        sk("coffee"),
    ),
    case(
        "rm-buildings-camera",
        "remove-object",
        "en",
        "Remove the buildings and towers on the horizon so only sky and grass remain behind the photographer.",
        "a black and white photo of a man filming with a camera on a tripod in an open grass field under an empty sky",
        ["camera"],
        "camera_buildings",
        sk("camera"),
    ),
    # text-replace
    case(
        "txt-price-mug",
        "text-replace",
        "en",
        "Change the price on the yellow tag from $19.99 to $14.99, keeping the same font and colors.",
        "a terracotta ceramic mug on a blue-gray background with a yellow price tag reading $14.99",
        ["mug_price"],
        "mug_price",
        PROCEDURAL,
    ),
    case(
        "txt-new-box",
        "text-replace",
        "zh",
        "把盒子标签上的“NEW”改成“新品”，字体颜色保持红色，其余不变。",
        "a blue gift box with a gold ribbon and a white sticker with red Chinese text meaning new product",
        ["box_label"],
        "box_label",
        PROCEDURAL,
    ),
    case(
        "txt-banner-bottle",
        "text-replace",
        "zh",
        "把底部橙色横幅上的“SUMMER SALE”改成“年终大促”。",
        "a green glass water bottle on a beige background with an orange banner at the bottom showing Chinese text for year-end sale",
        ["bottle_banner"],
        "bottle_banner",
        PROCEDURAL,
    ),
    # text-add
    case(
        "txtadd-slogan-bottle",
        "text-add",
        "zh",
        "在瓶子上方的空白处添加白色粗体标语“清爽一夏”。",
        "a green glass water bottle on a beige background with a bold white Chinese slogan above it",
        ["bottle_plain"],
        "bottle_plain_top",
        PROCEDURAL,
    ),
    case(
        "txtadd-caption-chelsea",
        "text-add",
        "en",
        "Add the caption 'Monday mood' in bold white letters along the bottom of the photo.",
        "a close-up of a tabby cat with green eyes and the white caption 'Monday mood' at the bottom",
        ["chelsea"],
        "chelsea_bottom",
        sk("chelsea"),
    ),
    case(
        "txtadd-title-rocket",
        "text-add",
        "en",
        "Add the title 'LAUNCH NIGHT' in large white letters across the sky at the top of the image.",
        "a rocket on a launch pad at dusk between lattice towers with the white title 'LAUNCH NIGHT' in the sky",
        ["rocket"],
        "rocket_sky",
        sk("rocket"),
    ),
    # background-change
    case(
        "bg-studio-sneaker",
        "background-change",
        "en",
        "Replace the cluttered shop background with a seamless pure white studio background; keep the sneaker exactly as it is.",
        "a navy blue sneaker with an orange stripe on a seamless pure white studio background",
        ["sneaker_clutter"],
        "sneaker_clutter_background",
        PROCEDURAL,
    ),
    case(
        "bg-marble-mug",
        "background-change",
        "zh",
        "把背景换成白色大理石台面和柔和的窗边自然光，杯子保持不变。",
        "a terracotta ceramic mug standing on a white marble countertop in soft natural window light",
        ["mug_plain"],
        "mug_plain_background",
        PROCEDURAL,
    ),
    case(
        "bg-beach-astronaut",
        "background-change",
        "zh",
        "把人物身后的背景换成傍晚的海边沙滩，人物保持不变。",
        "a smiling woman in an orange space suit standing on a beach at sunset",
        ["astronaut"],
        None,
        sk("astronaut"),
    ),
    # recolor
    case(
        "recolor-bottle-blue",
        "recolor",
        "en",
        "Make the glass bottle cobalt blue; keep the label, cap and background unchanged.",
        "a cobalt blue glass water bottle with a white label on a beige studio background",
        ["bottle_plain"],
        "bottle_plain_product",
        PROCEDURAL,
    ),
    case(
        "recolor-saucer-coffee",
        "recolor",
        "zh",
        "把咖啡杯下面的碟子改成深蓝色，杯子和桌面不变。",
        "an espresso cup with a spoon on a dark blue saucer on a wooden table",
        ["coffee"],
        "coffee_saucer",
        sk("coffee"),
    ),
    case(
        "recolor-coin-gold",
        "recolor",
        "en",
        "Make the large coin at the right end of the third row look like shiny gold; leave the other coins as they are.",
        "rows of ancient silver coins on a dark background with one large shiny gold coin",
        ["coins"],
        "coins_large",
        sk("coins"),
    ),
    # material-style
    case(
        "material-mug-marble",
        "material-style",
        "zh",
        "把马克杯的材质改成带灰色纹理的白色大理石，形状和背景保持不变。",
        "a mug made of white marble with gray veins on a blue-gray studio background",
        ["mug_plain"],
        "mug_plain_product",
        PROCEDURAL,
    ),
    case(
        "style-watercolor-chelsea",
        "material-style",
        "en",
        "Turn this photo into a soft watercolor painting while keeping the composition.",
        "a watercolor painting of a tabby cat with green eyes",
        ["chelsea"],
        None,
        sk("chelsea"),
    ),
    case(
        "style-papercut-rocket",
        "material-style",
        "zh",
        "把这张照片转换成剪纸风格的插画，保留火箭和发射塔的构图。",
        "a paper-cut style illustration of a rocket on a launch pad between lattice towers at dusk",
        ["rocket"],
        None,
        sk("rocket"),
    ),
    # add-object
    case(
        "add-mug-table",
        "add-object",
        "zh",
        "把图2中的马克杯放到图1木桌的右侧，光照和阴影要与场景一致。",
        "a terracotta ceramic mug standing on the right side of a wooden table against a warm beige wall, with a small plant on the left",
        ["table_scene", "mug_plain"],
        "table_scene_right",
        PROCEDURAL,
    ),
    case(
        "add-sneaker-podium",
        "add-object",
        "en",
        "Put the sneaker from image 2 on top of the round white podium in image 1, with a soft contact shadow.",
        "a white sneaker with a blue stripe displayed on a round white podium against a pink backdrop with leaf shadows",
        ["podium_scene", "sneaker_white"],
        "podium_scene_top",
        PROCEDURAL,
    ),
    case(
        "add-bottle-mug-table",
        "add-object",
        "zh",
        "把图2的瓶子和图3的马克杯并排摆放在图1的桌面中央。",
        "a green glass water bottle and a terracotta mug side by side on a wooden table against a warm beige wall",
        ["table_scene", "bottle_plain", "mug_plain"],
        "table_scene_center",
        PROCEDURAL,
    ),
    case(
        "add-hat-chelsea",
        "add-object",
        "en",
        "Put a small red knitted beanie on the cat's head.",
        "a close-up of a tabby cat wearing a small red knitted beanie",
        ["chelsea"],
        None,
        sk("chelsea"),
    ),
    # portrait-retouch
    case(
        "portrait-smooth-astronaut",
        "portrait-retouch",
        "en",
        "Lightly smooth the skin and even out the skin tone on her face; keep her identity, expression and hair unchanged.",
        "a studio portrait of a smiling woman with short hair in an orange space suit, with smooth even skin",
        ["astronaut"],
        "astronaut_face",
        sk("astronaut"),
    ),
    case(
        "portrait-colorize-camera",
        "portrait-retouch",
        "zh",
        "为这张黑白人像照片上色：肤色自然，大衣为深灰色，草地为绿色，天空为淡蓝色。",
        "a color photo of a man in a dark gray coat filming with a camera on a tripod on green grass under a pale blue sky",
        ["camera"],
        None,
        sk("camera"),
    ),
    # product-retouch
    case(
        "prod-clean-box",
        "product-retouch",
        "en",
        "Clean up the gift box: remove the dust specks and scratches so it looks brand new.",
        "a spotless blue gift box with a gold ribbon and a NEW sticker on a pale pink background",
        ["box_dusty"],
        "box_dusty",
        PROCEDURAL,
    ),
    case(
        "prod-reflection-bottle",
        "product-retouch",
        "zh",
        "为瓶子添加柔和的倒影和接触阴影，让它看起来像专业棚拍的商品图。",
        "a professional studio product photo of a green glass water bottle with a soft reflection and contact shadow on a beige background",
        ["bottle_plain"],
        "bottle_plain_base",
        PROCEDURAL,
    ),
    case(
        "prod-combo-mug-box",
        "product-retouch",
        "en",
        "Make one clean product shot: the mug from image 1 standing in front of the gift box from image 2, on a light gray seamless background.",
        "a terracotta ceramic mug in front of a blue gift box with a gold ribbon on a light gray seamless background",
        ["mug_plain", "box_label"],
        None,
        PROCEDURAL,
    ),
]

# edit-v2: the text each text case's output must show (quoted in its instruction), for the OCR
# metrics text_accuracy and text_found.
EXPECTED_TEXT: dict[str, str] = {
    "txt-price-mug": "$14.99",
    "txt-new-box": "新品",
    "txt-banner-bottle": "年终大促",
    "txtadd-slogan-bottle": "清爽一夏",
    "txtadd-caption-chelsea": "Monday mood",
    "txtadd-title-rocket": "LAUNCH NIGHT",
}
TEXT_CATEGORIES = ("text-replace", "text-add")


def cases_for(set_name: str) -> list[dict[str, object]]:
    """The manifest rows of one published version of the set."""
    if set_name == "edit-v1":
        return CASES
    if set_name != "edit-v2":
        raise ValueError(f"unknown case set {set_name!r}; known: {', '.join(SETS)}")
    text_ids = {str(c["id"]) for c in CASES if c["category"] in TEXT_CATEGORIES}
    if text_ids != set(EXPECTED_TEXT):
        raise AssertionError(f"expected_text must cover exactly the text cases: {sorted(text_ids ^ set(EXPECTED_TEXT))}")
    rows = []
    for c in CASES:
        row: dict[str, object] = {}
        for key, value in c.items():
            row[key] = value
            if key == "target_caption" and c["id"] in EXPECTED_TEXT:
                row["expected_text"] = EXPECTED_TEXT[str(c["id"])]
                assert EXPECTED_TEXT[str(c["id"])] in str(c["instruction"]), c["id"]
        rows.append(row)
    return rows


def readme(images: dict[str, Image.Image], set_name: str = LATEST) -> str:
    """README.md for the set: what it is, the manifest format, provenance and licenses."""
    cases = cases_for(set_name)
    v2 = set_name != "edit-v1"
    by_cat: dict[str, int] = {}
    for c in cases:
        by_cat[str(c["category"])] = by_cat.get(str(c["category"]), 0) + 1
    n_zh = sum(c["language"] == "zh" for c in cases)
    lines = [
        f"# Case set `{set_name}`",
        "",
        "Generated by `scripts/make_caseset.py` — do not edit by hand; change the script and re-run it.",
        "Any change to a file here changes the set's fingerprint (`qie-bench cases validate` prints it),",
        f"which makes earlier results incomparable: publish changes as a new set (`{'edit-v3' if v2 else 'edit-v2'}`).",
        "",
        (
            f"{len(cases)} cases ({len(cases) - n_zh} English, {n_zh} Chinese instructions), "
            f"{sum(len(c['images']) > 1 for c in cases)} with several input images, "  # type: ignore[arg-type]
            f"{sum(c['mask'] is not None for c in cases)} with masks"
            + (f", {sum('expected_text' in c for c in cases)} with an expected text." if v2 else ".")
        ),
        "",
        *(
            [
                "## What changed since `edit-v1`",
                "",
                "Only `cases.jsonl`: every `text-replace` and `text-add` case gained `expected_text`, the",
                "text its output must show (the text quoted in its instruction), which the OCR metrics",
                "`text_accuracy` and `text_found` read back from the output. Images, masks, ids,",
                "instructions and captions are unchanged, so seeds are the same; the fingerprint is new.",
                "",
                "| case | expected text |",
                "|---|---|",
                *[f"| `{c['id']}` | {c['expected_text']} |" for c in cases if "expected_text" in c],
                "",
            ]
            if v2
            else []
        ),
        "| category | cases |",
        "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in by_cat.items()],
        "",
        "## Format",
        "",
        *(
            [
                "`cases.jsonl` holds one JSON object per line with the keys `id`, `category`, `language`",
                "(`en`/`zh`), `instruction` (in that language), `target_caption` (English description of the",
                "intended result, for CLIP-Score), `expected_text` (text cases only: the text the output",
                "must show, for the OCR metrics), `images` (1–3 paths relative to this folder; the 2509",
                "pipeline takes them as picture 1, 2, 3), `mask` (path or `null`) and `source`.",
            ]
            if v2
            else [
                "`cases.jsonl` holds one JSON object per line with exactly the keys `id`, `category`, `language`",
                "(`en`/`zh`), `instruction` (in that language), `target_caption` (English description of the",
                "intended result, for CLIP-Score), `images` (1–3 paths relative to this folder; the 2509",
                "pipeline takes them as picture 1, 2, 3), `mask` (path or `null`) and `source`.",
            ]
        ),
        "",
        "A mask is a single-channel PNG the size of the first image: white (255) marks where the",
        "edit may change pixels, black what must stay. Masks are deliberately a few pixels generous.",
        "",
        "## Provenance and licenses",
        "",
        "### Procedural images (CC0 1.0)",
        "",
        "Drawn by `scripts/make_caseset.py` with Pillow and numpy from fixed seeds; the text uses",
        "the Aileron Regular font bundled with Pillow (`ImageFont.load_default`; Aileron by",
        "dotcolon.net is CC0). Product and shop names shown are invented. The images, all masks",
        "and `cases.jsonl` are released under CC0 1.0 (public domain dedication).",
        "",
        *[f"- `images/{n}.png`" for n in images if n not in SKIMAGE_PHOTOS],
        "",
        "### Photos from scikit-image's bundled sample data",
        "",
        "Read from the `skimage/data/` folder of the installed scikit-image wheel (no download),",
        f"resized with Lanczos so the longest side is at most {MAX_SIDE} px and converted to RGB.",
        "The licenses below are those stated in the docstrings of the matching `skimage.data`",
        "functions (`skimage/data/README.txt` does not list them).",
        "",
        *[f"- `images/{n}.png` — `skimage.data.{n}`: {lic}" for n, (_, lic) in SKIMAGE_PHOTOS.items()],
        "",
    ]
    return "\n".join(lines)


def generate(out_dir: str | Path, set_name: str = LATEST) -> list[Path]:
    """Write the whole set ``set_name`` into ``out_dir``; returns the files written (manifest first)."""
    cases = cases_for(set_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, masks = build_images()
    used_images = {p for c in cases for p in c["images"]}  # type: ignore[attr-defined]
    used_masks = {c["mask"] for c in cases if c["mask"]}
    written: list[Path] = []

    manifest = out / "cases.jsonl"
    # ensure_ascii=False keeps the Chinese instructions readable in review diffs
    manifest.write_bytes("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases).encode("utf-8"))
    written.append(manifest)
    for name, img in images.items():
        rel = f"images/{name}.png"
        if rel not in used_images:
            raise AssertionError(f"image {name} is generated but no case uses it")
        save_png(img, out / rel)
        written.append(out / rel)
    for name, m in masks.items():
        rel = f"masks/{name}.png"
        if rel not in used_masks:
            raise AssertionError(f"mask {name} is generated but no case uses it")
        save_png(m, out / rel)
        written.append(out / rel)
    missing = (used_images | used_masks) - {str(p.relative_to(out)) for p in written}
    if missing:
        raise AssertionError(f"cases reference files that were not generated: {sorted(missing)}")
    (out / "README.md").write_bytes(readme(images, set_name).encode("utf-8"))
    written.append(out / "README.md")
    # Leftovers from an earlier version would be shipped by accident; report, never delete.
    for sub in ("images", "masks"):
        for p in sorted((out / sub).glob("*")):
            if p not in written:
                print(f"make_caseset: warning: {p} is not part of the set (left over?)", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=SETS, default=LATEST, help=f"which version to write (default: {LATEST})")
    ap.add_argument(
        "--out", type=Path, help=f"output folder (default: {CASES_DIR.relative_to(REPO_ROOT)}/<set>)"
    )
    args = ap.parse_args(argv)
    out = args.out or CASES_DIR / args.set
    files = generate(out, args.set)
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files ({total / 1e6:.2f} MB) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

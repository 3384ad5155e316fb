"""The inputs of a score and their preparation for the metrics (PIL images, numpy masks, torch tensors).

:class:`ScoreInputs` is what a caller gives (one output and what it may be compared with);
:class:`Prepared` converts each input once (RGB, size matching, tensors, mask) and lets metrics
share intermediate results: the SSIM map is computed once for ``ssim`` and ``ssim_outside_mask``.
This module imports torch; the metric declarations in :mod:`qie_bench.metrics.base` do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from .kinds import Reference, Region
from .images import as_rgb, check_mask, match_size, to_tensor

ImageName = Literal["output", "source", "baseline", "output@source", "output@baseline"]
T = TypeVar("T")


@dataclass
class ScoreInputs:
    """One output image and everything it may be compared with.

    ``mask`` is a bool ``H x W`` array in *source* pixel coordinates, ``True`` where the edit may
    change pixels; ``None`` when the case has no mask (then the ``*_outside_mask`` metrics are
    ``None``). ``baseline_output`` is the baseline variant's output for the same case and seed.
    ``expected_text`` is the text the output must show (a text case's ``expected_text``);
    ``instruction`` the edit instruction itself (what a VLM judge checks the edit against).
    """

    output: Image.Image
    source: Image.Image
    baseline_output: Image.Image | None = None
    mask: np.ndarray | None = None
    caption: str | None = None
    expected_text: str | None = None
    instruction: str | None = None


class Prepared:
    """A :class:`ScoreInputs` made ready for the metrics.

    Everything is derived lazily and at most once, so a scorer running only ``clip_iqa`` never
    resizes anything, and ``ssim`` + ``ssim_outside_mask`` share one SSIM map (see :meth:`memo`).
    The mask is validated eagerly: a wrong-shaped mask is a user error to report before any model
    runs.
    """

    def __init__(self, inputs: ScoreInputs, device: torch.device | str = "cpu") -> None:
        self.inputs = inputs
        self.device = torch.device(device)
        self.notes: list[str] = []
        self._memo: dict[Any, Any] = {}
        self.mask = None if inputs.mask is None else check_mask(inputs.mask, inputs.source.size)

    # -- images ---------------------------------------------------------------------------

    @cached_property
    def output(self) -> Image.Image:
        return as_rgb(self.inputs.output)

    @cached_property
    def source(self) -> Image.Image:
        return as_rgb(self.inputs.source)

    @cached_property
    def baseline(self) -> Image.Image | None:
        return None if self.inputs.baseline_output is None else as_rgb(self.inputs.baseline_output)

    @cached_property
    def output_at_source_size(self) -> Image.Image:
        image, note = match_size(self.output, self.source.size)
        if note:
            self.notes.append(f"vs source: {note}")
        return image

    @cached_property
    def output_at_baseline_size(self) -> Image.Image:
        assert self.baseline is not None
        image, note = match_size(self.output, self.baseline.size)
        if note:
            self.notes.append(f"vs baseline: {note}")
        return image

    # -- tensors --------------------------------------------------------------------------

    def tensor(self, which: ImageName, dtype: torch.dtype) -> torch.Tensor:
        """A ``(1, 3, H, W)`` tensor in [0, 1] of one of the images, cached per dtype."""
        images = {
            "output": lambda: self.output,
            "source": lambda: self.source,
            "baseline": lambda: self.baseline,
            "output@source": lambda: self.output_at_source_size,
            "output@baseline": lambda: self.output_at_baseline_size,
        }
        return self.memo(("tensor", which, dtype), lambda: to_tensor(images[which](), dtype=dtype, device=self.device))

    def pair(self, reference: Reference, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, reference image)`` as same-size tensors for a pixel-wise comparison."""
        if reference is Reference.SOURCE:
            return self.tensor("output@source", dtype), self.tensor("source", dtype)
        if reference is Reference.BASELINE:
            return self.tensor("output@baseline", dtype), self.tensor("baseline", dtype)
        raise ValueError(f"no image pair for reference {reference}")

    @cached_property
    def outside_mask(self) -> torch.Tensor | None:
        """Bool ``H x W`` tensor of the source pixels the edit must not change (``~mask``)."""
        return None if self.mask is None else torch.from_numpy(~self.mask).to(self.device)

    # -- sharing and availability ---------------------------------------------------------

    def memo(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()`` once per key for this input; later calls (from any metric) reuse it."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def unavailable(self, reference: Reference, region: Region) -> str | None:
        """Why a metric with this reference/region cannot be computed here, or None if it can."""
        if reference is Reference.BASELINE and self.baseline is None:
            return "no baseline output to compare with"
        if reference is Reference.TEXT and not (self.inputs.caption or "").strip():
            return "no target caption"
        if reference is Reference.EXPECTED_TEXT and not (self.inputs.expected_text or "").strip():
            return "case has no expected text"
        if reference is Reference.INSTRUCTION and not (self.inputs.instruction or "").strip():
            return "no edit instruction"
        if region == "whole":
            return None
        if self.mask is None:
            return "case has no mask"
        if region in ("outside_mask", "inside_and_outside_mask") and self.mask.all():
            return "mask covers the whole image: no pixel outside it"
        if region in ("inside_mask", "inside_and_outside_mask") and not self.mask.any():
            return "mask is empty: no pixel inside it"
        return None

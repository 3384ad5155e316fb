"""What every metric shares: its declaration, the inputs it scores, its result, JSON encoding.

A metric is a pure function (in its own module, working on tensors) plus a thin :class:`Metric`
subclass that declares what the number means (``name``, ``direction``, ``range``, ``reference``,
``region``, ``library``) and adapts a batch of :class:`Prepared` inputs to the function. The
:class:`Prepared` wrapper converts each input once (RGB, size matching, tensors, mask) and lets
metrics share intermediate results — the SSIM map is computed once for ``ssim`` and
``ssim_outside_mask``.

A metric whose reference is missing (no baseline output, no mask, no caption, no expected text)
yields ``None`` with a reason, never 0: 0 is a real, terrible score. A metric may also attach a
small JSON-ready ``detail`` to a value (e.g. the text OCR recognised); runs keep it under
``record["metric_details"][name]``.
"""

from __future__ import annotations

import importlib.metadata
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from .images import as_rgb, check_mask, match_size, to_tensor

if TYPE_CHECKING:
    from .weights import LoadedModel

Direction = Literal["higher", "lower"]
# "inside_and_outside_mask": the metric needs pixels on both sides of the mask (a ratio).
Region = Literal["whole", "outside_mask", "inside_mask", "inside_and_outside_mask"]
ImageName = Literal["output", "source", "baseline", "output@source", "output@baseline"]
T = TypeVar("T")


class Reference(str, Enum):
    """What a metric compares the output against."""

    NONE = "none"  # no-reference: the output alone
    SOURCE = "source"  # the case's (first) input image
    BASELINE = "baseline"  # the baseline variant's output for the same case and seed (compression fidelity)
    TEXT = "text"  # the case's target caption
    EXPECTED_TEXT = "expected_text"  # the text the output must show (text cases), read by OCR


@dataclass
class ScoreInputs:
    """One output image and everything it may be compared with.

    ``mask`` is a bool ``H x W`` array in *source* pixel coordinates, ``True`` where the edit may
    change pixels; ``None`` when the case has no mask (then the ``*_outside_mask`` metrics are
    ``None``). ``baseline_output`` is the baseline variant's output for the same case and seed.
    ``expected_text`` is the text the output must show (a text case's ``expected_text``).
    """

    output: Image.Image
    source: Image.Image
    baseline_output: Image.Image | None = None
    mask: np.ndarray | None = None
    caption: str | None = None
    expected_text: str | None = None


@dataclass(frozen=True)
class MetricResult:
    """One metric's value for one output; ``value is None`` comes with the ``reason``.

    ``detail`` is optional JSON-ready context for the value (what OCR recognised), kept in the
    record under ``metric_details``; ``None`` for most metrics.
    """

    value: float | None
    reason: str | None = None
    detail: dict[str, Any] | None = None


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
        if region == "whole":
            return None
        if self.mask is None:
            return "case has no mask"
        if region in ("outside_mask", "inside_and_outside_mask") and self.mask.all():
            return "mask covers the whole image: no pixel outside it"
        if region in ("inside_mask", "inside_and_outside_mask") and not self.mask.any():
            return "mask is empty: no pixel inside it"
        return None


class Metric(ABC):
    """Declaration + batch adapter of one metric; subclasses are registered in the registry.

    Class attributes say what the value means:

    ``name``       record key, e.g. ``"ssim_outside_mask"``
    ``direction``  ``"higher"`` or ``"lower"`` is better
    ``range``      ``(lo, hi)``; ``math.inf`` for an open end (JSON: see :func:`to_json_value`)
    ``reference``  what the output is compared against (:class:`Reference`)
    ``region``     ``"whole"`` image, only the pixels ``"outside_mask"`` or ``"inside_mask"``, or
                   ``"inside_and_outside_mask"`` (compares the two sides)
    ``library``    the distribution whose code computes the value (its version is recorded)
    ``function``   the library entry point used, for the record
    ``model_key``  the model it needs from :class:`~qie_bench.metrics.weights.ModelStore`, if any
    ``settings``   fixed hyper-parameters, recorded so two runs can tell they used the same ones
    """

    name: ClassVar[str]
    direction: ClassVar[Direction]
    range: ClassVar[tuple[float, float]]
    reference: ClassVar[Reference]
    region: ClassVar[Region] = "whole"
    library: ClassVar[str]
    function: ClassVar[str]
    model_key: ClassVar[str | None] = None
    settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: LoadedModel | None = None) -> None:
        if (model is None) != (self.model_key is None):
            raise ValueError(f"metric {self.name!r} needs model {self.model_key!r}, got {model!r}")
        self.model = model

    def __call__(self, batch: Sequence[Prepared]) -> list[MetricResult]:
        """Score a batch: ``None`` + reason where the reference is missing, else :meth:`compute`."""
        reasons = [self.unavailable(item) for item in batch]
        todo = [item for item, reason in zip(batch, reasons, strict=True) if reason is None]
        values = self.compute(todo) if todo else []
        if len(values) != len(todo):
            raise RuntimeError(f"metric {self.name!r} returned {len(values)} values for {len(todo)} inputs")
        computed = iter(values)
        return [MetricResult(None, reason) if reason else _as_result(next(computed)) for reason in reasons]

    def unavailable(self, item: Prepared) -> str | None:
        """Why this metric cannot score ``item`` (its reference or region is missing), or None."""
        return item.unavailable(self.reference, self.region)

    @abstractmethod
    def compute(self, batch: Sequence[Prepared]) -> Sequence[float | MetricResult]:
        """Values for inputs whose reference is present, in order (PSNR may be ``inf``); a
        :class:`MetricResult` where the value carries a ``detail`` or is ``None`` for a reason
        found only while computing."""

    @property
    def backbone(self) -> str | None:
        return None if self.model is None else self.model.backbone

    def describe(self) -> dict[str, Any]:
        """What the value means and how it was made; JSON-ready after :func:`to_json_value`."""
        return {
            "direction": self.direction,
            "range": tuple(self.range),
            "reference": self.reference.value,
            "region": self.region,
            "library": self.library,
            "version": library_version(self.library),
            "function": self.function,
            "backbone": self.backbone,
            "settings": dict(self.settings),
            "weights": "none" if self.model is None else self.model.weights,
            "weights_source": None if self.model is None else self.model.source,
        }


def _as_result(value: float | MetricResult) -> MetricResult:
    return value if isinstance(value, MetricResult) else MetricResult(float(value))


def size_groups(
    batch: Sequence[Prepared], size_of: Callable[[Prepared], tuple[int, int]], max_batch: int
) -> list[list[int]]:
    """Indices of ``batch`` grouped by image size (so tensors can be stacked), in chunks of ``max_batch``."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, item in enumerate(batch):
        by_size.setdefault(size_of(item), []).append(index)
    return [idx[i : i + max_batch] for idx in by_size.values() for i in range(0, len(idx), max_batch)]


def library_version(distribution: str) -> str | None:
    """Installed version of a distribution (without importing it), None if not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- JSON ---------------------------------------------------------------------------------

NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def to_json_value(value: Any) -> Any:
    """``value`` with every non-finite float replaced by the string ``"inf"``, ``"-inf"`` or ``"nan"``.

    PSNR of two identical images is ``float("inf")`` in memory. ``json.dumps`` would write it as
    ``Infinity``, which is not JSON (strict parsers, jq and JavaScript reject it), and ``null``
    would be indistinguishable from "not computed". So JSON writers must pass scores through this
    function; :func:`from_json_value` reverses it. Dicts, lists and tuples are converted
    recursively (tuples become lists); enums become their value, paths strings, numpy scalars
    Python numbers.
    """
    if isinstance(value, dict):
        return {str(to_json_value(k)): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, Enum):
        return to_json_value(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def from_json_value(value: Any) -> Any:
    """Inverse of :func:`to_json_value` for scores: ``"inf"``/``"-inf"``/``"nan"`` back to floats."""
    if isinstance(value, dict):
        return {k: from_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    return value

"""What every metric declares, its result, and JSON encoding: no torch, no PIL.

A metric is a pure function (in its module under :mod:`qie_bench.metrics.catalog`, working on
tensors) plus a thin :class:`Metric` subclass that declares what the number means (``name``,
``direction``, ``range``, ``reference``, ``region``, ``unit``, ``convention``, ``fidelity_rank``,
the weights it needs, ``library``) and adapts a batch of
:class:`~qie_bench.metrics.prepared.Prepared` inputs to the function. Everything here can be read
without importing torch: a suite file validates, the gate reads directions and the report reads
the fidelity order from these declarations; the metric modules import torch inside ``compute``.

A metric whose reference is missing (no baseline output, no mask, no caption, no expected text)
yields ``None`` with a reason, never 0: 0 is a real, terrible score. A metric may also attach a
small JSON-ready ``detail`` to a value (e.g. the text OCR recognised); runs keep it under
``record["metric_details"][name]``.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .kinds import Direction, Reference, Region

if TYPE_CHECKING:
    from .prepared import Prepared
    from .weights import LoadedModel, ModelSpec

# Default place of a metric in `MetricsConfig.names` and printed tables: metrics sort by
# (order, module name, registration order). The five shipped modules use 10..50 (clip_iqa,
# ssim, psnr, lpips, clip_score: the order records have always had); a new metric that says
# nothing comes after them.
DEFAULT_ORDER = 1000


@dataclass(frozen=True)
class MetricResult:
    """One metric's value for one output; ``value is None`` comes with the ``reason``.

    ``detail`` is optional JSON-ready context for the value (what OCR recognised), kept in the
    record under ``metric_details``; ``None`` for most metrics.
    """

    value: float | None
    reason: str | None = None
    detail: dict[str, Any] | None = None


class Metric(ABC):
    """Declaration + batch adapter of one metric; subclasses are registered in the registry.

    Class attributes say what the value means (all readable without torch):

    ``name``           record key, e.g. ``"ssim_outside_mask"``
    ``direction``      ``"higher"`` or ``"lower"`` is better (the gate and the report read it)
    ``range``          ``(lo, hi)``; ``math.inf`` for an open end (JSON: see :func:`to_json_value`)
    ``reference``      what the output is compared against (:class:`Reference`)
    ``region``         ``"whole"`` image, only the pixels ``"outside_mask"`` or ``"inside_mask"``, or
                       ``"inside_and_outside_mask"`` (compares the two sides)
    ``unit``           ``"dB"`` or None for a unitless score
    ``label``          a short human name for tables
    ``convention``     how the value is computed where implementations disagree (SSIM's borders):
                       values recorded under different conventions are not comparable
    ``fidelity_rank``  place among the metrics that say how close a variant stays to the baseline
                       (1 = the report's first choice for sorting and plots), None = not ranked
    ``order``          default place in ``MetricsConfig.names`` (see ``DEFAULT_ORDER``)
    ``library``        the distribution whose code computes the value (its version is recorded)
    ``function``       the library entry point used, for the record
    ``model``          the :class:`~qie_bench.metrics.weights.ModelSpec` of the model it needs, if any
    ``settings``       fixed hyper-parameters, recorded so two runs can tell they used the same ones
    ``default_on``     whether the metric is in the default list (False: run only when named, e.g.
                       a 7B VLM judge)
    ``headline``       whether the report gives it its own per-category plot and a line under every
                       gallery image: the metrics that say whether the edit happened (OCR, judge,
                       locality), as the fidelity rank does for closeness to the baseline
    """

    name: ClassVar[str]
    direction: ClassVar[Direction]
    range: ClassVar[tuple[float, float]]
    reference: ClassVar[Reference]
    region: ClassVar[Region] = "whole"
    unit: ClassVar[str | None] = None
    label: ClassVar[str | None] = None
    convention: ClassVar[str | None] = None
    fidelity_rank: ClassVar[int | None] = None
    order: ClassVar[int] = DEFAULT_ORDER
    library: ClassVar[str]
    function: ClassVar[str]
    model: ClassVar[ModelSpec | None] = None
    settings: ClassVar[dict[str, Any]] = {}
    default_on: ClassVar[bool] = True
    headline: ClassVar[bool] = False

    def __init__(self, loaded: LoadedModel | None = None) -> None:
        if (loaded is None) != (self.model is None):
            wanted = None if self.model is None else self.model.key
            raise ValueError(f"metric {self.name!r} needs model {wanted!r}, got {loaded!r}")
        self.loaded = loaded

    @classmethod
    def declaration(cls) -> dict[str, Any]:
        """What the class declares, without building anything (JSON-ready after :func:`to_json_value`)."""
        return {
            "name": cls.name,
            "direction": cls.direction,
            "range": tuple(cls.range),
            "reference": cls.reference.value,
            "region": cls.region,
            "unit": cls.unit,
            "label": cls.label or cls.name,
            "convention": cls.convention,
            "fidelity_rank": cls.fidelity_rank,
            "library": cls.library,
            "model": None if cls.model is None else cls.model.key,
        }

    def unavailable(self, item: Prepared) -> str | None:
        """Why this metric cannot be computed for ``item`` (a missing reference), or None."""
        return item.unavailable(self.reference, self.region)

    def __call__(self, batch: Sequence[Prepared]) -> list[MetricResult]:
        """Score a batch: ``None`` + reason where the reference is missing, else :meth:`compute`."""
        reasons = [self.unavailable(item) for item in batch]
        todo = [item for item, reason in zip(batch, reasons, strict=True) if reason is None]
        values = self.compute(todo) if todo else []
        if len(values) != len(todo):
            raise RuntimeError(f"metric {self.name!r} returned {len(values)} values for {len(todo)} inputs")
        computed = iter(values)
        return [MetricResult(None, reason) if reason else _as_result(next(computed)) for reason in reasons]

    @abstractmethod
    def compute(self, batch: Sequence[Prepared]) -> Sequence[float | MetricResult]:
        """Values for inputs whose reference is present, in order (PSNR may be ``inf``); a
        :class:`MetricResult` where the value carries a ``detail`` or is ``None`` for a reason
        found only while computing."""

    @property
    def backbone(self) -> str | None:
        return None if self.loaded is None else self.loaded.backbone

    def describe(self) -> dict[str, Any]:
        """What the value means and how it was made, as a run records it (``metric_descriptions``);
        JSON-ready after :func:`to_json_value`."""
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
            "convention": self.convention,
            "weights": "none" if self.loaded is None else self.loaded.weights,
            "weights_source": None if self.loaded is None else self.loaded.source,
        }


def size_groups(
    batch: Sequence[Prepared], size_of: Callable[[Prepared], tuple[int, int]], max_batch: int
) -> list[list[int]]:
    """Indices of ``batch`` grouped by image size (so tensors can be stacked), in chunks of ``max_batch``."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, item in enumerate(batch):
        by_size.setdefault(size_of(item), []).append(index)
    return [idx[i : i + max_batch] for idx in by_size.values() for i in range(0, len(idx), max_batch)]


def _as_result(value: float | MetricResult) -> MetricResult:
    return value if isinstance(value, MetricResult) else MetricResult(float(value))


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
    numpy = sys.modules.get("numpy")  # a numpy scalar exists only if numpy was imported
    if numpy is not None and isinstance(value, numpy.generic):
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

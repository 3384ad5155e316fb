"""The measures of a run, declared once: key, unit, direction, family, label.

Every figure qie-bench measures about a variant (not image quality: metrics declare themselves in
`qie_bench.metrics`) is one `Measure` here. The summary builder aggregates records with it, the
gate reads its direction and family to pick a check, and the report and CLI format values with its
unit. Nothing else guesses a unit from a name suffix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ..units import fmt_bytes


class Direction(str, Enum):
    """Which way a figure improves."""

    LOWER = "lower"  # lower is better: latency, memory, OOM rate, LPIPS
    HIGHER = "higher"  # higher is better: SSIM, PSNR, CLIP-IQA, CLIPScore


class Family(str, Enum):
    """How a figure is measured, which decides how the gate compares it."""

    LATENCY = "latency"  # repeated per-edit figures (time, energy): threshold AND a significance test
    MEMORY = "memory"  # near-deterministic peaks: the max against the threshold
    STATIC = "static"  # one figure per variant (weights size, parameter count)
    RATE = "rate"  # OOM rate: counts, compared exactly
    DERIVED = "derived"  # computed from other figures and prices (edits per kWh, cost): shown, not gated
    QUALITY = "quality"  # image metrics: one value per case, paired per case


class Unit(str, Enum):
    SECONDS = "s"
    BYTES = "bytes"
    RATIO = "ratio"  # a fraction in [0, 1], shown as a percentage
    COUNT = "count"
    JOULES = "J"
    WATTS = "W"
    USD = "USD"
    NONE = ""  # a metric's own scale

    def format(self, value: float | None) -> str:
        if value is None:
            return "—"
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if self is Unit.BYTES:
            return fmt_bytes(value)
        if self is Unit.SECONDS:
            return f"{value:.4g} s"
        if self is Unit.RATIO:
            return f"{value * 100:.1f}%"
        if self is Unit.COUNT:
            return f"{value:,.0f}"
        if self is Unit.JOULES:
            return f"{value:.4g} J"
        if self is Unit.WATTS:
            return f"{value:.4g} W"
        if self is Unit.USD:
            return f"${value:,.4g}"
        return f"{value:.4g}"

    def format_change(self, absolute: float) -> str:
        """A signed difference in this unit ("+12.0 MiB", "+0.3 pt", "+0.012 s")."""
        if self is Unit.BYTES:
            return ("+" if absolute >= 0 else "-") + fmt_bytes(abs(absolute))
        if self is Unit.RATIO:
            return f"{absolute * 100:+.1f} pt"
        if self is Unit.SECONDS:
            return f"{absolute:+.3g} s"
        if self is Unit.JOULES:
            return f"{absolute:+.3g} J"
        return f"{absolute:+.4g}"


@dataclass(frozen=True)
class Measure:
    """One summary figure of a variant.

    ``field``/``statistic``: where its value comes from — the record field whose OK values are
    aggregated and how (``p50``, ``p95``, ``mean`` pooled over every repeat; ``max`` over records).
    ``None`` for figures that come from the build (weights, parameters) or from statuses (OOM rate).
    ``first`` takes the first recorded value (a per-worker figure such as the first call's latency).
    """

    key: str
    unit: Unit
    direction: Direction
    family: Family
    label: str
    field: str | None = None
    statistic: str | None = None
    gateable: bool = True

    def format(self, value: float | None) -> str:
        return self.unit.format(value)


def _latency(key: str, label: str, field: str, statistic: str) -> Measure:
    return Measure(key, Unit.SECONDS, Direction.LOWER, Family.LATENCY, label, field, statistic)


def _memory(key: str, label: str) -> Measure:
    return Measure(key, Unit.BYTES, Direction.LOWER, Family.MEMORY, label, key, "max")


MEASURES: tuple[Measure, ...] = (
    _latency("latency_p50_s", "latency P50", "latency_s", "p50"),
    _latency("latency_p95_s", "latency P95", "latency_s", "p95"),
    _latency("latency_mean_s", "latency mean", "latency_s", "mean"),
    _latency("step_p50_s", "per step P50", "step_s", "p50"),
    _latency("step_p95_s", "per step P95", "step_s", "p95"),
    # NVML's total-energy counter read around each timed edit (GPU only; null with a reason elsewhere)
    Measure("energy_j", Unit.JOULES, Direction.LOWER, Family.LATENCY, "energy per edit", "energy_j", "mean"),
    Measure("mean_power_w", Unit.WATTS, Direction.LOWER, Family.LATENCY, "mean power", "mean_power_w", "mean",
            gateable=False),
    _memory("peak_vram_bytes", "peak VRAM (NVML device)"),
    _memory("peak_vram_process_bytes", "peak VRAM (NVML process)"),
    _memory("torch_peak_allocated_bytes", "allocator peak allocated"),
    _memory("torch_peak_reserved_bytes", "allocator peak reserved"),
    _memory("rss_peak_bytes", "RSS peak (CPU)"),
    Measure("oom_rate", Unit.RATIO, Direction.LOWER, Family.RATE, "OOM rate"),
    Measure("weights_bytes", Unit.BYTES, Direction.LOWER, Family.STATIC, "weights"),
    Measure("params", Unit.COUNT, Direction.LOWER, Family.STATIC, "parameters"),
    # One build per run: too noisy to gate, shown for information.
    Measure("build_s", Unit.SECONDS, Direction.LOWER, Family.STATIC, "build time", gateable=False),
    # Cold start, kept apart from the steady latency above: worker start to a model ready to edit
    # (imports, weights, building the variant, runtime options), then the worker's first edit
    # (compilation, lazy kernels; a warm-up edit when there is one). One value per variant.
    Measure("load_s", Unit.SECONDS, Direction.LOWER, Family.STATIC, "load + build time"),
    Measure("first_call_s", Unit.SECONDS, Direction.LOWER, Family.STATIC, "first call", "first_call_s", "first"),
    # The transformer's work per edit: forwards that computed every block, and calls a step cache
    # served from its cache (null without a cache).
    Measure("transformer_forwards", Unit.COUNT, Direction.LOWER, Family.STATIC, "transformer forwards per edit",
            "transformer_forwards", "mean", gateable=False),
    Measure("cache_hits", Unit.COUNT, Direction.HIGHER, Family.STATIC, "step-cache hits per edit", "cache_hits", "mean",
            gateable=False),
    Measure("edits_per_kwh", Unit.COUNT, Direction.HIGHER, Family.DERIVED, "edits per kWh", gateable=False),
    # energy at the suite's $/kWh plus GPU time at its $/GPU-hour; null without prices
    Measure("cost_per_1000_edits_usd", Unit.USD, Direction.LOWER, Family.DERIVED, "cost per 1,000 edits",
            gateable=False),
)

_BY_KEY = {m.key: m for m in MEASURES}


def measure(key: str) -> Measure | None:
    """The measure named `key`, or None (quality metrics are not measures)."""
    return _BY_KEY.get(key)


def measures(family: Family | None = None, *, gateable: bool | None = None) -> tuple[Measure, ...]:
    return tuple(m for m in MEASURES
                 if (family is None or m.family is family) and (gateable is None or m.gateable is gateable))

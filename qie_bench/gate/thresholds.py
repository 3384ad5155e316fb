"""The suite's `[gates]` table: short threshold strings per metric, parsed into typed checks.

```toml
[gates]
latency_p95_s    = "+10%"   # at most 10 % slower than the baseline
peak_vram_bytes  = "+3%"
ssim_vs_baseline = "-0.02"  # at most 0.02 lower (absolute, in the metric's unit)
clip_iqa         = "-6%"
oom_rate         = "0"      # no worsening at all
psnr             = "±1.0"   # two-sided window: must not drift either way ("+-1.0", "+/-2%" too)

[gates.nf4]                 # per-variant overrides (a table named after the variant)
latency_p95_s    = "+25%"
ssim_vs_baseline = "off"    # not gated for this variant
```

Every threshold is relative to the baseline: it says how much *worse* than the baseline the run
may be. A metric's direction (lower or higher is better) decides which way is worse; a signed
threshold must agree with it, so `latency_p95_s = "-10%"` (which would allow only speed-ups to
fail) is refused instead of silently gating nothing. A quality metric's direction is the one its
class declares in the metric registry (`qie_bench.metrics.catalog`); for a key neither this
module nor the registry knows, the sign declares the direction: `"+5%"` means an increase is a
worsening.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import UserInputError, did_you_mean
from ..metrics.registry import REGISTRY
from ..results.measures import MEASURES, Direction, Family, Unit, measure, measures


# Gate keys that are measurements of the run itself (not quality metrics), by family, from the
# one measure table. The latency keys name the record field the per-repeat raw values come from
# and the statistic gated.
LATENCY_KEYS: dict[str, tuple[str, str]] = {m.key: (m.field or "", m.statistic or "")
                                             for m in measures(Family.LATENCY, gateable=True)}
MEMORY_KEYS = frozenset(m.key for m in measures(Family.MEMORY))
STATIC_KEYS = frozenset(m.key for m in measures(Family.STATIC, gateable=True))
RATE_KEYS = frozenset(m.key for m in measures(Family.RATE))
# Summary keys that are not thresholds: status checks (non-finite and constant outputs, failed
# cases) are always on, and a single build time is too noisy to gate.
NOT_GATEABLE = frozenset({
    "nonfinite_outputs", "constant_outputs", "status_counts", "records", "planned", "complete",
    "changes", "metrics", "build", *(m.key for m in MEASURES if not m.gateable),
})


def metric_direction(name: str) -> Direction | None:
    """The direction of a gate key, or None when it is not known: a measure's from the measure
    table, a quality metric's as its class declares it (read without importing torch)."""
    m = measure(name)
    if m is not None:
        return m.direction
    declared = REGISTRY.direction(name)
    return Direction(declared) if declared is not None else None


def metric_family(name: str) -> Family:
    m = measure(name)
    return m.family if m is not None else Family.QUALITY


def known_gate_keys() -> list[str]:
    return sorted({*LATENCY_KEYS, *MEMORY_KEYS, *STATIC_KEYS, *RATE_KEYS, *REGISTRY.names()})


# ---------------------------------------------------------------------------------------------
# Threshold strings


class Worse(str, Enum):
    """Which change of a figure the threshold limits."""

    UP = "up"  # an increase is a worsening
    DOWN = "down"  # a decrease is a worsening
    BOTH = "both"  # a two-sided window: any drift beyond the limit fails


_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3}
_RE = re.compile(
    r"""^\s*(?P<sign>±|\+/-|\+-|-\+|\+|-)?\s*
        (?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*
        (?P<unit>%|[A-Za-z]+)?\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold: how far the run may move from the baseline, and in which direction.

    `relative` thresholds are fractions of the baseline figure (`"+10%"` -> 0.10); absolute ones
    are in the metric's own unit (seconds, bytes, dB, ...). `off` disables the check.
    """

    text: str
    limit: float = 0.0
    relative: bool = False
    worse: Worse = Worse.UP
    off: bool = False

    def describe(self) -> str:
        """The threshold as shown in reports, normalised (e.g. "+10%", "-0.02", "±1")."""
        if self.off:
            return "off"
        if self.limit == 0 and self.worse is not Worse.BOTH:
            return "0"
        sign = {Worse.UP: "+", Worse.DOWN: "-", Worse.BOTH: "±"}[self.worse]
        number = f"{self.limit * 100:g}%" if self.relative else f"{self.limit:g}"
        return sign + number

    def worsening(self, change: float) -> float:
        """How much of `change` (current minus baseline, relative or absolute as the threshold
        is) counts as a worsening; negative when the figure improved."""
        if self.worse is Worse.UP:
            return change
        if self.worse is Worse.DOWN:
            return -change
        return abs(change)

    def exceeded(self, change: float) -> bool:
        """Whether a change (same kind as the threshold: relative or absolute) is beyond it.
        A zero threshold fails any worsening at all. (A change equal to the limit up to float
        rounding, e.g. 1.1 / 1.0 - 1 against 10 %, is not beyond it.)"""
        return self.worsening(change) > self.limit + 1e-12 * max(1.0, abs(self.limit))


def _example(name: str, direction: Direction | None) -> str:
    if direction is Direction.LOWER:
        return f"e.g. {name} = \"+10%\" (at most 10% higher than the baseline) or \"0\" (no increase)"
    if direction is Direction.HIGHER:
        return f"e.g. {name} = \"-0.02\" or \"-5%\" (at most that much lower), or \"±1.0\" for a two-sided window"
    return (f"e.g. {name} = \"+5%\" if an increase is a worsening, \"-5%\" if a decrease is, "
            f"or \"±5%\" for a two-sided window")


def parse_threshold(name: str, value: Any, where: str) -> Threshold:
    """Parse one threshold for gate key `name`. Raises UserInputError naming `where`."""
    direction = metric_direction(name)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserInputError(where, f"a threshold must be a string, not {type(value).__name__} {value!r}",
                             _example(name, direction))
    text = str(value)  # a TOML number (oom_rate = 0, psnr = -0.5) reads like the same string
    if text.strip().lower() == "off":
        return Threshold(text=text, off=True)
    m = _RE.match(text)
    if not m:
        raise UserInputError(where, f"'{text}' is not a threshold", _example(name, direction))
    sign, unit = m.group("sign"), m.group("unit")
    number = float(m.group("num"))
    relative = unit == "%"
    if relative:
        number /= 100.0
    elif unit is not None:
        u = unit.lower()
        m_unit = m_.unit if (m_ := measure(name)) is not None else Unit.NONE
        if m_unit is Unit.BYTES and u in _BYTE_UNITS:
            number *= _BYTE_UNITS[u]
        elif m_unit is Unit.SECONDS and u in _TIME_UNITS:
            number *= _TIME_UNITS[u]
        else:
            allowed = ("%, B, KB, MB, GB, KiB, MiB or GiB" if m_unit is Unit.BYTES
                       else "%, s or ms" if m_unit is Unit.SECONDS else "% (or no unit: the metric's own)")
            raise UserInputError(where, f"unknown unit '{unit}' in '{text}'", f"units here: {allowed}; {_example(name, direction)}")

    if sign in ("±", "+/-", "+-", "-+"):
        worse = Worse.BOTH
    elif sign in ("+", "-"):
        worse = Worse.UP if sign == "+" else Worse.DOWN
        expected = {Direction.LOWER: Worse.UP, Direction.HIGHER: Worse.DOWN}.get(direction) if direction else None
        if expected is not None and worse is not expected and number != 0:
            better = "lower" if direction is Direction.LOWER else "higher"
            raise UserInputError(
                where, f"'{text}' limits a {'rise' if worse is Worse.UP else 'fall'}, but {better} is better for {name}, "
                       "so that change is an improvement and the gate would never fail",
                _example(name, direction))
        if expected is not None:
            worse = expected
    else:
        if direction is None:
            raise UserInputError(where, f"'{text}' has no sign and the direction of '{name}' is not known",
                                 _example(name, direction))
        worse = Worse.UP if direction is Direction.LOWER else Worse.DOWN
    return Threshold(text=text, limit=number, relative=relative, worse=worse)


# ---------------------------------------------------------------------------------------------
# The [gates] table


@dataclass(frozen=True)
class Gates:
    """The parsed `[gates]` table: thresholds for every variant, and per-variant overrides."""

    defaults: Mapping[str, Threshold] = field(default_factory=dict)
    per_variant: Mapping[str, Mapping[str, Threshold]] = field(default_factory=dict)

    def for_variant(self, variant: str) -> dict[str, Threshold]:
        """Thresholds that apply to one variant, defaults first then its own keys, in file order.
        Keys switched `off` are dropped."""
        merged: dict[str, Threshold] = dict(self.defaults)
        merged.update(self.per_variant.get(variant, {}))
        return {k: t for k, t in merged.items() if not t.off}

    def keys(self) -> list[str]:
        """Every gate key named anywhere in the table, in file order."""
        seen: dict[str, None] = dict.fromkeys(self.defaults)
        for table in self.per_variant.values():
            seen.update(dict.fromkeys(table))
        return list(seen)

    @property
    def empty(self) -> bool:
        return not self.defaults and not any(self.per_variant.values())


def _check_key(name: str, where: str) -> None:
    if name in NOT_GATEABLE:
        raise UserInputError(where, f"'{name}' is not a gate key",
                             "non-finite/constant outputs and failed cases are always checked; "
                             f"gate keys are e.g. {', '.join(sorted(LATENCY_KEYS))}, peak_vram_bytes, oom_rate, or a metric name")
    if name not in known_gate_keys():
        # An unknown name is allowed (a metric this table does not know), but one a letter or two
        # away from a known key is almost surely a typo that would otherwise fail later as
        # "not measured".
        close = difflib.get_close_matches(name, known_gate_keys(), n=1, cutoff=0.85)
        if close:
            raise UserInputError(where, f"unknown gate key '{name}'", f"did you mean '{close[0]}'?")


def parse_gates(raw: Mapping[str, Any] | None, where: str = "gates") -> Gates:
    """Parse the raw `[gates]` table (as read from TOML). Raises UserInputError naming the key,
    e.g. ``suites/x.toml: gates.nf4.latency_p95_s: '10 percent' is not a threshold (e.g. ...)``."""
    if raw is None:
        return Gates()
    if not isinstance(raw, Mapping):
        raise UserInputError(where, "must be a table", 'write [gates] with keys such as latency_p95_s = "+10%"')
    defaults: dict[str, Threshold] = {}
    per_variant: dict[str, dict[str, Threshold]] = {}
    for key, value in raw.items():
        key_where = f"{where}.{key}"
        if isinstance(value, Mapping):
            table: dict[str, Threshold] = {}
            for name, sub in value.items():
                sub_where = f"{key_where}.{name}"
                if isinstance(sub, Mapping):
                    raise UserInputError(sub_where, "per-variant gate tables cannot be nested",
                                         f'write [gates.{key}] {name} = "+10%"')
                _check_key(name, sub_where)
                table[name] = parse_threshold(name, sub, sub_where)
            per_variant[key] = table
        else:
            _check_key(key, key_where)
            defaults[key] = parse_threshold(key, value, key_where)
    return Gates(defaults=defaults, per_variant=per_variant)


def check_gate_variants(gates: Gates, variant_names: list[str], where: str = "gates") -> None:
    """Refuse per-variant tables that name no variant of the suite (for `load_suite`)."""
    for name in gates.per_variant:
        if name not in variant_names:
            raise UserInputError(f"{where}.{name}", f"no variant named '{name}'",
                                 did_you_mean(name, variant_names) or f"variants are: {', '.join(variant_names)}")

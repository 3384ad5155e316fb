"""Energy per edit from NVML's total-energy counter (mJ since the driver loaded; Volta and newer).

The counter is read right before the timer starts and right after it stops (the device already
synchronised), so the reads sit beside the timed window, never inside it. Where the counter is
missing (a CPU run, an old GPU, a driver that says "not supported") the energy is None with the
reason; where it did not advance during an edit (its update period is longer than the edit) the
per-edit figure is None too, never 0, while the raw counter difference still counts towards the
variant's totals (`EnergyPhase`), whose sum is checked against the counter read around the timed
phases (each case's repeats, back to back).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EnergyWindow:
    """The counter read around one timed edit. `t_start`/`t_end` are the timer's own reads
    (perf_counter seconds), so `seconds` is the edit's latency."""

    start_mj: int | None
    end_mj: int | None
    t_start: float
    t_end: float
    reason: str | None = None  # why the counter is absent, when it is

    @property
    def seconds(self) -> float:
        return self.t_end - self.t_start

    @property
    def delta_mj(self) -> int | None:
        """The raw counter difference (0 allowed), or None where it cannot be had."""
        if self.start_mj is None or self.end_mj is None or self.end_mj < self.start_mj:
            return None
        return self.end_mj - self.start_mj

    @property
    def unavailable(self) -> str | None:
        if self.start_mj is None or self.end_mj is None:
            return self.reason or "energy counter not read"
        if self.end_mj < self.start_mj:
            return "energy counter went backwards (driver reloaded?)"
        if self.end_mj == self.start_mj:
            return "energy counter did not advance during the edit (its update period is longer than the edit)"
        return None

    @property
    def energy_j(self) -> float | None:
        return None if self.unavailable else (self.end_mj - self.start_mj) / 1000.0  # type: ignore[operator]

    @property
    def mean_power_w(self) -> float | None:
        energy = self.energy_j
        return None if energy is None or self.seconds <= 0 else energy / self.seconds

    def as_record(self) -> dict[str, Any]:
        """`energy_j` (J), `mean_power_w` (W), `energy_unavailable` (why they are null)."""
        return {"energy_j": self.energy_j, "mean_power_w": self.mean_power_w, "energy_unavailable": self.unavailable}


@dataclass
class EnergyPhase:
    """A variant's timed edits together, beside the counter read around its timed phases.

    A case's timed phase runs from its first timed edit's start to its last one's end: its
    repeats run back to back, with only the output's hashing between them. What runs between
    cases (releasing the cache, loading the next case's images, its warm-up edits) is outside
    every timed phase and is stated apart (`outside_timed_phases_energy_j`), as is the span
    from the variant's first timed edit to its last. The per-edit sum and the phases' counter
    must agree within a few per cent; `between_edits_energy_j` is the part that does not."""

    windows: list[EnergyWindow] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def add(self, window: EnergyWindow, group: str = "") -> None:
        """One timed edit; `group` names its timed phase (the case: its repeats run back to back)."""
        self.windows.append(window)
        self.groups.append(group)

    def _phases(self) -> list[list[EnergyWindow]]:
        """Consecutive windows of one group: a case that comes back later is a phase of its own."""
        runs = itertools.groupby(zip(self.groups, self.windows), key=lambda gw: gw[0])
        return [[w for _, w in run] for _, run in runs]

    def as_info(self) -> dict[str, Any]:
        w = self.windows
        phases = self._phases()
        info: dict[str, Any] = {"timed_edits": len(w), "timed_edits_s": sum(x.seconds for x in w),
                                "timed_phases": len(phases),
                                "timed_phase_s": sum(p[-1].t_end - p[0].t_start for p in phases) if w else None,
                                "timed_span_s": (w[-1].t_end - w[0].t_start) if w else None,
                                "timed_edits_energy_j": None, "timed_phase_energy_j": None,
                                "between_edits_energy_j": None, "timed_span_energy_j": None,
                                "outside_timed_phases_energy_j": None, "energy_unavailable": None}
        if not w:
            info["energy_unavailable"] = "no timed edit"
            return info
        missing = next((x for x in w if x.delta_mj is None), None)
        if missing is not None:
            info["energy_unavailable"] = missing.unavailable
            return info
        edits = sum(x.delta_mj for x in w) / 1000.0  # type: ignore[misc]
        phase = sum(p[-1].end_mj - p[0].start_mj for p in phases) / 1000.0  # type: ignore[operator]
        span = (w[-1].end_mj - w[0].start_mj) / 1000.0  # type: ignore[operator]
        info.update(timed_edits_energy_j=edits, timed_phase_energy_j=phase, between_edits_energy_j=phase - edits,
                    timed_span_energy_j=span, outside_timed_phases_energy_j=span - phase)
        return info

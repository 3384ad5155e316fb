"""Drift over several edits: quality against turn for chained cases, and after how many turns
each variant falls below the suite's threshold.

A chain's turn k records carry ``turn = k`` (`qie_bench.runner.chains`). Per variant and turn the
plot shows the mean over the chains that have that turn (a chain of 4 turns stops contributing
after turn 4). The verdict holds each variant's turn-k value to the suite's ``[gates]`` threshold
for the plotted metric, measured from the same variant's turn 1: the drop the gate allows between
a release and its baseline on one edit is the drop allowed from the first edit to the k-th.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import matplotlib.pyplot as plt
import matplotlib.ticker

from ..gate.thresholds import Threshold, parse_gates
from ..results.measures import Direction
from .data import Column, ReportData, num
from .plots import Plot, _short, _style, _uri, run_markers, variant_colors

# The right-hand panel: fidelity to the chain's original source outside every region edited so far.
FIDELITY_TO_ORIGINAL = "ssim_outside_mask"


def turn_means(col: Column, metric: str) -> dict[int, float]:
    """Mean of ``metric`` over the OK repeat-0 records of chain turns, per turn (turns with no
    value, e.g. the baseline variant's own ``*_vs_baseline``, are left out)."""
    by_turn: dict[int, list[float]] = {}
    for r in col.ok_records:
        turn = r.turn
        if turn is None or r.repeat != 0:
            continue
        v = num(r.metric(metric))
        if v is not None:
            by_turn.setdefault(turn, []).append(v)
    return {t: statistics.fmean(vs) for t, vs in sorted(by_turn.items())}


def has_chains(data: ReportData) -> bool:
    return any(r.turn is not None for c in data.columns for r in c.records)


def gated_metric(data: ReportData) -> tuple[str, dict[str, Threshold]] | None:
    """The first ``[gates]`` key of the (first) run's suite that chain records hold as a metric,
    with each variant's threshold for it."""
    run = data.runs[0]
    gates = parse_gates((run.run.get("suite_config") or {}).get("gates"), "run.json suite_config.gates")
    for key in gates.keys():
        if any(turn_means(c, key) for c in data.columns if c.run is run):
            per_variant = {c.variant: t for c in data.columns if c.run is run
                           if (t := gates.for_variant(c.variant).get(key)) is not None}
            return key, per_variant
    return None


@dataclass(frozen=True)
class Drift:
    variant: str
    turns: int  # the turns measured
    fails_at: int | None  # first turn beyond the threshold, None if none is

    def sentence(self, metric: str, threshold: Threshold) -> str:
        if self.fails_at is None:
            return (f"{self.variant}: {metric} stays within {threshold.describe()} of its turn-1 value "
                    f"for all {self.turns} turns measured.")
        ok = self.fails_at - 1
        return (f"{self.variant}: {metric} falls below the threshold ({threshold.describe()} from turn 1) at turn "
                f"{self.fails_at}, after {ok} turn{'s' if ok != 1 else ''} within it.")


def drift(col: Column, metric: str, threshold: Threshold) -> Drift | None:
    """After how many turns ``col`` moves beyond ``threshold`` from its own turn-1 value."""
    means = turn_means(col, metric)
    if 1 not in means:
        return None
    first = means[1]
    for t, v in means.items():
        change = (v / first - 1 if first else float("inf")) if threshold.relative else v - first
        if threshold.exceeded(change):
            return Drift(col.variant, len(means), t)
    return Drift(col.variant, len(means), None)


def drift_sentences(data: ReportData) -> list[str]:
    """One sentence per variant of the first run (empty without chains or a gated metric)."""
    if not has_chains(data):
        return []
    picked = gated_metric(data)
    if picked is None:
        return ["No [gates] threshold of the suite is a metric of the chained turns: no verdict per turn."]
    metric, thresholds = picked
    out = []
    for col in data.columns:
        if col.run is not data.runs[0]:
            continue
        threshold = thresholds.get(col.variant)
        d = drift(col, metric, threshold) if threshold is not None else None
        if d is None:
            why = ("the reference of " + metric) if col.is_baseline and metric.endswith("_vs_baseline") else \
                f"no {metric} value at turn 1" if threshold is not None else f"no threshold for {metric}"
            out.append(f"{col.variant}: no verdict ({why}).")
        else:
            out.append(d.sentence(metric, threshold))
    return out


def plot_chains(data: ReportData) -> Plot:
    title = "Quality against turn (chained edits)"
    if not has_chains(data):
        return Plot(title, None, "no chained cases in these runs", title)
    picked = gated_metric(data)
    left = picked[0] if picked else None
    panels = [m for m in (left, FIDELITY_TO_ORIGINAL) if m]
    colors, markers = variant_colors(data), run_markers(data)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.6, 3.6), squeeze=False)
    drawn = 0
    for ax, metric in zip(axes[0], panels):
        for col in data.columns:
            means = turn_means(col, metric)
            if not means:
                continue
            ax.plot(list(means), list(means.values()), marker=markers[col.run.label], color=colors[col.variant],
                    label=_short(col, data), linewidth=1.4, markersize=5)
            drawn += 1
        if picked and metric == picked[0]:
            # The threshold line of a variant depends on its own turn 1: drawn for absolute thresholds.
            for col in data.columns:
                t = picked[1].get(col.variant)
                means = turn_means(col, metric)
                if t is not None and not t.relative and 1 in means:
                    sign = -1 if _direction(data, metric) is Direction.HIGHER else 1
                    ax.axhline(means[1] + sign * t.limit, color=colors[col.variant], linestyle=":", linewidth=1)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("turn", fontsize=9)
        ax.set_ylabel(metric, fontsize=9)
        _style(ax)
    if not drawn:
        plt.close(fig)
        return Plot(title, None, "no OK chained turn has a quality metric", title)
    axes[0][-1].legend(fontsize=8, loc="best")
    caption = ("Mean over the chains that reach each turn. "
               + (f"Left: {left}, the suite's gated metric (dotted: each variant's turn-1 value moved by the "
                  "threshold). " if left else "")
               + f"{'Right' if left else 'Shown'}: {FIDELITY_TO_ORIGINAL}, fidelity to the original source outside "
               "every region edited so far. " + " ".join(drift_sentences(data)))
    return Plot(title, _uri(fig), caption, title)


def _direction(data: ReportData, metric: str) -> Direction | None:
    d = data.metric_directions.get(metric)
    return Direction(d) if d else None

"""The statistics behind the gate's verdicts, and the settings they run at.

Latency is measured repeatedly, so a change counts only if it exceeds the threshold AND is
statistically significant (asv's rule). Cases differ a lot in latency (an edit with three
reference images is slower than one with one), and pooling every repeat into one Mann–Whitney U
test lets that case-to-case spread drown a 10 % shift. The test used is therefore the stratified
form of the Mann–Whitney U / Wilcoxon rank-sum test, van Elteren's test: repeats are ranked
within each case, the rank sums are combined over cases, and the result is referred to the normal
distribution. With a single case it is the ordinary Mann–Whitney U test (normal approximation).

Quality is measured once per case (a seeded edit gives the same image on every repeat), so it is
compared per case, paired by case id: the mean of the per-case differences, with a percentile
bootstrap interval over cases at a fixed RNG seed, so the same inputs always give the same verdict.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


# The latency test's null hypothesis: how far the timings are moved back, as a share of the
# threshold, before the rank test asks whether they are still slower.
LATENCY_NULLS = {"threshold": 1.0, "half-threshold": 0.5, "no-change": 0.0}


@dataclass(frozen=True)
class GateSettings:
    """Statistical settings of the gate. The defaults are the documented rules (docs/gate.md);
    tests and the false-positive benchmark use them unchanged."""

    # One-sided level of the latency significance test. asv uses p < 0.002 two-sided, which is
    # 0.001 on the side that matters; a two-sided window splits it (0.0005 each side).
    latency_alpha: float = 0.001
    # What the significance test must reject (LATENCY_NULLS): "threshold" (the default) — the
    # timings moved by MORE than the threshold, which a machine's own drift between runs does not
    # pass; "half-threshold"; "no-change" (asv's rule) — they differ at all. The statistic must be
    # beyond the whole threshold in every case. Measured trade-offs: docs/gate.md.
    latency_null: str = "threshold"
    # Bootstrap resamples for the latency statistic's change. Its standard error gives the "tail"
    # evidence (change - z(alpha) se beyond the threshold), used only with at least
    # `min_bootstrap_repeats` repeats of every case in both runs.
    latency_bootstrap: int = 2000
    min_bootstrap_repeats: int = 3
    # A baseline promoted from at least this many runs is tested between runs (its runs'
    # scatter), instead of by the repeats within one run, which cannot see a whole run move.
    min_history_runs: int = 3
    # Bootstrap resamples for the interval of the mean per-case quality change (part of the verdict).
    quality_bootstrap: int = 5000
    confidence: float = 0.95
    # A quality metric also fails when more than this share of the paired cases each got worse
    # beyond the threshold, whatever the mean says (a few broken edits hidden by many fine ones).
    worse_case_share: float = 0.25
    # Base seed of every bootstrap; each check derives its own from its variant and metric.
    seed: int = 20250914

    def rng(self, *parts: str) -> np.random.Generator:
        """A generator seeded from the settings' seed and the check's identity: reproducible, and
        independent between checks."""
        return np.random.default_rng([self.seed, zlib.crc32("/".join(parts).encode())])


DEFAULT_SETTINGS = GateSettings()


# ---------------------------------------------------------------------------------------------
# Latency: van Elteren's stratified rank-sum test


@dataclass(frozen=True)
class RankTest:
    """Result of the stratified rank-sum test of `current` against `baseline`."""

    z: float  # > 0: current tends to be larger
    p_greater: float  # one-sided p-value for "current is stochastically larger"
    p_less: float  # one-sided p-value for "current is stochastically smaller"
    p_min: float  # the smallest one-sided p these sample sizes can give at all
    strata: int  # cases that had values in both runs
    higher_cases: int  # cases whose current median is above the baseline median

    def p_towards(self, up: bool) -> float:
        return self.p_greater if up else self.p_less


def van_elteren(baseline: Mapping[str, Sequence[float]], current: Mapping[str, Sequence[float]]) -> RankTest | None:
    """Stratified Wilcoxon–Mann–Whitney test (van Elteren 1960), strata = cases.

    Within each case the baseline and current repeats are ranked together (average ranks for
    ties); W = the current rank sum has mean n(N+1)/2 and variance mn/12 · (N+1 − Σ(t³−t)/(N(N−1)))
    under "no difference"; sums over cases are weighted by 1/(N+1) and standardised. Returns None
    when no case has values in both runs.
    """
    # Strata of the same shape (m baseline, n current repeats) are ranked together, row-wise:
    # a run has one shape for nearly every case, so this is one vectorised pass, not one per case.
    shapes: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for case in baseline:
        b = np.asarray(baseline[case], dtype=float)
        c = np.asarray(current.get(case, ()), dtype=float)
        if b.size and c.size:
            shapes.setdefault((b.size, c.size), []).append((b, c))
    num = var = num_max = var_max = 0.0
    strata = higher = 0
    for (m, n), pairs in shapes.items():
        b_rows = np.stack([p[0] for p in pairs])
        c_rows = np.stack([p[1] for p in pairs])
        both = np.concatenate([b_rows, c_rows], axis=1)
        big_n = m + n
        w_cur = sps.rankdata(both, axis=1)[:, m:].sum(axis=1)
        expected = n * (big_n + 1) / 2.0
        ties = np.zeros(len(pairs))
        tied_rows = np.flatnonzero((np.diff(np.sort(both, axis=1), axis=1) == 0).any(axis=1))
        for i in tied_rows:
            _, counts = np.unique(both[i], return_counts=True)
            ties[i] = float(((counts**3) - counts).sum())
        v = m * n / 12.0 * ((big_n + 1) - (ties / (big_n * (big_n - 1)) if big_n > 1 else 0.0))
        weight = 1.0 / (big_n + 1)
        num += weight * float((w_cur - expected).sum())
        var += weight**2 * float(np.sum(v))
        # Complete separation (every current repeat above every baseline one), without ties: the
        # most extreme the data could be, which bounds the smallest reachable p-value.
        num_max += len(pairs) * weight * (n * (2 * big_n - n + 1) / 2.0 - expected)
        var_max += len(pairs) * weight**2 * (m * n * (big_n + 1) / 12.0)
        strata += len(pairs)
        higher += int((np.median(c_rows, axis=1) > np.median(b_rows, axis=1)).sum())
    if strata == 0:
        return None
    z = num / np.sqrt(var) if var > 0 else 0.0
    z_max = num_max / np.sqrt(var_max) if var_max > 0 else 0.0
    return RankTest(z=float(z), p_greater=float(sps.norm.sf(z)), p_less=float(sps.norm.cdf(z)),
                    p_min=float(sps.norm.sf(z_max)), strata=strata, higher_cases=higher)


def statistic(values: np.ndarray, which: str, axis: int = -1) -> np.ndarray:
    """p50 / p95 (linear interpolation, as in summary.json) or mean along `axis`."""
    if which == "mean":
        return np.mean(values, axis=axis)
    return np.percentile(values, {"p50": 50.0, "p95": 95.0}[which], axis=axis)


def pooled_statistic(timings: Mapping[str, Sequence[float]], which: str) -> float:
    """The statistic over every repeat of every case together, as summary.json reports it."""
    return float(statistic(np.concatenate([np.asarray(v, dtype=float) for v in timings.values()]), which))


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile-bootstrap intervals of the change of a statistic, current against baseline."""

    ratio: tuple[float, float]  # statistic(current) / statistic(baseline)
    difference: tuple[float, float]  # statistic(current) - statistic(baseline)
    ratio_se: float  # bootstrap standard errors of the same
    difference_se: float


def stratified_bootstrap(baseline: Mapping[str, Sequence[float]], current: Mapping[str, Sequence[float]],
                         which: str, resamples: int, rng: np.random.Generator,
                         confidence: float = 0.95) -> BootstrapInterval | None:
    """Bootstrap the pooled statistic (p50/p95/mean of all repeats, as in summary.json) of both
    runs, resampling repeats within each case, so every resample keeps the case mix and only the
    repeat-to-repeat noise varies.

    With R repeats a case's resampled values have R-1/R of the spread of a new repeat (the plain
    bootstrap's small-sample shrinkage; with R = 2 it halves the variance), so each repeat's
    deviation from its case mean is widened by sqrt(R/(R-1)) before resampling. With one repeat
    per case there is nothing to resample and the interval is the point estimate.
    """

    def draw(groups: Mapping[str, Sequence[float]]) -> np.ndarray | None:
        parts = []
        for v in groups.values():
            a = np.asarray(v, dtype=float)
            if a.size > 1:
                a = a.mean() + (a - a.mean()) * np.sqrt(a.size / (a.size - 1))
            if a.size:
                parts.append(a)
        if not parts:
            return None
        values = np.concatenate(parts)
        sizes = np.concatenate([np.full(p.size, p.size) for p in parts])
        starts = np.concatenate([np.full(p.size, s) for p, s in zip(parts, np.cumsum([0] + [p.size for p in parts[:-1]]))])
        idx = starts + np.floor(rng.random((resamples, values.size)) * sizes).astype(np.int64)
        return statistic(values[idx], which, axis=1)

    b, c = draw(baseline), draw(current)
    if b is None or c is None:
        return None
    tail = (1 - confidence) / 2 * 100
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b > 0, c / np.where(b > 0, b, 1.0), np.inf)
    r_lo, r_hi = np.percentile(ratio, [tail, 100 - tail])
    d_lo, d_hi = np.percentile(c - b, [tail, 100 - tail])
    return BootstrapInterval(ratio=(float(r_lo), float(r_hi)), difference=(float(d_lo), float(d_hi)),
                             ratio_se=float(np.std(ratio[np.isfinite(ratio)])) if np.isfinite(ratio).any() else math.inf,
                             difference_se=float(np.std(c - b)))


# ---------------------------------------------------------------------------------------------
# Quality: paired bootstrap over cases


def paired_bootstrap_mean(worsening: np.ndarray, rng: np.random.Generator, resamples: int,
                          confidence: float = 0.95, scale: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean per-case worsening, resampling cases.

    With `scale` (the baseline values of the same cases) the statistic is mean(worsening) /
    |mean(scale)|: the change of the mean relative to the baseline mean, for "%" thresholds.
    """
    n = worsening.size
    idx = rng.integers(0, n, size=(resamples, n))
    means = worsening[idx].mean(axis=1)
    if scale is not None:
        denom = np.abs(scale[idx].mean(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.where(denom > 0, means / np.where(denom > 0, denom, 1.0), np.sign(means) * np.inf)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


"""The statistics behind the gate's verdicts, and the settings they run at.

Latency is measured repeatedly, so a change counts only if it exceeds the threshold AND is
statistically significant (asv's rule). Cases differ a lot in latency (an edit with three
reference images is slower than one with one), and pooling every repeat into one Mann–Whitney U
test lets that case-to-case spread drown a 10 % shift. The test used is therefore the stratified
form of the Mann–Whitney U / Wilcoxon rank-sum test, van Elteren's test: repeats are ranked
within each case, the rank sums are combined over cases, and the result is referred to the normal
distribution. With a single case it is the ordinary Mann–Whitney U test (normal approximation).
The statistic itself is paired per case (`paired_changes`: each case's median log timing against
its own baseline) and a p95 is tested case by case (`tail_test`: enough cases to carry the
percentile, each beyond the null line by more than its noise). `stratified_bootstrap` (the pooled
statistic's interval) is kept for reports and simulations; the gate no longer decides with it.

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
    # Latency is compared per case (each case against its own baseline). With one repeat per case
    # the only estimate of a case's timing noise is the spread of the per-case changes over
    # cases; below this many cases that spread is not read (a MAD of a handful says nothing).
    min_cases_for_spread: int = 8
    # A p95 is testable when its test could confirm a case that moved this many thresholds beyond
    # the null line: its noise at the test's level (z x sd) is at most this many thresholds wide.
    # Noisier data can neither confirm nor clear a change of the threshold's size: UNTESTABLE.
    testable_resolution: float = 2.0
    # A baseline promoted from at least this many runs is tested between runs (its runs'
    # scatter), instead of by the repeats within one run, which cannot see a whole run move.
    min_history_runs: int = 3
    # Bootstrap resamples for the interval of the mean per-case quality change (part of the verdict).
    quality_bootstrap: int = 5000
    confidence: float = 0.95
    # A quality metric also fails when more than this share of the paired cases each got worse
    # beyond the threshold, whatever the mean says (a few broken edits hidden by many fine ones).
    worse_case_share: float = 0.25
    # ... and at least this many cases: one case alone is never "widespread" (in a 3-case suite one
    # case is a third of it); a single broken case is left to the mean rule and the status check.
    widespread_min_cases: int = 2
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



# ---------------------------------------------------------------------------------------------
# Latency, paired per case: each case against its own baseline


@dataclass(frozen=True)
class PairedChanges:
    """Each paired case's change against its own baseline, and how noisy that change is.

    ``changes``: per case, the median log timing of its repeats now minus the baseline's (a log
    ratio, for "%" thresholds), or the median timing now minus then (seconds, for absolute ones).
    ``noise_sd``: per case, the standard deviation of that change from timing noise alone, or None
    when the data cannot show it (one repeat and too few cases to read it from their spread).
    """

    cases: tuple[str, ...]
    changes: np.ndarray
    noise_sd: np.ndarray | None
    noise_df: int  # degrees of freedom of the noise estimate (0 without one)
    noise_from: str  # "repeats", "cases", "repeats and cases" or "" (none)

    @property
    def n(self) -> int:
        return len(self.cases)


def case_statistic(changes: np.ndarray, which: str) -> float:
    """The run-level statistic of per-case changes: their median (p50), 95th percentile (p95, linear
    interpolation as in summary.json) or mean."""
    return float(statistic(np.asarray(changes, dtype=float), which))


def paired_changes(baseline: Mapping[str, Sequence[float]], current: Mapping[str, Sequence[float]], *,
                   relative: bool, min_cases_for_spread: int) -> PairedChanges | None:
    """Per-case changes of the cases with OK timings on both sides, and their noise.

    The noise of a case's change has two estimates, and the larger is used:
    - from repeats (every paired case has >= 2 repeats on both sides): the within-case sd (robust:
      1.4826 x the median absolute deviation from each case's median, pooled over cases and both
      runs; zero deviations, the median itself for odd repeats, left out), times sqrt(1/m + 1/n);
    - from the spread of the changes over cases (at least `min_cases_for_spread` cases): 1.4826 x
      their median absolute deviation around their median. Real per-case differences inflate it, and
      it is the only estimate a run with one repeat has.
    A shift common to every case (the whole run moved) is in neither: it moves every change alike.
    """
    cases = tuple(k for k in baseline if len(baseline[k]) and len(current.get(k, ())))
    if not cases:
        return None

    def tx(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        return np.log(np.maximum(a, 1e-12)) if relative else a

    b = [tx(baseline[k]) for k in cases]
    c = [tx(current[k]) for k in cases]
    # each case's level is the median of its repeats: one stalled repeat does not move it
    changes = np.array([np.median(ci) - np.median(bi) for bi, ci in zip(b, c)])
    estimates: list[tuple[np.ndarray, int, str]] = []
    if all(x.size >= 2 for x in b + c):
        # robust: 1.4826 x the median absolute deviation of each repeat from its case's median,
        # pooled over cases and both runs, so that one stalled repeat does not blind the test
        resid = np.concatenate([x - np.median(x) for x in b + c])
        df = sum(x.size - 1 for x in b + c)
        nonzero = resid[np.abs(resid) > 0]
        sd = 1.4826 * float(np.median(np.abs(nonzero))) if nonzero.size else 0.0
        # the sd of a median of r values: ~1.2533 sd / sqrt(r) (exact for r <= 2: the mean)
        def var_med(r: int) -> float:
            return (1.0 if r <= 2 else 1.2533**2) / r

        estimates.append((sd * np.sqrt(np.array([var_med(bi.size) + var_med(ci.size) for bi, ci in zip(b, c)])), df,
                          "repeats"))
    if len(cases) >= min_cases_for_spread:
        robust = 1.4826 * float(np.median(np.abs(changes - np.median(changes))))
        estimates.append((np.full(len(cases), robust), len(cases) - 1, "cases"))
    if not estimates:
        return PairedChanges(cases, changes, None, 0, "")
    noise = np.max(np.stack([e[0] for e in estimates]), axis=0)
    return PairedChanges(cases, changes, noise, min(e[1] for e in estimates), " and ".join(e[2] for e in estimates))


def cases_needed_for_percentile(n: int, which: str) -> int:
    """How many of n values must lie beyond a line for the percentile (linear interpolation) to lie
    beyond it for certain: those at or above the lower of the two interpolated ranks."""
    q = {"p50": 0.5, "p95": 0.95}[which]
    return n - math.floor(q * (n - 1))


@dataclass(frozen=True)
class TailTest:
    """Which cases changed beyond the null line by more than their noise (`tail_test`)."""

    significant: tuple[str, ...]  # cases individually beyond, at family-wise level alpha
    needed: int  # how many the percentile needs
    p_values: dict[str, float]
    resolution: float  # how far beyond the null line a typical case must be to be confirmed (z x noise sd)

    @property
    def evidence(self) -> bool:
        return len(self.significant) >= self.needed


def tail_test(paired: PairedChanges, null: float, up: bool, alpha: float, which: str) -> TailTest | None:
    """Is the percentile of per-case changes beyond `null` because enough cases each are?

    The percentile lies beyond `null` when at least k = `cases_needed_for_percentile` cases do. Each
    case's standardised change z = (change - null) / noise sd is referred to Student's t with the
    noise estimate's df; the evidence is that at least k cases have z beyond a critical value c
    chosen so that, were no case truly beyond `null`, k or more of n independent cases would pass
    it with probability alpha: binom.sf(k - 1, n, t.sf(c)) = alpha. (For k = 1 that is Sidak's
    correction.) None when the noise is unknown or the percentile needs more cases than there are."""
    if paired.noise_sd is None:
        return None
    n = paired.n
    k = cases_needed_for_percentile(n, which)
    if k > n:
        return None
    df = max(paired.noise_df, 1)
    sign = 1.0 if up else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(paired.noise_sd > 0, sign * (paired.changes - null) / paired.noise_sd,
                     np.where(sign * (paired.changes - null) > 0, np.inf, -np.inf))
    # the per-case level q with P(Binomial(n, q) >= k) = alpha, by bisection (monotone in q)
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sps.binom.sf(k - 1, n, mid) < alpha else (lo, mid)
    c = float(sps.t.isf(lo, df))
    significant = tuple(paired.cases[i] for i in np.argsort(-z) if z[i] >= c)
    p = sps.t.sf(z, df)
    return TailTest(significant, k, {key: float(v) for key, v in zip(paired.cases, p)},
                    c * float(np.median(paired.noise_sd)))


def case_statistic_interval(changes: np.ndarray, which: str, confidence: float) -> tuple[float, float]:
    """A distribution-free interval of the statistic over cases, treating the cases as a sample of
    cases like them. Percentiles: the order-statistic interval (binomial coverage); a bound that
    would need more cases than there are is infinite. Mean: Student's t interval."""
    x = np.sort(np.asarray(changes, dtype=float))
    n = x.size
    tail = (1 - confidence) / 2
    if which == "mean":
        if n < 2:
            return -math.inf, math.inf
        half = float(sps.t.isf(tail, n - 1) * x.std(ddof=1) / math.sqrt(n))
        return float(x.mean() - half), float(x.mean() + half)
    q = {"p50": 0.5, "p95": 0.95}[which]
    # P(X_(j) <= quantile) = P(Binomial(n, q) >= j): the lower bound is the largest j (1-based)
    # with that >= 1 - tail; the upper the smallest j with P(Binomial(n, q) < j) >= 1 - tail.
    lo_j = next((j for j in range(n, 0, -1) if sps.binom.sf(j - 1, n, q) >= 1 - tail), None)
    hi_j = next((j for j in range(1, n + 1) if sps.binom.cdf(j - 1, n, q) >= 1 - tail), None)
    lo = float(x[lo_j - 1]) if lo_j is not None else -math.inf
    hi = float(x[hi_j - 1]) if hi_j is not None else math.inf
    return lo, hi

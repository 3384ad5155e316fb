"""Compare a run with a baseline: comparability first, then completeness, status and thresholds.

The verdict of each check is one of PASS, FAIL, SKIP (nothing to compare for this variant, e.g.
`ssim_vs_baseline` of the reference variant itself), NEW (a variant the baseline does not have;
not gated), UNTESTABLE (beyond the threshold, and the data cannot tell it from noise) and NOT
COMPARABLE. The exit code is 2 if anything is not comparable, else 1 if any check failed or is
untestable, else 0. Rules (see docs/gate.md for the reasoning):

- Not comparable (exit 2): a different case-set fingerprint, suite fingerprint, model identity,
  metric-weights kind or hardware class, or a variant the baseline lists without a single record.
  Numbers from different set-ups are never compared.
- Incomplete (FAIL): a planned item without a record. A missing variant, or a gated figure the
  baseline has and the run does not, is a FAIL: a gate never passes because something was not
  measured. A gated key the baseline never measured for any variant is also a FAIL.
- Status (FAIL): a case that was OK in the baseline (every repeat OK, finite and not constant)
  and is now OOM, ERROR, TIMEOUT, SKIPPED, missing, non-finite or constant, whatever the means say.
- Latency (repeated timings), paired per case: each case's change against its own baseline
  (median log timing now minus then); the key's statistic (p50, p95, mean) of those per-case
  changes is compared. FAIL when it is beyond the threshold AND the data show it beyond the null
  line (the threshold by default): van Elteren's rank-sum test stratified by case (one-sided
  p < 0.001; 0.0005 per side for windows), or for p95 enough cases (the k that carry the
  percentile) each beyond it by more than their noise. Beyond the threshold but untestable with
  this sample (too few repeats and cases, or noise wider than `testable_resolution` thresholds) is
  UNTESTABLE, which fails (exit 1): never a pass.
- Memory and static figures (peaks, weights bytes): max against the threshold, no test — the
  allocator's peaks are near-deterministic for a fixed seed and shape.
- OOM rate: compared exactly.
- Quality (one value per case): paired by case id. FAIL when the mean per-case change is beyond
  the threshold AND its 95 % bootstrap interval lies wholly on the worse side of zero, or when
  more than 25 % of the paired cases, and at least 2, each got worse beyond the threshold (for "%":
  that fraction of the baseline mean), or when a case the baseline measured has no value now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats as sps

from ..results import Status, Unit, measure
from .rundata import Record, RunData
from .stats import (
    DEFAULT_SETTINGS,
    LATENCY_NULLS,
    GateSettings,
    case_statistic,
    case_statistic_interval,
    fmt_p,
    paired_bootstrap_mean,
    paired_changes,
    pooled_statistic,
    tail_test,
    van_elteren,
)
from .thresholds import LATENCY_KEYS, Family, Gates, Threshold, Worse, metric_family, parse_gates
from ..units import fmt_bytes  # noqa: F401  (re-exported for callers of this module)


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    NEW = "NEW"
    UNTESTABLE = "UNTESTABLE"  # beyond the threshold, and the data cannot tell it from noise: fails (exit 1)
    NOT_COMPARABLE = "NOT COMPARABLE"


@dataclass(frozen=True)
class Check:
    """One row of the gate report (and one JUnit test case)."""

    name: str  # metric / gate key, or "comparable", "complete", "status", "variant"
    variant: str | None
    verdict: Verdict
    why: str
    baseline: str = "—"
    current: str = "—"
    change: str = "—"
    threshold: str = "—"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.verdict in (Verdict.FAIL, Verdict.UNTESTABLE, Verdict.NOT_COMPARABLE)


@dataclass
class GateResult:
    baseline: RunData
    run: RunData
    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        return not any(c.verdict is Verdict.NOT_COMPARABLE for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    @property
    def exit_code(self) -> int:
        if not self.comparable:
            return 2
        return 1 if self.failures else 0

    def not_comparable_line(self) -> str:
        """One line naming every difference with both values (for stderr)."""
        return "; ".join(f"{c.details.get('what', 'setup')} differs (baseline {c.baseline}, run {c.current})"
                         for c in self.checks if c.verdict is Verdict.NOT_COMPARABLE)

    @property
    def headline(self) -> str:
        if not self.comparable:
            return "not comparable"
        untestable = sum(c.verdict is Verdict.UNTESTABLE for c in self.checks)
        n = len(self.failures) - untestable
        parts = ([f"{n} regression{'s' if n != 1 else ''}"] if n else []) + ([f"{untestable} untestable"] if untestable else [])
        return ", ".join(parts) if parts else "pass"


# ---------------------------------------------------------------------------------------------
# Formatting


def _unit(name: str) -> Unit:
    m = measure(name)
    return m.unit if m is not None else Unit.NONE


def fmt_value(name: str, value: float | None) -> str:
    return _unit(name).format(value)


def fmt_change(name: str, relative: float | None, absolute: float | None, threshold: Threshold) -> str:
    """The change as the threshold reads it (relative or absolute), with the other in brackets."""
    rel = "—" if relative is None else ("+inf%" if relative == math.inf else "-inf%" if relative == -math.inf
                                        else f"{relative * 100:+.1f}%")
    if absolute is None:
        return rel
    ab = _unit(name).format_change(absolute)
    return f"{rel} ({ab})" if threshold.relative else (f"{ab} ({rel})" if relative is not None else ab)


def _short(fp: Any) -> str:
    s = str(fp)
    return s[:19] + "…" if s.startswith("sha256:") and len(s) > 20 else s


# ---------------------------------------------------------------------------------------------
# Comparability


def comparability_problems(base: RunData, run: RunData) -> list[tuple[str, str, str, str]]:
    """What differs between the two set-ups, as (what, baseline value, run value, hint)."""
    out: list[tuple[str, str, str, str]] = []
    bf, rf = base.fingerprint, run.fingerprint

    bc, rc = bf.get("case_set") or {}, rf.get("case_set") or {}
    if bc.get("fingerprint") != rc.get("fingerprint"):
        out.append(("case set fingerprint",
                    f"{bc.get('name')} {_short(bc.get('fingerprint'))} ({bc.get('cases')} cases)",
                    f"{rc.get('name')} {_short(rc.get('fingerprint'))} ({rc.get('cases')} cases)",
                    "the cases changed; promote a new baseline from a run of the new case set"))

    bs, rs = bf.get("suite") or {}, rf.get("suite") or {}
    if bs.get("fingerprint") != rs.get("fingerprint"):
        parts = []
        if bs.get("name") != rs.get("name"):
            parts.append("suite name")
        for section in ("generation", "measurement"):
            if getattr(base, section) and getattr(run, section) and getattr(base, section) != getattr(run, section):
                parts.append(f"[{section}]")
        if list(base.variants) != list(run.variants):
            parts.append("variants")
        if base.baseline_variant != run.baseline_variant:
            parts.append("baseline_variant")
        hint = ("these recorded sections differ: " + ", ".join(parts)) if parts else "the suite file changed"
        out.append(("suite fingerprint", f"{bs.get('name')} {_short(bs.get('fingerprint'))}",
                    f"{rs.get('name')} {_short(rs.get('fingerprint'))}", hint + "; promote a new baseline"))

    bm, rm = bf.get("model") or {}, rf.get("model") or {}
    if bm != rm:
        keys = [k for k in dict.fromkeys([*bm, *rm]) if bm.get(k) != rm.get(k)]
        out.append(("model", ", ".join(f"{k}={bm.get(k)!r}" for k in keys), ", ".join(f"{k}={rm.get(k)!r}" for k in keys),
                    "the model identity (source, id, revision, seed) must match"))

    bw, rw = (base.weights or {}).get("metrics"), (run.weights or {}).get("metrics")
    if bw != rw:
        out.append(("metric weights", repr(bw), repr(rw), "random-weight metric scores cannot be compared with real ones"))

    bp, rp = (bf.get("environment") or {}).get("power_limit_w"), (rf.get("environment") or {}).get("power_limit_w")
    if bp is not None and rp is not None and bp != rp:
        out.append(("GPU power limit", f"{bp} W", f"{rp} W",
                    "the power limit decides the clocks the GPU can hold; set the same limit (nvidia-smi -pl) or "
                    "promote a baseline under this one"))

    if base.hardware_class != run.hardware_class:
        out.append(("hardware class", repr(base.hardware_class), repr(run.hardware_class),
                    "compare against the baseline for this hardware (baselines/<suite>/<hardware>.json)"))
    out += metric_convention_problems(base, run)
    out += empty_baseline_variants(base, run)
    return out


def empty_baseline_variants(base: RunData, run: RunData) -> list[tuple[str, str, str, str]]:
    """Variants the baseline lists without a single record (its worker never reported): there is
    nothing to hold the run's variant to, so every check would be SKIP and the gate would pass
    whatever the run did. Not comparable, never a pass."""
    out = []
    for v in base.variants:
        if base.records_of(v):
            continue
        recs = run.records_of(v)
        now = (", ".join(f"{n} {s.value}" for s, n in _status_counts(recs)) + f" of {len(recs)} items") if recs else "no records"
        out.append((f"baseline variant '{v}'", "listed with no records", now,
                    f"the baseline has nothing to compare '{v}' with; promote a baseline from a run in which '{v}' ran"))
    return out


def _status_counts(records: list[Record]) -> list[tuple[Status, int]]:
    counts: dict[Status, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def recorded_conventions(data: RunData) -> dict[str, str | None]:
    """Per metric, the ``convention`` its description recorded (variants' build info
    ``metric_descriptions``; a description without the key: None). Metrics never described are absent."""
    out: dict[str, str | None] = {}
    for summary in data.variant_summaries.values():
        descriptions = ((summary or {}).get("build") or {}).get("metric_descriptions") or {}
        for name, description in descriptions.items():
            if isinstance(description, dict):
                out.setdefault(name, description.get("convention"))
    return out


def metric_convention_problems(base: RunData, run: RunData) -> list[tuple[str, str, str, str]]:
    """Metrics both sides described under different conventions (how SSIM treats borders and
    masks, see `qie_bench/metrics/catalog/ssim.py`): their values differ by more than a typical
    threshold with no change in the images, so they are not comparable."""
    b_conv, r_conv = recorded_conventions(base), recorded_conventions(run)
    out = []
    for name in (n for n in r_conv if n in b_conv):
        if b_conv[name] != r_conv[name]:
            older = "baseline" if b_conv[name] is None else "run" if r_conv[name] is None else None
            hint = (f"the {older} recorded no convention (made before qie-bench recorded it)" if older
                    else "the metric is computed differently")
            out.append((f"{name} convention", repr(b_conv[name]), repr(r_conv[name]),
                        hint + "; promote a new baseline from a run of this version"))
    return out


def environment_drift(base: RunData, run: RunData) -> list[str]:
    """Software that changed between the two runs: not a reason to refuse the comparison (that is
    what the gate is for), but worth a line when a figure moves."""
    be, re_ = base.fingerprint.get("environment") or {}, run.fingerprint.get("environment") or {}
    out = [f"{k} {be.get(k)} -> {re_.get(k)}" for k in ("driver", "torch_cuda", "python") if be.get(k) != re_.get(k)]
    bp, rp = be.get("packages") or {}, re_.get("packages") or {}
    out += [f"{k} {bp.get(k)} -> {rp.get(k)}" for k in sorted(set(bp) | set(rp)) if bp.get(k) != rp.get(k)]
    return out


# ---------------------------------------------------------------------------------------------
# Checks


def _case_problems(records: list[Record], expected: int) -> list[str]:
    """Why a case is not fine: failed repeats, broken images, repeats without a record."""
    problems = []
    for r in sorted(records, key=lambda r: r.repeat):
        if not r.ok:
            problems.append(r.status.value + (f" ({r.error[:80]})" if r.error else ""))
        elif r.broken_output:
            problems.append(r.broken_output)
    if len(records) < expected:
        problems.append("no record" if not records else f"{expected - len(records)} repeat(s) not recorded")
    return problems


def _status_check(base: RunData, run: RunData, variant: str) -> Check:
    """A case that was fine in the baseline (every repeat OK, finite, not constant) and is not
    now fails the gate, whatever the means say."""
    b_cases, c_cases = base.cases_of(variant), run.cases_of(variant)
    planned_per_case: dict[str, int] = {}
    for key in run.planned_keys or []:
        parts = key.rsplit("/", 2)
        if len(parts) == 3 and parts[0] == variant:
            planned_per_case[parts[1]] = planned_per_case.get(parts[1], 0) + 1
    regressions: list[str] = []
    still_failing = fixed = b_ok = c_ok = 0
    for case, recs in b_cases.items():
        good_before = not _case_problems(recs, 0)
        problems = _case_problems(c_cases.get(case, []), planned_per_case.get(case, len(recs)))
        b_ok += good_before
        c_ok += not problems
        if good_before and problems:
            regressions.append(f"{case}: {problems[0]}")
        elif problems:
            still_failing += 1
        elif not good_before:
            fixed += 1
    extra = [f"{still_failing} still failing as in the baseline"] if still_failing else []
    extra += [f"{fixed} fixed"] if fixed else []
    if regressions:
        shown = "; ".join(regressions[:4]) + (f"; +{len(regressions) - 4} more" if len(regressions) > 4 else "")
        why, verdict = f"{len(regressions)} case(s) OK in the baseline now fail: {shown}", Verdict.FAIL
    else:
        why, verdict = "every case OK in the baseline is still OK", Verdict.PASS
    if extra:
        why += " (" + ", ".join(extra) + ")"
    n = len(b_cases)
    return Check("status", variant, verdict, why, baseline=f"{b_ok}/{n} cases OK", current=f"{c_ok}/{n} cases OK",
                 details={"regressions": regressions, "still_failing": still_failing, "fixed": fixed})


def _has(data: RunData, variant: str, name: str) -> bool:
    """Whether `data` has anything to compare for `name` on `variant`."""
    family = metric_family(name)
    if family is Family.LATENCY:
        return bool(data.timings_by_case(variant, LATENCY_KEYS[name][0]))
    if family is Family.MEMORY:
        return data.memory_max(variant, name) is not None
    if family is Family.STATIC:
        return data.summary_value(variant, name) is not None
    if family is Family.RATE:
        return data.oom_rate(variant) is not None
    return bool(data.metric_by_case(variant, name))


def _relative(cur: float, base: float) -> float:
    """(cur - base) / |base|, with the limits spelt out: equal values (also inf == inf) are no
    change, and any change from 0 or to/from an infinite value is infinitely large."""
    if base == cur:
        return 0.0
    if base == 0 or not math.isfinite(base) or not math.isfinite(cur):
        return math.copysign(math.inf, cur - base) if not math.isnan(cur - base) else math.nan
    return (cur - base) / abs(base)


def _moved_back(values: dict[str, list[float]], shift: float, relative: bool, up: bool) -> dict[str, list[float]] | None:
    """The current timings moved back by `shift` (a share of the threshold). Testing these against
    the baseline asks whether the run is slower (faster) by MORE than that, not merely at all."""
    if relative:
        factor = 1 + shift if up else 1 - shift
        if factor <= 0:  # "faster by 100 % or more" cannot happen
            return None
        return {k: [x / factor for x in v] for k, v in values.items()}
    delta = shift if up else -shift
    return {k: [x - delta for x in v] for k, v in values.items()}


def _latency_check(base: RunData, run: RunData, variant: str, name: str, thr: Threshold, settings: GateSettings) -> Check:
    """Latency within runs, paired per case: each case's timings against its own baseline.

    The statistic is the key's percentile (p50, p95) or mean of the per-case changes (log ratios of
    each case's median timing for "%" thresholds, differences in seconds otherwise), so
    cases of different cost never mix. It fails when that statistic is beyond the threshold AND the
    data show it, at one-sided level alpha, beyond the null line (the threshold by default):
    - van Elteren's rank-sum test stratified by case finds the timings shifted beyond it (the bulk
      moved), or
    - for p95: enough cases to carry the percentile (`cases_needed_for_percentile`) each changed
      beyond it by more than their noise (`tail_test`; a tail that moved without the bulk).
    A statistic beyond the threshold that this sample cannot test (too few repeats and cases) is
    UNTESTABLE, which fails the gate: it is never a pass."""
    field_name, which = LATENCY_KEYS[name]
    b, c = base.timings_by_case(variant, field_name), run.timings_by_case(variant, field_name)
    b_pool, c_pool = pooled_statistic(b, which), pooled_statistic(c, which)
    paired = paired_changes(b, c, relative=thr.relative, min_cases_for_spread=settings.min_cases_for_spread)
    if paired is None:
        return Check(name, variant, Verdict.FAIL, "no case has OK timings in both the baseline and this run",
                     baseline=fmt_value(name, b_pool), current=fmt_value(name, c_pool), threshold=thr.describe())
    stat = case_statistic(paired.changes, which)
    if thr.relative:
        rel = math.expm1(stat)
        ab = b_pool * rel
        change = rel
    else:
        ab = stat
        rel = _relative(b_pool + stat, b_pool)
        change = ab
    beyond = thr.exceeded(change)
    up = thr.worse is Worse.UP or (thr.worse is Worse.BOTH and change > 0)
    alpha = settings.latency_alpha / (2 if thr.worse is Worse.BOTH else 1)
    null_shift = thr.limit * LATENCY_NULLS[settings.latency_null]

    moved = _moved_back(c, null_shift, thr.relative, up)
    rank = van_elteren(b, moved) if moved is not None else None
    rank_testable = rank is not None and rank.p_min < alpha
    p = rank.p_towards(up) if rank is not None else 1.0
    rank_evidence = rank_testable and p < alpha

    tail = None
    if which == "p95" and moved is not None:
        null_line = (math.log1p(null_shift) if up else math.log1p(-null_shift)) if thr.relative else (
            null_shift if up else -null_shift)
        tail = tail_test(paired, null_line, up, alpha, which)
    # Testable: the test could confirm a case that moved `testable_resolution` thresholds beyond the
    # null line, i.e. its noise at the test's level (z x sd) is no wider than that. Noisier data can
    # neither confirm nor clear a change of the threshold's size, so "not significant" says nothing.
    limit_line = (math.log1p(thr.limit) if thr.relative else thr.limit) * settings.testable_resolution
    if which == "p95":
        resolution = tail.resolution if tail is not None else None
        tail_testable = tail is not None and tail.needed <= paired.n and resolution is not None and resolution <= limit_line
        testable = tail_testable
    else:  # the median and the mean: van Elteren's test, stratified by case, decides whether it can test
        resolution = None
        tail_testable = False
        testable = rank_testable
    tail_evidence = tail is not None and tail.needed <= paired.n and tail.evidence

    def shown(x: float) -> str:
        if not math.isfinite(x):
            return "unbounded"
        return f"{math.expm1(x) * 100:+.1f}%" if thr.relative else f"{x:+.3g} s"

    lo, hi = case_statistic_interval(paired.changes, which, settings.confidence)
    label = {"p50": "median", "p95": "95th percentile", "mean": "mean"}[which]
    stat_text = (f"{label} of per-case changes over {paired.n} paired cases "
                 f"({settings.confidence:.0%} CI {shown(lo)}…{shown(hi)})")
    worse_cases = int(np.sum(paired.changes > 0)) if up else int(np.sum(paired.changes < 0))
    cases_text = f"{'slower' if up else 'faster'} in {worse_cases}/{paired.n} cases"
    shift_text = (f"{null_shift * 100:g}%" if thr.relative else f"{null_shift:g} s") if null_shift else ""
    by_more = f"more than {shift_text} " if null_shift else ""
    noise_text = (f"case noise from {paired.noise_from}" if paired.noise_from
                  else f"case noise unknown (one repeat, fewer than {settings.min_cases_for_spread} cases)")
    chg = fmt_change(name, rel, ab, thr)
    details: dict[str, Any] = {
        "baseline": b_pool, "current": c_pool, "relative_change": rel, "paired_statistic": stat, "n": paired.n,
        "strata": paired.n, "ci": (lo, hi), "p_beyond_threshold": p, "alpha": alpha, "testable": testable,
        "rank_evidence": rank_evidence, "tail_evidence": tail_evidence, "ci_evidence": tail_evidence,
        "tail_cases": list(tail.significant) if tail else [], "noise_from": paired.noise_from,
        "resolution": None,
    }
    details["resolution"] = resolution
    if beyond and (rank_evidence or tail_evidence):
        reasons = []
        if rank_evidence:
            reasons.append(f"the timings are significantly {by_more}{'slower' if up else 'faster'} "
                           f"(van Elteren p={fmt_p(p)} < {alpha:g}, {cases_text})")
        if tail_evidence and tail is not None:
            shown_cases = ", ".join(tail.significant[:4]) + (f", +{len(tail.significant) - 4} more"
                                                             if len(tail.significant) > 4 else "")
            reasons.append(f"{len(tail.significant)} case(s) each changed beyond {shift_text or 'no change'} by more "
                           f"than their noise (at least {tail.needed} needed for the percentile, level {alpha:g}): {shown_cases}")
        why, verdict = f"{chg} ({stat_text}) is beyond {thr.describe()}, and " + " and ".join(reasons), Verdict.FAIL
    elif beyond and not testable:
        if resolution is not None and not (which != "p95" and not rank_testable):
            cannot = (f"a case must move {shown(resolution)} beyond the null line to be confirmed at level {alpha:g} "
                      f"({noise_text}), more than {settings.testable_resolution:g} x the threshold")
        else:
            cannot = (f"the rank test's smallest possible p is {fmt_p(rank.p_min) if rank else '—'} (needs < {alpha:g}); "
                      f"{noise_text}")
        why = (f"{chg} ({stat_text}) is beyond {thr.describe()}, and this sample cannot tell that from noise: "
               f"{cannot}. Add repeats or cases, or gate a statistic the suite can test")
        verdict = Verdict.UNTESTABLE
    elif beyond:
        tail_text = (f", {len(tail.significant)} of the {tail.needed} case(s) the percentile needs are beyond it beyond "
                     f"noise" if tail is not None and tail_testable else "")
        why = (f"{chg} ({stat_text}) is beyond {thr.describe()} but not significantly: p={fmt_p(p)} ≥ {alpha:g} that "
               f"it {'exceeds ' + shift_text if null_shift else 'changed at all'}{tail_text}, {cases_text}; "
               f"{noise_text}: within noise")
        verdict = Verdict.PASS
    else:
        why, verdict = f"within {thr.describe()} ({stat_text}, {cases_text})", Verdict.PASS
    return Check(name, variant, verdict, why, baseline=fmt_value(name, b_pool), current=fmt_value(name, c_pool),
                 change=chg + f" (n={paired.n})", threshold=thr.describe(), details=details)


@dataclass(frozen=True)
class RunToRunNoise:
    """A latency key's statistic in each run a baseline was promoted from, and the machine's
    run-to-run spread of it (log scale), pooled over the baseline's variants."""

    logs: np.ndarray  # this variant's log statistic per baseline run
    sd: float  # pooled sd of the log statistic between runs
    df: int  # its degrees of freedom: sum over variants of (runs - 1)
    variants: int  # how many variants the sd is pooled over


def _run_to_run_noise(base: RunData, variant: str, name: str, settings: GateSettings) -> RunToRunNoise | None:
    """None unless the baseline holds this key from at least `min_history_runs` runs."""
    per_variant = ((base.run_to_run or {}).get("latency") or {})

    def logs_of(v: str) -> np.ndarray:
        vals = [x for x in (per_variant.get(v) or {}).get(name) or [] if isinstance(x, (int, float)) and x > 0]
        return np.log(np.asarray(vals, dtype=float))

    mine = logs_of(variant)
    if mine.size < settings.min_history_runs:
        return None
    ss, df, pooled = 0.0, 0, 0
    for v in per_variant:
        logs = logs_of(v)
        if logs.size >= 2:
            ss += float(((logs - logs.mean()) ** 2).sum())
            df += logs.size - 1
            pooled += 1
    return RunToRunNoise(logs=mine, sd=math.sqrt(ss / df), df=df, variants=pooled)


def _between_runs_check(base: RunData, run: RunData, variant: str, name: str, thr: Threshold, settings: GateSettings,
                        noise: RunToRunNoise) -> Check:
    """Latency against a baseline promoted from several runs. Repeats within one run cannot show
    how much a whole run moves (a worker process's placement, clocks, the host), so the test is
    between runs: the baseline figure is the geometric mean of the runs' statistics, and a change
    fails when it is beyond the threshold AND the current run's statistic lies further from it
    than the runs scatter: t = (log current - mean log baseline) / (sd sqrt(1 + 1/n)), one-sided p
    from Student's t with the pooled degrees of freedom (a prediction-interval test).

    The test asks whether the run moved at all (asv's rule), not by more than the threshold as
    the within-run tests do: those move the null to the threshold because they cannot see a whole
    run's shift, which this test's variance contains. The threshold then says what size matters."""
    c_stat = run.latency_statistic(variant, name)
    assert c_stat is not None
    n = noise.logs.size
    b_ref = float(np.exp(noise.logs.mean()))
    rel, ab = _relative(c_stat, b_ref), c_stat - b_ref
    change = rel if thr.relative else ab
    beyond = thr.exceeded(change)
    up = thr.worse is Worse.UP or (thr.worse is Worse.BOTH and change > 0)
    alpha = settings.latency_alpha / (2 if thr.worse is Worse.BOTH else 1)
    moved = (math.log(c_stat) - noise.logs.mean()) if up else (noise.logs.mean() - math.log(c_stat))
    se = noise.sd * math.sqrt(1 + 1 / n)
    if se > 0:
        t = moved / se
        p = float(sps.t.sf(t, noise.df))
    else:  # the runs agreed exactly: any move is beyond their scatter
        t = math.inf if moved > 0 else -math.inf
        p = 0.0 if moved > 0 else 1.0
    chg = fmt_change(name, rel, ab, thr)
    scatter = (f"run-to-run sd {noise.sd * 100:.1f}% ({n} baseline runs; pooled over {noise.variants} variant(s), "
               f"{noise.df} df)")
    if beyond and p < alpha:
        why = (f"{chg} is beyond {thr.describe()}, and the run moved by more than runs scatter: "
               f"t={t:.2f}, p={fmt_p(p)} < {alpha:g}, {scatter}")
        verdict = Verdict.FAIL
    elif beyond:
        why = (f"{chg} is beyond {thr.describe()} but within the machine's run-to-run noise: p={fmt_p(p)} ≥ {alpha:g}, "
               f"{scatter}")
        verdict = Verdict.PASS
    else:
        why = f"within {thr.describe()} ({scatter})"
        verdict = Verdict.PASS
    return Check(name, variant, verdict, why, baseline=fmt_value(name, b_ref) + f" (mean of {n} runs)",
                 current=fmt_value(name, c_stat), change=chg, threshold=thr.describe(),
                 details={"baseline": b_ref, "current": c_stat, "relative_change": rel, "p_changed": p,
                          "alpha": alpha, "test": "between-runs", "runs": n, "run_to_run_sd": noise.sd, "df": noise.df,
                          "t": t})


def _single_value_check(name: str, variant: str, b: float, c: float, thr: Threshold, what: str) -> Check:
    rel, ab = _relative(c, b), c - b
    change = rel if thr.relative else ab
    beyond = thr.exceeded(change)
    chg = fmt_change(name, rel, ab, thr)
    why = f"{what}: {chg} is beyond {thr.describe()}" if beyond else f"{what}: within {thr.describe()}"
    return Check(name, variant, Verdict.FAIL if beyond else Verdict.PASS, why, baseline=fmt_value(name, b),
                 current=fmt_value(name, c), change=chg, threshold=thr.describe(),
                 details={"baseline": b, "current": c, "relative_change": rel})


def _oom_check(base: RunData, run: RunData, variant: str, thr: Threshold) -> Check:
    b, c = base.oom_rate(variant), run.oom_rate(variant)
    assert b is not None and c is not None

    def count(d: RunData) -> str:
        recs = [r for r in d.records_of(variant) if r.status is not Status.SKIPPED]
        return f"{sum(1 for r in recs if r.status is Status.OOM)} of {len(recs)} attempts"

    return _single_value_check("oom_rate", variant, b, c, thr, f"OOM in {count(run)} (baseline {count(base)})")


def _case_change(b: float, c: float) -> float:
    """c - b, with equal values (inf == inf: both images identical to the reference) giving 0."""
    return 0.0 if b == c else c - b


def _quality_check(base: RunData, run: RunData, variant: str, name: str, thr: Threshold, settings: GateSettings) -> Check:
    b_all, c_all = base.metric_by_case(variant, name), run.metric_by_case(variant, name)
    measured = {k: v for k, v in b_all.items() if not math.isnan(v)}
    # A case whose item failed now has no score; the status check reports it, so it is only
    # named here. A case that ran fine but has no score (the metric crashed) fails this check.
    now_ok = {r.case_id for r in run.records_of(variant) if r.ok and r.repeat == 0}
    unscored = [k for k in measured if k not in c_all or math.isnan(c_all[k])]
    missing = sorted(k for k in unscored if k in now_ok)
    failed_items = sorted(k for k in unscored if k not in now_ok)
    cases = [k for k in measured if k not in unscored]
    problems: list[str] = []
    if missing:
        problems.append(f"no value now for {len(missing)} of {len(measured)} case(s) the baseline measured (e.g. {missing[0]})")
    if failed_items:
        problems.append(f"{len(failed_items)} case(s) not scored because the item failed (see status)")
    if not cases:  # nothing left to compare: never a pass
        return Check(name, variant, Verdict.FAIL, "; ".join(problems) or "no case to compare", threshold=thr.describe(),
                     baseline=fmt_value(name, float(np.mean(list(measured.values()))) if measured else None))
    b = np.array([measured[k] for k in cases])
    c = np.array([c_all[k] for k in cases])
    d = np.array([_case_change(x, y) for x, y in zip(b, c)])
    # Per-case allowance: for "%" the same fraction of the baseline MEAN for every case, so that a
    # case whose score is near zero does not turn re-run noise into a huge relative change.
    b_mean_all = float(np.mean(b[np.isfinite(b)])) if np.isfinite(b).any() else math.nan
    if thr.relative:
        scale = abs(b_mean_all) if math.isfinite(b_mean_all) and b_mean_all != 0 else math.nan
        per_case = d / scale if math.isfinite(scale) else np.array([_relative(y, x) for x, y in zip(b, c)])
    else:
        per_case = d
    worse_cases = [k for k, ch in zip(cases, per_case) if thr.exceeded(float(ch))]
    finite = np.isfinite(d) & np.isfinite(b)
    stat = ci = None
    if finite.any():
        df, bf = d[finite], b[finite]
        mean_d = float(df.mean())
        stat = _relative(float(bf.mean()) + mean_d, float(bf.mean())) if thr.relative else mean_d
        ci = paired_bootstrap_mean(df, settings.rng(variant, name), settings.quality_bootstrap, settings.confidence,
                                   scale=bf if thr.relative else None)
    systematic = False
    if stat is not None and ci is not None and thr.exceeded(stat):
        worse_up = thr.worse is Worse.UP or (thr.worse is Worse.BOTH and stat > 0)
        systematic = ci[0] > 0 if worse_up else ci[1] < 0
    widespread = (len(worse_cases) > settings.worse_case_share * len(cases)
                  and len(worse_cases) >= settings.widespread_min_cases)

    def num(x: float) -> str:
        return f"{x * 100:+.2f}%" if thr.relative else f"{x:+.3g}"

    stat_txt = "—" if stat is None else num(stat)
    ci_txt = "" if ci is None else f" ({settings.confidence:.0%} CI {num(ci[0])}…{num(ci[1])})"
    parts = [f"mean change {stat_txt}{ci_txt}"]
    if systematic:
        parts[0] += f" is beyond {thr.describe()} and its interval excludes 0"
    elif stat is not None and thr.exceeded(stat):
        parts[0] += f" is beyond {thr.describe()} but its interval includes 0"
    parts.append(f"{len(worse_cases)} of {len(cases)} cases worse beyond {thr.describe()}"
                 + (f" (> {settings.worse_case_share:.0%}, e.g. {worse_cases[0]})" if widespread else
                    (f" (e.g. {worse_cases[0]}; one case alone is not widespread)"
                     if len(worse_cases) < settings.widespread_min_cases
                     and len(worse_cases) > settings.worse_case_share * len(cases)
                     else f" (e.g. {worse_cases[0]})" if worse_cases else "")))
    failed = systematic or widespread or bool(missing)
    why = "; ".join(problems + parts)
    b_mean, c_mean = float(np.mean(b)), float(np.mean(c))
    rel_mean = _relative(c_mean, b_mean) if math.isfinite(b_mean) and math.isfinite(c_mean) else None
    change = (f"{stat * 100:+.1f}%" if thr.relative and stat is not None else
              (f"{stat:+.4g}" + (f" ({rel_mean * 100:+.1f}%)" if rel_mean is not None and math.isfinite(rel_mean) else ""))
              if stat is not None else "—")
    return Check(name, variant, Verdict.FAIL if failed else Verdict.PASS, why, baseline=fmt_value(name, b_mean),
                 current=fmt_value(name, c_mean), change=change, threshold=thr.describe(),
                 details={"mean_change": stat, "ci": ci, "cases": len(cases), "worse_cases": worse_cases,
                          "missing_cases": missing, "systematic": systematic, "widespread": widespread})


def _metric_check(base: RunData, run: RunData, variant: str, name: str, thr: Threshold, settings: GateSettings) -> Check:
    family = metric_family(name)
    if not _has(base, variant, name):
        if not any(_has(base, v, name) for v in base.variants):
            return Check(name, variant, Verdict.FAIL,
                         f"the baseline never measured {name} (absent or null for every variant); "
                         "gate it only where it is measured, or promote a baseline that measures it", threshold=thr.describe())
        return Check(name, variant, Verdict.SKIP, f"the baseline has no {name} for this variant", threshold=thr.describe())
    if not _has(run, variant, name):
        return Check(name, variant, Verdict.FAIL, f"not measured in this run (the baseline has {name} for {variant})",
                     threshold=thr.describe())
    if family is Family.LATENCY:
        history = _run_to_run_noise(base, variant, name, settings)
        if history is not None:
            return _between_runs_check(base, run, variant, name, thr, settings, history)
        return _latency_check(base, run, variant, name, thr, settings)
    if family is Family.MEMORY:
        b, c = base.memory_max(variant, name), run.memory_max(variant, name)
        assert b is not None and c is not None
        return _single_value_check(name, variant, b, c, thr, "max over items")
    if family is Family.STATIC:
        b2, c2 = base.summary_value(variant, name), run.summary_value(variant, name)
        assert b2 is not None and c2 is not None
        return _single_value_check(name, variant, b2, c2, thr, "per variant")
    if family is Family.RATE:
        return _oom_check(base, run, variant, thr)
    return _quality_check(base, run, variant, name, thr, settings)


def compare(base: RunData, run: RunData, gates: Gates | None = None, settings: GateSettings = DEFAULT_SETTINGS) -> GateResult:
    """Compare `run` with `base`. `gates` defaults to the run's own [gates] table (the suite as it
    is now); a bad threshold there is a UserInputError."""
    result = GateResult(base, run, [])
    problems = comparability_problems(base, run)
    if problems:
        for what, bv, rv, hint in problems:
            result.checks.append(Check("comparable", None, Verdict.NOT_COMPARABLE, f"{what} differs: {hint}",
                                       baseline=bv, current=rv, details={"what": what}))
        return result
    result.checks.append(Check("comparable", None, Verdict.PASS,
                               "same case set, suite, model, metric weights and hardware class"))

    missing = run.missing_keys
    if missing or not run.summary_complete:
        n = len(run.planned_keys or [])
        why = (f"{len(missing)} of {n} planned items have no record (e.g. {missing[0]}): an incomplete run never passes"
               if missing else "summary.json says the run is incomplete")
        result.checks.append(Check("complete", None, Verdict.FAIL, why + "; finish it with `qie-bench run --resume`",
                                   current=f"{n - len(missing)}/{n} items"))
    else:
        n = len(run.planned_keys or [])
        result.checks.append(Check("complete", None, Verdict.PASS, "every planned item has a record", current=f"{n}/{n} items"))
    if base.note:
        result.notes.append(f"baseline: {base.note}")
    drift = environment_drift(base, run)
    if drift:
        result.notes.append("environment differs (compared anyway; same hardware class): " + ", ".join(drift))

    if gates is None:
        gates = parse_gates(run.gates, where=f"{run.label}: summary.json gates")
    if run.gates != base.gates:
        result.notes.append("the run's [gates] thresholds differ from those stored in the baseline; the run's are used")
    if gates.empty:
        result.notes.append("the suite has no [gates] thresholds: only completeness and case status are checked")
    latency_gated = any(metric_family(k) is Family.LATENCY for v in base.variants for k in gates.for_variant(v))
    history = len((base.run_to_run or {}).get("runs") or [])
    if latency_gated and history >= settings.min_history_runs:
        result.notes.append(f"latency is tested against the scatter between the {history} runs the baseline was promoted from")
    elif latency_gated:
        result.notes.append("the baseline was promoted from " + (f"{history} runs" if history else "one run")
                            + f": latency is tested within runs, which cannot see how far a whole run moves on this "
                              f"machine; promote it from {settings.min_history_runs} or more runs (docs/gate.md)")
    for name in gates.per_variant:
        if name not in base.variants and not run.has_variant(name):
            result.notes.append(f"[gates.{name}] names a variant that is in neither the baseline nor the run")

    for variant in base.variants:
        thresholds = gates.for_variant(variant)
        if not run.has_variant(variant):
            result.checks.append(Check("status", variant, Verdict.FAIL, f"variant '{variant}' is in the baseline but not in the run"))
            for name, thr in thresholds.items():
                result.checks.append(Check(name, variant, Verdict.FAIL, "not measured: the variant is missing from the run",
                                           threshold=thr.describe()))
            continue
        result.checks.append(_status_check(base, run, variant))
        for name, thr in thresholds.items():
            result.checks.append(_metric_check(base, run, variant, name, thr, settings))
    for variant in run.variants:
        if variant not in base.variants:
            result.checks.append(Check("variant", variant, Verdict.NEW,
                                       "not in the baseline, so not gated; promote a new baseline to gate it"))
    return result

"""The statistics behind the verdicts: level of the latency test, power, bootstrap reproducibility."""

from __future__ import annotations

import numpy as np

from qie_bench.gate.stats import DEFAULT_SETTINGS, paired_bootstrap_mean, stratified_bootstrap, van_elteren


def _runs(rng: np.random.Generator, cases: int, repeats: int, factor: float) -> tuple[dict, dict]:
    level = np.exp(rng.normal(np.log(5.0), 0.3, cases))  # cases differ by ~30%
    base = {f"c{i}": list(level[i] * np.exp(rng.normal(0, 0.02, repeats))) for i in range(cases)}
    cur = {f"c{i}": list(level[i] * factor * np.exp(rng.normal(0, 0.02, repeats))) for i in range(cases)}
    return base, cur


def test_van_elteren_holds_its_level_under_no_change() -> None:
    rng = np.random.default_rng(0)
    p = np.array([van_elteren(*_runs(rng, 10, 3, 1.0)).p_greater for _ in range(400)])  # type: ignore[union-attr]
    assert 0.02 < (p < 0.05).mean() < 0.09  # a valid test rejects about 5% at the 5% level


def test_van_elteren_finds_a_shift_the_pooled_test_misses() -> None:
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    base, cur = _runs(rng, 12, 3, 1.05)
    test = van_elteren(base, cur)
    assert test is not None and test.p_greater < DEFAULT_SETTINGS.latency_alpha and test.higher_cases >= 11
    pooled = mannwhitneyu(np.concatenate(list(cur.values())), np.concatenate(list(base.values())), alternative="greater")
    assert pooled.pvalue > 0.01  # case-to-case spread drowns a 5% shift when repeats are pooled


def test_van_elteren_reports_when_too_few_repeats_to_be_significant() -> None:
    test = van_elteren({"a": [1.0]}, {"a": [2.0]})
    assert test is not None and test.p_min > 0.1
    assert van_elteren({"a": [1.0]}, {"b": [1.0]}) is None


def test_bootstraps_are_reproducible_and_cover() -> None:
    rng = np.random.default_rng(2)
    base, cur = _runs(rng, 12, 3, 1.10)
    a = stratified_bootstrap(base, cur, "p50", 2000, DEFAULT_SETTINGS.rng("v", "m"))
    b = stratified_bootstrap(base, cur, "p50", 2000, DEFAULT_SETTINGS.rng("v", "m"))
    assert a == b and a is not None and a.ratio[0] < 1.10 < a.ratio[1] + 0.02
    d = np.random.default_rng(3).normal(-0.03, 0.01, 20)
    lo, hi = paired_bootstrap_mean(d, DEFAULT_SETTINGS.rng("x"), 5000)
    assert (lo, hi) == paired_bootstrap_mean(d, DEFAULT_SETTINGS.rng("x"), 5000)
    assert lo < d.mean() < hi < 0


def test_one_case_is_the_mann_whitney_u_test() -> None:
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(4)
    b, c = list(rng.random(15)), list(rng.random(15) + 0.2)
    ours = van_elteren({"a": b}, {"a": c})
    ref = mannwhitneyu(c, b, alternative="greater", method="asymptotic", use_continuity=False)
    assert ours is not None and abs(ours.p_greater - ref.pvalue) < 1e-12

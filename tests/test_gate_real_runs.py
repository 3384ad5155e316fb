"""The gate on real runs: the committed CPU smoke-noise runs (three runs of the smoke suite on one
2-core machine, 28 cases x 3 repeats), cut to the smoke settings and with a planted tail regression
(benchmarks/gate_planted_tail.py prints every pair)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_planted_tail import RUNS, cut

from qie_bench.gate.compare import Verdict, compare
from qie_bench.gate.rundata import load_run
from qie_bench.gate.thresholds import parse_gates


@pytest.fixture(scope="module")
def runs() -> dict:
    return {name: load_run(RUNS / name) for name in ("run-2", "run-3", "run-4")}


def _check(result, name: str, variant: str):
    return next(c for c in result.checks if c.name == name and c.variant == variant)


def test_issue_14_planted_tail_fails(runs: dict) -> None:
    """Issue 14's measurement: 16 cases x 1 repeat, p95 at +10 %, 3 of 16 nf4 cases twice as slow.
    Before: `PASS +84.0% ... not significantly: p=0.99`. Paired per case, the three cases are found."""
    base = cut(runs["run-3"], 16, 1)
    cases = list(dict.fromkeys(k.split("/")[1] for k in base.planned_keys))
    slow = set(cases[:3])
    result = compare(base, cut(runs["run-2"], 16, 1, slow, 2.0), parse_gates({"latency_p95_s": "+10%"}))
    p95 = _check(result, "latency_p95_s", "nf4")
    assert p95.verdict is Verdict.FAIL and set(p95.details["tail_cases"]) == slow, p95.why
    assert p95.details["n"] == 16 and result.exit_code == 1


def test_honest_reruns_of_slow_variants_pass_and_fast_ones_are_not_passed_silently(runs: dict) -> None:
    """The two undisturbed runs (run-3 had a stretch of contention: five nf4 cases 3-4x slower in every
    repeat), full runs, the suite's own p95 gate (+25 %). The 2-s int8/nf4 edits are testable and
    pass; the 0.1-0.4-s edits of the others scatter by ~25 % per case between runs on this CPU, so
    their p95 is UNTESTABLE at +25 % - reported as such, never as a pass."""
    gates = parse_gates({"latency_p95_s": "+25%"})
    for a, b in (("run-2", "run-4"), ("run-4", "run-2")):
        result = compare(runs[a], runs[b], gates)
        for v in ("int8", "nf4"):
            check = _check(result, "latency_p95_s", v)
            assert check.verdict is Verdict.PASS and check.details["testable"], (a, b, v, check.why)
        fp32 = _check(result, "latency_p95_s", "fp32")
        assert fp32.verdict is Verdict.UNTESTABLE and fp32.details["resolution"] > 2 * 0.223, fp32.why

"""Does the gate catch a tail regression on real runs, and pass honest re-runs of them?

Gates each committed CPU smoke-noise run (`benchmarks/data/smoke-noise-runs`, three runs of the
smoke suite on one 2-core machine) against each other one: as they are (honest re-runs), and with
3 of the first N cases made `--factor` times slower in every variant (the tail regression of issue
14). `--cases 16 --repeats 1` cuts the runs to the smoke suite's settings (the first 16 cases of the
plan, repeat 0 only). Prints every pair's exit code and each variant's latency verdicts.

    python benchmarks/gate_planted_tail.py --cases 16 --repeats 1 --gate latency_p95_s=+10%

With `--history N` the first N run directories form one baseline promoted from N runs (the gate
then tests latency between runs, against their scatter, as `qie-bench baseline promote R1 R2 R3`
does), and each later run is gated against it, honest and planted:

    python benchmarks/gate_planted_tail.py --runs runs/honest/run-* --history 3 --cases 16 --repeats 1
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qie_bench.gate.compare import compare  # noqa: E402
from qie_bench.gate.rundata import RunData, load_run, run_to_run_section  # noqa: E402
from qie_bench.gate.thresholds import parse_gates  # noqa: E402

RUNS = ROOT / "benchmarks" / "data" / "smoke-noise-runs"


def cut(run: RunData, cases: int, repeats: int, slow: set[str] = frozenset(), factor: float = 2.0) -> RunData:
    """The run restricted to its first `cases` cases and `repeats` repeats, with `slow` cases slowed."""
    keep = list(dict.fromkeys(k.split("/")[1] for k in run.planned_keys or []))[:cases]
    records = []
    for r in run.records:
        if r.case_id not in keep or r.repeat >= repeats:
            continue
        if r.case_id in slow and r.latency_s is not None:
            r = r.model_copy(update={"latency_s": r.latency_s * factor, "step_s": [s * factor for s in r.step_s or []]})
        records.append(r)
    planned = [k for k in run.planned_keys or [] if k.split("/")[1] in keep and int(k.split("/")[2]) < repeats]
    return replace(run, records=records, planned_keys=planned)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--slow", type=int, default=3, help="how many of the cases are slowed")
    p.add_argument("--gate", action="append", default=None, metavar="KEY=THRESHOLD",
                   help="a [gates] entry (repeatable); default latency_p95_s=+10%%")
    p.add_argument("--runs", nargs="+", type=Path, default=None,
                   help="run directories of one suite on one machine (default: the committed smoke-noise runs)")
    p.add_argument("--history", type=int, default=0,
                   help="the first N runs form one multi-run baseline; each later run is gated against it")
    args = p.parse_args(argv)
    gates = parse_gates(dict(g.split("=", 1) for g in (args.gate or ["latency_p95_s=+10%"])))
    dirs = args.runs or sorted(RUNS.iterdir())
    runs = {d.name: load_run(d) for d in dirs if (d / "summary.json").is_file()}
    tally: Counter[str] = Counter()
    if args.history:
        names = list(runs)
        hist = [cut(runs[n], args.cases, args.repeats) for n in names[: args.history]]
        base = replace(hist[0], run_to_run=run_to_run_section(hist))
        cases = list(dict.fromkeys(k.split("/")[1] for k in base.planned_keys or []))
        for b in names[args.history:]:
            for label, slow in (("honest", set()), ("planted", set(cases[: args.slow]))):
                res = compare(base, cut(runs[b], args.cases, args.repeats, slow, args.factor), gates)
                tally[f"{label} exit {res.exit_code}"] += 1
                verdicts = ", ".join(f"{c.variant} {c.name} {c.verdict.value} {c.change}" for c in res.checks
                                     if c.name.startswith(("latency", "step")))
                print(f"{'+'.join(names[: args.history])} -> {b} {label:8s} exit {res.exit_code}  {verdicts}")
        print("totals: " + ", ".join(f"{k}: {n}" for k, n in sorted(tally.items())))
        return 0
    for a, b in itertools.permutations(runs, 2):
        base = cut(runs[a], args.cases, args.repeats)
        cases = list(dict.fromkeys(k.split("/")[1] for k in base.planned_keys or []))
        for label, slow in (("honest", set()), ("planted", set(cases[: args.slow]))):
            res = compare(base, cut(runs[b], args.cases, args.repeats, slow, args.factor), gates)
            tally[f"{label} exit {res.exit_code}"] += 1
            verdicts = ", ".join(f"{c.variant} {c.name} {c.verdict.value} {c.change}" for c in res.checks
                                 if c.name.startswith(("latency", "step")) and c.verdict.value != "PASS")
            print(f"{a} -> {b} {label:8s} exit {res.exit_code}  {verdicts or 'every latency check PASS'}")
    print("totals: " + ", ".join(f"{k}: {n}" for k, n in sorted(tally.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How often does the gate cry wolf, and how often does it catch a real 10 % slowdown?

Fits the gate's noise model (qie_bench.gate.simulate.NoiseModel) to a real run directory —
per-case latency levels, the pooled repeat-to-repeat residuals (outliers included), memory
peaks, per-case quality scores and statuses — then, for each of N simulations, draws a baseline
run and two candidate runs from it:

- a null re-run (nothing changed): any exit code other than 0 is a false positive;
- the same with every variant truly 10 % slower: the slowdown counts as caught for a variant when
  one of its latency checks FAILs.

Targets: false-positive rate < 1 %, catch rate >= 95 % for every variant. Exits 1 if missed.

    .venv/bin/python benchmarks/gate_false_positive.py --run benchmarks/data/smoke-run
    .venv/bin/python benchmarks/gate_false_positive.py --synthetic   # no real run at hand

What a single run cannot show is a parameter, printed with the results: the shift common to a
whole re-run (`--run-shift-sd`, default 1 %: clocks, thermals, host load between CI jobs). Give
`--run` several times (repeated runs of one suite on one machine) and both that shift and the
shift of one variant's worker process are measured instead (NoiseModel.fit_runs).
`--history N` promotes every simulated baseline from N runs, as `qie-bench baseline promote RUN
MORE_RUN...` does, so the gate tests latency against the scatter between runs. The
re-run noise of a case's quality score (`--quality-noise`, a fraction of that score's spread
between cases) defaults to 0 when every case's repeats produced byte-identical images (the
pipeline is deterministic, so a re-run scores identically) and to 0.05 otherwise. Thresholds come
from `--gates FILE.toml` ([gates] table), else from the run's own [gates] if it has any, else from
the defaults below (latency +5 %, VRAM/allocator peaks +3 %, RSS +5 %, OOM rate 0, quality per
metric).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
import tomllib
from dataclasses import replace
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qie_bench.errors import UserInputError
from qie_bench.gate.compare import Verdict, compare
from qie_bench.gate.rundata import RunData, load_run, run_to_run_section
from noise_model import MEMORY_FIELDS, NoiseModel, RunMeta, deterministic_outputs, run_data, write_run_dir
from qie_bench.gate.stats import GateSettings
from qie_bench.gate.thresholds import Direction, Family, metric_direction, metric_family, parse_gates

DEFAULT_RUN = ROOT / "benchmarks" / "data" / "smoke-run"
# Default thresholds per quality metric (absolute in the metric's unit, or relative); a metric
# not listed gets "-5%" / "+5%" by its direction.
QUALITY_DEFAULTS = {"ssim": "-0.02", "ssim_outside_mask": "-0.02", "ssim_vs_baseline": "-0.02", "psnr": "-1.0",
                    "psnr_outside_mask": "-1.0", "psnr_vs_baseline": "-1.0", "lpips_vs_baseline": "+0.02",
                    "clip_iqa": "-6%", "clip_score": "-5%"}


def default_gates(model: NoiseModel, latency_threshold: str) -> dict[str, Any]:
    """Thresholds for everything the run measured."""
    gates: dict[str, Any] = {"latency_p50_s": latency_threshold, "latency_p95_s": latency_threshold}
    for key in MEMORY_FIELDS:
        if any(t.memory.get(key) for per in model.truth.values() for t in per.values()):
            # Device and allocator peaks repeat to within MiB; host RSS (Python heap, page cache
            # of loaded files) wanders by a few percent between runs.
            gates[key] = "+5%" if key == "rss_peak_bytes" else "+3%"
    gates["oom_rate"] = "0"
    metrics = sorted({m for per in model.truth.values() for t in per.values() for m in t.metrics})
    for m in metrics:
        direction = metric_direction(m)
        if direction is None:
            continue
        gates[m] = QUALITY_DEFAULTS.get(m, "-5%" if direction is Direction.HIGHER else "+5%")
    return gates


def load_model(args: argparse.Namespace) -> tuple[NoiseModel, str, str, list[RunData]]:
    """The fitted noise model, where it came from, how the quality re-run noise was set, and the
    real runs it was fitted to (none for a synthetic one)."""
    runs: list[RunData] = []
    if args.synthetic or not args.run[0].exists():
        if not args.synthetic:
            print(f"note: no run at {args.run}; fitting the noise model to a synthetic run instead "
                  "(pass --run DIR for a real one)")
        world = NoiseModel.synthetic(args.seed, variants=("bf16", "nf4"), cases=28, repeats=2, run_shift_sd=0.0,
                                     jitter_sd=0.02, outlier_rate=0.03, meta=RunMeta(baseline_variant="bf16"))
        with tempfile.TemporaryDirectory() as tmp:
            records = world.sample(np.random.default_rng(args.seed), run_id="synthetic")
            out = write_run_dir(Path(tmp) / "run", world.meta, "synthetic", records, world.planned_keys())
            run = load_run(out)
        source = "synthetic run (28 cases x 2 variants x 2 repeats, 2% jitter, 3% outliers of +10…50%)"
        # Simulated images are "identical" across repeats by construction; assume some noise anyway.
        frac = 0.05 if args.quality_noise is None else args.quality_noise
        how = f"{frac:g} x between-case sd ({'assumed' if args.quality_noise is None else 'given'})"
    else:
        runs = [load_run(r) for r in args.run]
        run = runs[0]
        source = (f"{args.run[0]} (run {run.run_id}, {run.hardware_class})" if len(runs) == 1 else
                  f"{len(runs)} runs: {', '.join(str(r) for r in args.run)} ({run.hardware_class})")
        if args.quality_noise is not None:
            frac, how = args.quality_noise, f"{args.quality_noise:g} x between-case sd (given)"
        elif deterministic_outputs(run):
            frac, how = 0.0, "0 (every case's repeats gave byte-identical images: deterministic)"
        else:
            frac, how = 0.05, "0.05 x between-case sd (assumed: repeats gave different images)"
    if len(runs) > 1:
        model = NoiseModel.fit_runs(runs, quality_noise_frac=frac)
    else:
        model = NoiseModel.fit(run, run_shift_sd=args.run_shift_sd, quality_noise_frac=frac)
    return model, source, how, runs


def real_reruns(runs: list[RunData], history: int, gates: Any, settings: GateSettings) -> str | None:
    """No simulation: with several real runs, gate each run against a baseline promoted from
    `history` of the others (every combination), and count how many of these honest re-runs
    the gate flags."""
    if len(runs) < history + 1:
        return None
    flagged, total, checks = 0, 0, Counter()
    for chosen in itertools.combinations(range(len(runs)), history):
        base = runs[chosen[0]]
        if history > 1:
            base = replace(base, run_to_run=run_to_run_section([runs[i] for i in chosen]))
        for j in (j for j in range(len(runs)) if j not in chosen):
            r = compare(base, runs[j], gates, settings=settings)
            total += 1
            if r.exit_code != 0:
                flagged += 1
                checks.update(f"{c.name}/{c.variant}" for c in r.failures)
    line = (f"real re-runs         {flagged}/{total} flagged (each of the {len(runs)} runs gated against baselines "
            f"promoted from {history} of the others)")
    if checks:
        line += "\n  flagged by: " + ", ".join(f"{k} x{n}" for k, n in checks.most_common(8))
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, action="append", default=None,
                   help=f"run directory to fit (default {DEFAULT_RUN.relative_to(ROOT)}); repeat it for repeated runs of one "
                        "suite, whose differences then measure the run-to-run shifts")
    p.add_argument("--history", type=int, default=1,
                   help="runs each simulated baseline is promoted from (>= 3: the gate tests latency between runs)")
    p.add_argument("--synthetic", action="store_true", help="fit a synthetic run instead of --run")
    p.add_argument("--sims", type=int, default=300, help="simulated baseline/re-run pairs (>= 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-shift-sd", type=float, default=0.01, help="sd of the whole-run log shift (default 0.01)")
    p.add_argument("--quality-noise", type=float, default=None,
                   help="re-run sd of a case's score, as a fraction of the score's spread between cases (default: 0 if "
                        "the run's repeats gave byte-identical images, else 0.05)")
    p.add_argument("--latency-threshold", default="+5%", help="threshold of latency_p50_s and latency_p95_s (default +5%%)")
    p.add_argument("--plant", type=float, default=1.10, help="true slowdown factor to catch (default 1.10)")
    p.add_argument("--gates", type=Path, default=None, help="a TOML file whose [gates] table to use")
    p.add_argument("--latency-null", choices=("threshold", "half-threshold", "no-change"), default="threshold",
                   help="the latency test's null hypothesis, as `qie-bench gate --latency-null`")
    p.add_argument("--max-fp", type=float, default=0.01)
    p.add_argument("--min-catch", type=float, default=0.95)
    args = p.parse_args(argv)
    args.run = args.run or [DEFAULT_RUN]
    if args.sims < 200:
        p.error("--sims must be at least 200")

    try:
        model, source, quality_noise, real_runs = load_model(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.gates is not None:
        raw_gates = tomllib.loads(args.gates.read_text()).get("gates", {})
        gates_from = str(args.gates)
    elif model.meta.gates:
        raw_gates, gates_from = dict(model.meta.gates), "the run's [gates]"
    else:
        raw_gates, gates_from = default_gates(model, args.latency_threshold), "defaults for what the run measured"
    gates = parse_gates(raw_gates, where="gates")
    planned = model.planned_keys()
    residuals = model.latency_residuals
    s = GateSettings(latency_null=args.latency_null)

    print("qie-bench gate: false-positive / catch-rate benchmark")
    print(f"  noise model fitted to   {source}")
    print(f"  variants x cases x reps {len(model.variants)} x {len(model.cases)} x {model.repeats}  ({len(planned)} items)")
    print(f"  repeat jitter (fitted)  sd {np.std(residuals) * 100:.2f}% of log latency, "
          f"{np.mean(np.abs(residuals) > 3 * 1.4826 * np.median(np.abs(residuals))) * 100:.1f}% beyond 3 robust sd, "
          f"max {np.exp(residuals.max()) * 100 - 100:+.1f}%")
    if model.fitted_from > 1:
        print(f"  run-to-run shift        sd {model.run_shift_sd * 100:.2f}% common to a run, "
              f"{model.variant_shift_sd * 100:.2f}% per variant (worker process), measured from {model.fitted_from} runs")
    else:
        print(f"  run-to-run shift        sd {args.run_shift_sd * 100:.2f}% (assumed)")
    print(f"  baseline promoted from  {args.history} run(s)"
          + (" — latency tested between runs" if args.history >= s.min_history_runs else ""))
    print(f"  quality re-run noise    {quality_noise}")
    print(f"  gates ({gates_from}):  " + ", ".join(f"{k}={v}" for k, v in raw_gates.items()))
    latency_rule = (f"between runs, Student's t one-sided p < {s.latency_alpha:g}" if args.history >= s.min_history_runs
                    else f"van Elteren one-sided p < {s.latency_alpha:g} against a shift by {s.latency_null}")
    print(f"  statistics              latency: {latency_rule}; quality: "
          f"{s.quality_bootstrap} bootstrap resamples, {s.confidence:.0%} interval, widespread > {s.worse_case_share:.0%} of cases")
    print(f"  simulations             {args.sims} (seed {args.seed}); planted slowdown x{args.plant:g} on every variant")

    t0 = time.perf_counter()
    false_positives = 0
    fp_checks: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    collateral: Counter[str] = Counter()
    for i in range(args.sims):
        rng = np.random.default_rng([args.seed, i])
        plant = {v: args.plant for v in model.variants}
        base = run_data(model.meta, f"b{i}", model.sample(rng, run_id=f"b{i}"), planned, "baseline", validate=i == 0)
        if args.history > 1:
            more = [run_data(model.meta, f"b{i}h{h}", model.sample(rng, run_id=f"b{i}h{h}"), planned, "history",
                             validate=False) for h in range(1, args.history)]
            base = replace(base, run_to_run=run_to_run_section([base, *more]))
        null = run_data(model.meta, f"n{i}", model.sample(rng, run_id=f"n{i}"), planned, "null", validate=i == 0)
        slow = run_data(model.meta, f"s{i}", model.sample(rng, run_id=f"s{i}", latency_factor=plant), planned, "slow",
                        validate=i == 0)
        r = compare(base, null, gates, settings=s)
        if r.exit_code != 0:
            false_positives += 1
            fp_checks.update(f"{c.name}/{c.variant}" for c in r.failures)
        r = compare(base, slow, gates, settings=s)
        for v in model.variants:
            if any(c.variant == v and c.failed and metric_family(c.name) is Family.LATENCY for c in r.checks):
                caught[v] += 1
        collateral.update(f"{c.name}/{c.variant}" for c in r.failures if metric_family(c.name) is not Family.LATENCY)
    elapsed = time.perf_counter() - t0

    real = real_reruns(real_runs, args.history, gates, s)

    fp_rate = false_positives / args.sims
    rates = {v: caught[v] / args.sims for v in model.variants}
    ok_fp, ok_catch = fp_rate < args.max_fp, min(rates.values()) >= args.min_catch
    print()
    print(f"false-positive rate  {fp_rate * 100:5.2f}%  ({false_positives}/{args.sims} null re-runs flagged)"
          f"   target < {args.max_fp * 100:g}%   {'OK' if ok_fp else 'MISSED'}")
    if fp_checks:
        print("  flagged by: " + ", ".join(f"{k} x{n}" for k, n in fp_checks.most_common(8)))
    for v, rate in rates.items():
        print(f"catch rate {v:>9} {rate * 100:5.1f}%  ({caught[v]}/{args.sims} x{args.plant:g} slowdowns flagged)"
              f"   target >= {args.min_catch * 100:g}%   {'OK' if rate >= args.min_catch else 'MISSED'}")
    if collateral:
        print("  non-latency failures in slowed runs: " + ", ".join(f"{k} x{n}" for k, n in collateral.most_common(5)))
    jitter = float(np.std(residuals))
    if not ok_catch and jitter > math.log(args.plant):
        print(f"hint: the fitted repeat-to-repeat noise ({jitter * 100:.0f}%) is larger than the change to catch "
              f"({(args.plant - 1) * 100:.0f}%): measure on an idle machine, add warm-up runs, or use more repeats")
    if real:
        print(real)
    print(f"({elapsed:.1f} s, {elapsed / args.sims / 2 * 1000:.0f} ms per gate comparison incl. simulation)")
    return 0 if ok_fp and ok_catch else 1


if __name__ == "__main__":
    sys.exit(main())

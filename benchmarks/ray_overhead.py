"""Scheduling overhead of `--executor ray` against the local executor (a benchmark, not a test).

Runs one suite several times in one call, with the local executor and on a Ray cluster (a local
one unless --address), in the order --order gives (default local,ray; "local,ray,local" puts the
Ray run between two local ones, so a drift of the machine over the call cannot pass for a
difference of the executors), each into its own run directory, and prints for each:

  wall_s          the run, end to end (Ray: including starting or joining the cluster)
  units_wall_s    the sum of the units' own wall times (each worker process from start to
                  exit, as the executor measured it: logs/units.json)
  overhead_s      wall_s - units_wall_s: what the driver and the executor add. Exact when the
                  units run one after another (one GPU, or --slots 1 on the CPU, the default
                  there); with parallel units the sum exceeds the wall time and it is negative.
and per variant the latency P50/P95 and the peak memory (VRAM per process on a GPU, RSS on the
CPU), so the two executors' measurements can be compared. `compare` then puts each case's median
latency side by side: the largest change between a Ray run and a local run, beside the largest
between two local runs (the machine's own run-to-run noise, when --order has two local runs or
--with-run adds an earlier local run of the same suite).

Usage:
  python benchmarks/ray_overhead.py suites/smoke.toml --variants fp32 --cases rm-watermark-bottle,txt-price-mug
  python benchmarks/ray_overhead.py suites/gpu-random-512.toml           # one GPU: both runs, one call
  python benchmarks/ray_overhead.py suites/gpu-random-512.toml --variants bf16 --order ray,local \
      --with-run runs/gpu-random-512                                       # + an earlier local run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the qie_bench beside this script, whatever else is installed


def _one(suite: Path, out: Path, executor: Any, args: argparse.Namespace) -> dict[str, Any]:
    import qie_bench

    t0 = time.perf_counter()
    qie_bench.run(suite, out, variants=args.variants.split(",") if args.variants else None,
                  cases=args.cases.split(",") if args.cases else None, executor=executor)
    return _figures(out, time.perf_counter() - t0)


def _figures(out: Path, wall: float | None) -> dict[str, Any]:
    """A run directory's figures; `wall` None for an earlier run (its overhead is not known here)."""
    from qie_bench.api import RunResult

    result = RunResult.open(out)
    units = json.loads((out / "logs" / "units.json").read_text())["units"]
    unit_wall = sum(u["wall_s"] for u in units if u["wall_s"] is not None)
    gpu = any(r.get("gpu_uuid") for r in (json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()))
    peak_key = "peak_vram_process_bytes" if gpu else "rss_peak_bytes"
    variants = {}
    for name, v in result.summary.variants.items():
        peak = v.get(peak_key) if v.get(peak_key) is not None else (v.get("peak_vram_bytes") if gpu else None)
        variants[name] = {"ok": v.status_counts["OK"], "planned": v.planned, "latency_p50_s": v.latency_p50_s,
                          "latency_p95_s": v.latency_p95_s, peak_key if v.get(peak_key) is not None or not gpu
                          else "peak_vram_bytes": peak}
    cases: dict[str, dict[str, list[float]]] = {}
    for r in (json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()):
        if r.get("status") == "OK" and r.get("latency_s") is not None:
            cases.setdefault(r["variant"], {}).setdefault(r["case_id"], []).append(r["latency_s"])
    return {"out": str(out), "wall_s": None if wall is None else round(wall, 3), "units": len(units),
            "units_wall_s": round(unit_wall, 3), "overhead_s": None if wall is None else round(wall - unit_wall, 3),
            "case_latency_median_s": {v: {c: statistics.median(x) for c, x in cs.items()} for v, cs in cases.items()}, "hosts": sorted({u["host"] for u in units if u["host"]}),
            "gpus": sorted({u["gpu_uuid"] for u in units if u["gpu_uuid"]}), "variants": variants}


def compare(legs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each case's median latency per leg, and the largest relative change between a Ray leg and a
    local leg beside the largest between two local legs (the run-to-run noise of the machine)."""
    medians = {leg: f["case_latency_median_s"] for leg, f in legs.items()}
    out: dict[str, Any] = {"per_case": {}, "ray_vs_local_max_abs_rel": None, "local_vs_local_max_abs_rel": None,
                           "variants": {leg: f["variants"] for leg, f in legs.items()}}
    ray_local, local_local = [], []
    names = list(medians)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            kinds = {a.split("-")[0], b.split("-")[0]}
            for variant, cases in medians[a].items():
                for case, x in cases.items():
                    y = medians[b].get(variant, {}).get(case)
                    if y is None:
                        continue
                    rel = y / x - 1
                    out["per_case"].setdefault(f"{variant}/{case}", {})[f"{b} vs {a}"] = round(rel, 5)
                    if kinds == {"local", "ray"}:
                        ray_local.append(abs(rel))
                    elif kinds == {"local"}:
                        local_local.append(abs(rel))
    out["ray_vs_local_max_abs_rel"] = max(ray_local) if ray_local else None
    out["local_vs_local_max_abs_rel"] = max(local_local) if local_local else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--variants", default=None, help="comma-separated subset of the suite's variants")
    parser.add_argument("--cases", default=None, help="comma-separated case ids or categories")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: a local one)")
    parser.add_argument("--slots", type=int, default=1,
                        help="CPU suites on a local cluster: units at once (default 1: units one after another)")
    parser.add_argument("--order", default="local,ray", help="the runs, in order: local and ray, each any number of times")
    parser.add_argument("--with-run", type=Path, action="append", default=[],
                        help="an earlier local run directory of the same suite, compared as one more local leg")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    from qie_bench.runner.ray_executor import RayExecutor

    order = [x.strip() for x in args.order.split(",") if x.strip()]
    if not order or set(order) - {"local", "ray"}:
        parser.error("--order: a comma-separated list of 'local' and 'ray'")
    work = args.out or Path(tempfile.mkdtemp(prefix="qie-ray-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results: dict[str, Any] = {"suite": str(args.suite), "order": order}
    legs: dict[str, dict[str, Any]] = {}
    for i, earlier in enumerate(args.with_run):
        legs[f"local-earlier{i + 1}"] = _figures(earlier, None)
    ray = None
    for i, kind in enumerate(order, 1):
        if kind == "ray" and ray is None:
            ray = RayExecutor(args.address, num_cpus=None if args.address else args.slots, cpus_per_unit=1)
        legs[f"{kind}-{i}"] = _one(args.suite, work / f"{stamp}-{kind}-{i}", ray if kind == "ray" else "local", args)
    results["legs"] = legs
    overhead = {k: v["overhead_s"] for k, v in legs.items() if v["overhead_s"] is not None}
    ray_o = [v for k, v in overhead.items() if k.startswith("ray")]
    local_o = [v for k, v in overhead.items() if k.startswith("local")]
    if ray_o and local_o:
        results["ray_minus_local_overhead_s"] = round(statistics.mean(ray_o) - statistics.mean(local_o), 3)
    results["compare"] = compare(legs)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

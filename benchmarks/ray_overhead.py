"""Scheduling overhead of `--executor ray` against the local executor (a benchmark, not a test).

Runs one suite twice in one call, with the local executor and then on a Ray cluster (a local
one unless --address), each into its own run directory, and prints for each:

  wall_s          the run, end to end (Ray: including starting or joining the cluster)
  units_wall_s    the sum of the units' own wall times (each worker process from start to
                  exit, as the executor measured it: logs/units.json)
  overhead_s      wall_s - units_wall_s: what the driver and the executor add. Exact when the
                  units run one after another (one GPU, or --slots 1 on the CPU, the default
                  there); with parallel units the sum exceeds the wall time and it is negative.
and per variant the latency P50/P95 and the peak memory (VRAM per process on a GPU, RSS on the
CPU), so the two executors' measurements can be compared.

Usage:
  python benchmarks/ray_overhead.py suites/smoke.toml --variants fp32 --cases rm-watermark-bottle,txt-price-mug
  python benchmarks/ray_overhead.py suites/gpu-random-512.toml           # one GPU: both runs, one call
"""

from __future__ import annotations

import argparse
import json
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
    result = qie_bench.run(suite, out, variants=args.variants.split(",") if args.variants else None,
                           cases=args.cases.split(",") if args.cases else None, executor=executor)
    wall = time.perf_counter() - t0
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
    return {"out": str(out), "wall_s": round(wall, 3), "units": len(units), "units_wall_s": round(unit_wall, 3),
            "overhead_s": round(wall - unit_wall, 3), "hosts": sorted({u["host"] for u in units if u["host"]}),
            "gpus": sorted({u["gpu_uuid"] for u in units if u["gpu_uuid"]}), "variants": variants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--variants", default=None, help="comma-separated subset of the suite's variants")
    parser.add_argument("--cases", default=None, help="comma-separated case ids or categories")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: a local one)")
    parser.add_argument("--slots", type=int, default=1,
                        help="CPU suites on a local cluster: units at once (default 1: units one after another)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    from qie_bench.runner.ray_executor import RayExecutor

    work = args.out or Path(tempfile.mkdtemp(prefix="qie-ray-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = {"suite": str(args.suite)}
    results["local"] = _one(args.suite, work / f"{stamp}-local", "local", args)
    ray = RayExecutor(args.address, num_cpus=None if args.address else args.slots, cpus_per_unit=1)
    results["ray"] = _one(args.suite, work / f"{stamp}-ray", ray, args)
    results["ray_minus_local_overhead_s"] = round(results["ray"]["overhead_s"] - results["local"]["overhead_s"], 3)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

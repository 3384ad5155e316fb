"""Wall time of the smoke suite on this machine (a benchmark, not a test).

Runs `qie-bench run suites/smoke.toml` three ways and prints the figures the issues set targets
for:
  1. the baseline variant alone over the whole case set          (target <= 120 s, 2-core CPU)
  2. the same with the cheapest metric only, to isolate scoring  (metrics add <= 1/3)
  3. all variant families, the distilled student built if not cached (target <= 5 min)

Usage: python benchmarks/smoke_wall_time.py [--skip-full] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(suite: Path, out: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qie_bench.cli", "run", str(suite), "--out", str(out), "--no-progress", *extra],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true", help="skip the all-variants run")
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="qie-smoke-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    smoke = ROOT / "suites" / "smoke.toml"
    cheap = work / "smoke-psnr-only.toml"
    text = smoke.read_text().replace("cases/edit-v2", str(ROOT / "suites" / "cases" / "edit-v2"))
    cheap.write_text(text.replace('[metrics]\nweights = "random"', '[metrics]\nnames = ["psnr"]\nweights = "random"'))
    results = {}
    results["baseline_all_metrics_s"] = run(smoke, work / "baseline", "--variants", "fp32")
    results["baseline_psnr_only_s"] = run(cheap, work / "baseline-psnr", "--variants", "fp32")
    summary = json.loads((work / "baseline" / "summary.json").read_text())
    fp32 = summary["variants"]["fp32"]
    results["baseline_items"] = fp32["records"]
    results["baseline_latency_p50_s"] = fp32["latency_p50_s"]
    results["metric_overhead_fraction"] = results["baseline_all_metrics_s"] / results["baseline_psnr_only_s"] - 1
    if not args.skip_full:
        results["all_variants_s"] = run(smoke, work / "all")
        full = json.loads((work / "all" / "summary.json").read_text())
        results["all_variants_build_s"] = {v: s["build_s"] for v, s in full["variants"].items()}
        results["all_variants_status"] = {v: s["status_counts"]["OK"] for v, s in full["variants"].items()}
    print(json.dumps(results, indent=2))
    ok = results["baseline_all_metrics_s"] <= 120 and results["metric_overhead_fraction"] <= 1 / 3
    if "all_variants_s" in results:
        ok = ok and results["all_variants_s"] <= 300
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Which variants fit which VRAM budget, and with which offload mode (a GPU benchmark, not a test).

For each variant and each budget (largest first) it finds the lightest offload mode that runs:
`none`, then `model` (whole components move in when used), then `group` (transformer blocks
and text-encoder layers stream in one at a time). Each attempt is one ordinary
`qie-bench run SUITE --variants V --vram-budget B --offload M` into OUT/<budget>-<mode>-<variant>,
so every answer is a run directory that `qie-bench report` reads.

Fitting is monotone in the budget, so attempts the measured ones already answer are not made:
- a mode that ran out of memory at a larger budget is not tried at a smaller one;
- a mode that ran at a smaller budget (in this --out, e.g. from an earlier call) runs at a
  larger one, with the same streaming and so about the same latency;
- `none` is not tried where the variant's own weights (from an earlier attempt's build record)
  exceed the budget, nor `model` where its largest component does.
Skipped attempts are listed as implied, with the reason; nothing is reported as measured that
was not.

Finished attempts are kept: run it again with the same --out to go on after a time limit
(`--deadline-s` stops starting new attempts, for the lent GPU's 10-minute commands).

Usage: python benchmarks/vram_budgets.py SUITE --variants a,b --budgets 24GiB,16GiB,12GiB,8GiB
           [--cases ID] [--modes none,model,group] --out DIR [--deadline-s 540]
Then:  qie-bench report DIR/* --out reports/<name>.html
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qie_bench.results import read_records  # noqa: E402
from qie_bench.suite import parse_bytes  # noqa: E402

MODES = ("none", "model", "group")


def attempt_dir(out: Path, budget: str, mode: str, variant: str) -> Path:
    return out / f"{budget.lower()}-{mode}-{variant}"


def outcome(run_dir: Path) -> str | None:
    """'OK', 'OOM', 'ERROR', ... of a finished attempt (its worst record), or None if unfinished."""
    summary = run_dir / "summary.json"
    if not summary.exists() or not json.loads(summary.read_text()).get("complete"):
        return None
    statuses = {r["status"] for r in read_records(run_dir / "cases.jsonl")}
    for status in ("ERROR", "TIMEOUT", "OOM"):
        if status in statuses:
            return status
    return "OK" if statuses == {"OK"} else None


def component_bytes(out: Path, variant: str) -> dict[str, int] | None:
    """Weights per component from any earlier attempt's build record of this variant."""
    for build in sorted(out.glob(f"*-{variant}/variants/{variant}.build.json")):
        info = json.loads(build.read_text())
        if info.get("components"):
            return {name: c["weights_bytes"] for name, c in info["components"].items()}
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--variants", required=True, help="comma-separated variant names of the suite")
    parser.add_argument("--budgets", default="24GiB,16GiB,12GiB,8GiB")
    parser.add_argument("--cases", default=None, help="comma-separated case ids (default: the suite's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modes", default=",".join(MODES),
                        help="offload modes to try, lightest first (leave out one a floor already rules out)")
    parser.add_argument("--deadline-s", type=float, default=None, help="start no attempt after this many seconds")
    args = parser.parse_args()
    budgets = sorted(args.budgets.split(","), key=parse_bytes, reverse=True)
    modes = [m for m in MODES if m in args.modes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    table: dict[tuple[str, str], str] = {}
    for variant in args.variants.split(","):
        failed: set[str] = set()  # modes that ran out of memory at a larger budget
        for budget in budgets:
            cap = parse_bytes(budget)
            answer = None
            for mode in modes:
                if mode in failed:
                    continue
                sizes = component_bytes(args.out, variant)
                if sizes and mode == "none" and sum(sizes.values()) > cap:
                    table[(variant, f"{budget}/none")] = f"implied OOM: weights {sum(sizes.values()) / 2**30:.1f} GiB"
                    failed.add(mode)
                    continue
                if sizes and mode == "model" and max(sizes.values()) > cap:
                    table[(variant, f"{budget}/model")] = (
                        f"implied OOM: largest component {max(sizes.values()) / 2**30:.1f} GiB")
                    failed.add(mode)
                    continue
                # attempts on disk (this call's or an earlier one's) under a smaller budget
                fit_below = next((d.name.split("-")[0] for d in args.out.glob(f"*-{mode}-{variant}")
                                  if parse_bytes(d.name.split("-")[0]) < cap and outcome(d) == "OK"), None)
                if fit_below is not None:
                    table[(variant, f"{budget}/{mode}")] = f"implied OK: ran at {fit_below}"
                    answer = mode
                    break
                run_dir = attempt_dir(args.out, budget, mode, variant)
                status = outcome(run_dir)
                if status is None:
                    if args.deadline_s is not None and time.monotonic() - t0 > args.deadline_s:
                        print(f"deadline reached; run again with --out {args.out} to go on", flush=True)
                        return 3
                    cmd = [sys.executable, "-m", "qie_bench.cli", "run", str(args.suite), "--variants", variant,
                           "--without-baseline", "--vram-budget", budget, "--offload", mode, "--out", str(run_dir),
                           "--no-progress"]
                    if args.cases:
                        cmd += ["--cases", args.cases]
                    if run_dir.exists():
                        cmd.append("--resume")
                    started = time.monotonic()
                    subprocess.run(cmd, check=False)
                    status = outcome(run_dir)
                    print(f"{variant} @ {budget} offload={mode}: {status} ({time.monotonic() - started:.0f} s)", flush=True)
                table[(variant, f"{budget}/{mode}")] = status or "unfinished"
                if status == "OK":
                    answer = mode
                    break
                if status == "OOM":
                    failed.add(mode)
                else:  # an error is not an answer about memory: say so and try the next mode
                    continue
            table[(variant, budget)] = f"fits with offload={answer}" if answer else "does not fit"
    print(json.dumps({f"{v} | {k}": s for (v, k), s in table.items()}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

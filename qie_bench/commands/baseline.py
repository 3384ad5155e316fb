"""`qie-bench baseline promote RUN_DIR --to FILE`: make a run the reference the gate compares with."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline", help="manage baseline files (promote a run)",
                       description="Baselines are promoted runs, kept in the repository under baselines/<suite>/<hardware>.json.")
    actions = p.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    pr = actions.add_parser("promote", help="turn a finished run into a baseline file",
                            description="Write a baseline (fingerprints, gates, per-variant summary and every per-case/per-repeat "
                                        "record) from a run directory. An existing baseline is only replaced with --force, and "
                                        "the replaced file is kept beside the new one and listed in its `previous`.")
    pr.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                    help="run directory written by `qie-bench run`; further runs of the same suite on the same machine "
                         "make the gate test latency against the scatter between runs (3 runs or more), which repeats "
                         "within one run cannot show. The first run's records are the baseline's")
    pr.add_argument("--to", type=Path, default=None, metavar="FILE", help="baseline file (default: baselines/<suite>/<hardware class>.json)")
    pr.add_argument("--force", action="store_true", help="replace an existing baseline (the old one is kept as a dated copy)")
    pr.add_argument("--allow-incomplete", action="store_true",
                    help="promote a run with missing items or no summary.json (recorded in the baseline)")
    pr.set_defaults(handler=promote_command)


def promote_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..gate.baseline import promote

    console = Console(stderr=True)
    done = promote(args.run_dirs[0], args.to, force=args.force, allow_incomplete=args.allow_incomplete,
                   more_runs=args.run_dirs[1:])
    for warning in done.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    b = done.baseline
    console.print(f"baseline {done.path}: run {b['source']['run_id']}, {len(b['variants'])} variant(s), "
                  f"{len(b['records'])} records, {b['fingerprint']['environment']['hardware_class']}", highlight=False, soft_wrap=True)
    if b.get("run_to_run"):
        console.print(f"run-to-run noise from {len(b['run_to_run']['runs'])} runs: the gate tests latency between runs",
                      highlight=False, soft_wrap=True)
    if done.replaced_copy is not None:
        console.print(f"the replaced baseline is kept as {done.replaced_copy} (listed in `previous`)", highlight=False, soft_wrap=True)
    return 0

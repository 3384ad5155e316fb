"""`qie-bench gate RUN_DIR --baseline FILE`: compare a run with a baseline, for CI.

Exit codes: 0 pass, 1 regression (including anything not measured), 2 not comparable or invalid
input (corrupted, truncated or schema-mismatched files, bad thresholds). Rules: docs/gate.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="compare a run with a baseline; exit 0 pass, 1 regression, 2 not comparable",
                       description="Compare a run directory with a promoted baseline using the suite's [gates] thresholds. "
                                   "Exit 0 pass, 1 regression, 2 not comparable or invalid input.")
    p.add_argument("run_dir", type=Path, help="run directory written by `qie-bench run`")
    p.add_argument("--baseline", type=Path, required=True, metavar="FILE", help="baseline file, e.g. baselines/<suite>/<hardware>.json")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE", help="write a JUnit XML report here")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="write a Markdown report here (for $GITHUB_STEP_SUMMARY)")
    p.add_argument("--latency-null", choices=("threshold", "half-threshold", "no-change"), default="threshold",
                   help="what the latency rank test must reject: a slowdown by the whole threshold (default: no false "
                        "alarms from run-to-run drift), by half of it, or no change (asv's rule); the statistic must be "
                        "beyond the threshold in every case. Measured trade-offs in docs/gate.md")
    p.set_defaults(handler=gate_command)


def gate_command(args: argparse.Namespace) -> int:
    from ..errors import UserInputError
    from ..gate.baseline import load_baseline
    from ..gate.compare import compare
    from ..gate.junit import write_junit, write_junit_error
    from ..gate.markdown import write_markdown, write_markdown_error
    from ..gate.rundata import load_run
    from ..gate.stats import GateSettings

    try:
        baseline = load_baseline(args.baseline)
        run = load_run(args.run_dir)
        result = compare(baseline, run, settings=GateSettings(latency_null=args.latency_null))
    except UserInputError as err:
        # CI still gets a report that says why the gate could not run; the CLI prints the line.
        message = str(err)
        _write_reports(args, lambda p: write_junit_error(message, p), lambda p: write_markdown_error(message, p))
        raise
    print_result(result)
    _write_reports(args, lambda p: write_junit(result, p), lambda p: write_markdown(result, p))
    if not result.comparable:
        import sys

        print(f"qie-bench: error: {args.run_dir} is not comparable with {args.baseline}: {result.not_comparable_line()}",
              file=sys.stderr)
    return result.exit_code


def _write_reports(args: argparse.Namespace, junit: Any, markdown: Any) -> None:
    from ..errors import UserInputError

    for path, writer in ((args.junit, junit), (args.markdown, markdown)):
        if path is None:
            continue
        try:
            writer(path)
        except OSError as err:
            raise UserInputError(str(path), f"cannot write the report ({err.strerror})", "choose a writable path") from None


def print_result(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..gate.compare import Verdict

    console = Console(width=None if Console().is_terminal else 200)
    style = {Verdict.PASS: "green", Verdict.FAIL: "bold red", Verdict.UNTESTABLE: "bold magenta", Verdict.NOT_COMPARABLE: "bold red",
             Verdict.SKIP: "dim", Verdict.NEW: "cyan"}
    table = Table(title=f"qie-bench gate — {result.run.label} vs {result.baseline.label}", show_lines=False)
    for col in ("metric", "variant", "baseline", "current", "change", "threshold", "verdict", "why"):
        table.add_column(col, justify="right" if col in ("baseline", "current", "change", "threshold") else "left",
                         overflow="fold", ratio=4 if col == "why" else None)
    for c in result.checks:
        table.add_row(c.name, c.variant or "—", c.baseline, c.current, c.change, c.threshold,
                      f"[{style[c.verdict]}]{c.verdict.value}[/]", c.why)
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    colour = "green" if result.exit_code == 0 else "red"
    console.print(f"[bold {colour}]gate: {result.headline}[/] (exit {result.exit_code})", highlight=False)

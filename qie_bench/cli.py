"""The `qie-bench` command. Each subcommand lives in its own module with `register(subparsers)`.

Exit codes: 0 success (or gate pass), 1 gate regression, 2 bad input / not comparable.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserInputError

# Modules that each add one subcommand; adding a command means adding its module here.
COMMAND_MODULES = (
    "qie_bench.commands.run",
    "qie_bench.commands.cases",
    "qie_bench.commands.env",
    "qie_bench.metrics.cli",
    "qie_bench.commands.score_run",
    "qie_bench.commands.baseline",
    "qie_bench.commands.gate",
    "qie_bench.commands.report",
    "qie_bench.commands.signoff",
    "qie_bench.commands.distill",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qie-bench",
        description="Benchmark and gate compressed Qwen-Image-Edit-2509 variants: latency, VRAM, OOM rate, quality.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserInputError as err:
        print(f"qie-bench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("qie-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

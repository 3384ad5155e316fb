"""`qie-bench run SUITE`: every case x variant x repeat, one child process per variant."""

from __future__ import annotations

import argparse
import errno
import re
import time
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a suite and write a run directory",
                       description="Run every case of a suite on every variant and write cases.jsonl, summary.json and images/.")
    p.add_argument("suite", type=Path, help="suite file, e.g. suites/smoke.toml")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<UTC time>-<suite name>/)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run in --out, keeping its records")
    p.add_argument("--variants", default=None, help="comma-separated subset of the suite's variants")
    p.add_argument("--without-baseline", action="store_true",
                   help="with --variants: do not add the baseline variant (no fidelity metrics)")
    p.add_argument("--cases", default=None, metavar="IDS",
                   help="comma-separated case ids or categories (overrides cases.select)")
    p.add_argument("--vram-budget", default=None, metavar="SIZE",
                   help="emulate a smaller GPU, e.g. 8GiB (overrides measurement.memory_budget)")
    p.add_argument("--offload", choices=("none", "model", "sequential", "group"), default=None,
                   help="CPU offload mode (overrides measurement.offload)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="output size, e.g. 512x512 (overrides generation.width/height; the same suite at another resolution)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (plain log lines)")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..errors import UserInputError, did_you_mean
    from ..runner.orchestrator import Orchestrator, default_out_dir, make_plan, prepare_out_dir
    from pydantic import ValidationError

    from ..suite import GenerationConfig, load_suite, parse_bytes

    console = Console(stderr=True)
    suite = load_suite(args.suite)
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        names = [v.name for v in suite.variants]
        for w in wanted:
            if w not in names:
                raise UserInputError("--variants", f"no variant named '{w}' in {args.suite}",
                                     did_you_mean(w, names) or f"variants are: {', '.join(names)}")
        if suite.baseline_variant and suite.baseline_variant not in wanted:
            if args.without_baseline:
                suite = suite.model_copy(update={"baseline_variant": None})
            else:
                wanted.insert(0, suite.baseline_variant)  # fidelity metrics need the baseline's outputs
        suite = suite.model_copy(update={"variants": tuple(v for v in suite.variants if v.name in wanted)})
    overrides = {}
    if args.vram_budget is not None:
        try:
            overrides["memory_budget"] = parse_bytes(args.vram_budget)
        except ValueError as err:
            raise UserInputError("--vram-budget", str(err)) from None
    if args.offload is not None:
        overrides["offload"] = args.offload
    size_overrides = {}
    if args.size is not None:
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", args.size)
        if not m:
            raise UserInputError("--size", f"'{args.size}' is not WIDTHxHEIGHT in pixels", "e.g. --size 512x512")
        size_overrides = {"width": int(m.group(1)), "height": int(m.group(2))}
        try:  # the suite's own rules for width/height (model_copy below would not check them)
            GenerationConfig.model_validate({**suite.generation.model_dump(), **size_overrides})
        except ValidationError as err:
            problem = err.errors()[0]
            raise UserInputError("--size", f"{problem['loc'][0]} {problem['msg']}", "e.g. --size 512x512") from None
    if args.cases:
        selected = tuple(c.strip() for c in args.cases.split(",") if c.strip())
        suite = suite.model_copy(update={"cases": suite.cases.model_copy(update={"select": selected})})
    if overrides or size_overrides:
        # Recorded in the suite fingerprint: a run under a budget or at another size is not
        # comparable to one without.
        suite = suite.model_copy(update={"measurement": suite.measurement.model_copy(update=overrides),
                                         "generation": suite.generation.model_copy(update=size_overrides),
                                         "cli_overrides": {"measurement": overrides, "generation": size_overrides}})
    if args.resume and args.out is None:
        raise UserInputError("--resume", "needs --out DIR (the run directory to finish)")
    out = args.out or default_out_dir(suite)
    plan = make_plan(suite)
    prepare_out_dir(out, args.resume)  # refuse a bad --out before printing anything
    console.print(f"[bold]qie-bench run[/] {suite.name}: {len(plan.case_set.cases)} cases x {len(plan.variants)} variants "
                  f"x {suite.measurement.repeats} repeats = {plan.total} items -> {out}")
    if suite.model.source != "pretrained":
        console.print(f"[yellow]model weights are RANDOM ({suite.model.source}): memory and speed are real, quality is not[/]")
    t0 = time.perf_counter()
    _terminate_on_sigterm()
    orchestrator = Orchestrator(plan, out, resume=args.resume, progress=_progress(console, plan, args.no_progress))
    try:
        with _live(orchestrator.progress):
            summary = orchestrator.run()
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        # The disk filled while writing run.json, a build file or summary.json: records already
        # in cases.jsonl are whole (each is fsynced), and --resume finishes the rest.
        raise UserInputError(str(out), f"cannot write results ({err.strerror})", "free space, then finish the run with --resume") from None
    except (KeyboardInterrupt, _Terminated) as stop:
        console.print(f"[red]interrupted[/]: records so far are kept in {out}; finish with "
                      f"qie-bench run {args.suite} --out {out} --resume")
        return 143 if isinstance(stop, _Terminated) else 130
    wall = time.perf_counter() - t0
    print_summary(console, summary)
    console.print(f"wall time {wall:.1f} s; results in {out}")
    return 0


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so `finally` blocks stop the worker and close files."""


def _terminate_on_sigterm() -> None:
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)


class _live:
    """Starts/stops the rich progress display held by the Progress callbacks, if any."""

    def __init__(self, progress: Any) -> None:
        self.bar = getattr(progress, "bar", None)

    def __enter__(self) -> None:
        if self.bar is not None:
            self.bar.start()

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _progress(console: Any, plan: Any, plain: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..runner.orchestrator import Progress

    state = {"done": 0, "variant": ""}
    if plain or not console.is_terminal:
        def item_done(key: str, rec: dict) -> None:
            state["done"] += 1
            lat = rec.get("latency_s")
            console.print(f"[{state['done']}/{plan.total}] {key} {rec['status']}" + (f" {lat:.2f}s" if lat else ""),
                          highlight=False)
        return Progress(on_item_done=item_done, on_message=lambda t: console.print(t))

    bar = Bar(TextColumn("[bold]{task.fields[variant]}[/] {task.fields[case]}"), BarColumn(), MofNCompleteColumn(),
              TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
    task = bar.add_task("run", total=plan.total, variant="", case="")

    def variant_start(variant: str, already: int) -> None:
        bar.update(task, advance=already, variant=variant, case="building…")

    def item_done(key: str, rec: dict) -> None:
        bar.update(task, advance=1, case=f"{rec['case_id']} #{rec['repeat']} {rec['status']}")

    p = Progress(on_item_done=item_done, on_variant_start=variant_start, on_message=lambda t: bar.console.print(t))
    p.bar = bar  # type: ignore[attr-defined]
    return p


def _fmt_s(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"


def print_summary(console: Any, summary: dict) -> None:
    from rich.table import Table

    from ..units import fmt_bytes

    t = Table(title=f"{summary['fingerprint']['suite']['name']} — {summary['weights']['model']} weights, "
                    f"{summary['fingerprint']['environment']['hardware_class']}")
    for col in ("variant", "OK", "OOM", "ERR", "T/O", "p50 s", "p95 s", "step p50 s", "peak VRAM", "peak RSS", "weights"):
        t.add_column(col, justify="right" if col != "variant" else "left")
    metric_names: list[str] = []
    for v in summary["variants"].values():
        for name in v.get("metrics", {}):
            if name not in metric_names:
                metric_names.append(name)
    for name in metric_names:
        t.add_column(name, justify="right")
    for name, v in summary["variants"].items():
        c = v["status_counts"]
        row = [name, str(c["OK"]), str(c["OOM"]), str(c["ERROR"]), str(c["TIMEOUT"]), _fmt_s(v["latency_p50_s"]),
               _fmt_s(v["latency_p95_s"]), _fmt_s(v["step_p50_s"]), fmt_bytes(v["peak_vram_bytes"]),
               fmt_bytes(v["rss_peak_bytes"]), fmt_bytes(v["weights_bytes"])]
        row += [f"{v['metrics'][m]['mean']:.4g}" if m in v.get("metrics", {}) else "—" for m in metric_names]
        t.add_row(*row)
    console.print(t)
    if not summary["complete"]:
        console.print(f"[red]incomplete: {summary['recorded_items']} of {summary['planned_items']} planned items recorded[/]")

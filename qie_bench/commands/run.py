"""`qie-bench run SUITE`: every case x variant x repeat, one child process per variant (or per unit
of a Ray cluster with `--executor ray`)."""

from __future__ import annotations

import argparse
import errno
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
                   help="one output size for every case, e.g. 512x512 (overrides generation.width/height or area; the same "
                        "suite at another resolution)")
    p.add_argument("--usd-per-kwh", type=float, default=None, metavar="PRICE",
                   help="electricity price for the cost per 1,000 edits (overrides [cost] usd_per_kwh)")
    p.add_argument("--usd-per-gpu-hour", type=float, default=None, metavar="PRICE",
                   help="GPU price for the cost per 1,000 edits (overrides [cost] usd_per_gpu_hour)")
    p.add_argument("--require-idle-gpu", action="store_true",
                   help="refuse to start (exit 2) while another process holds the GPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (plain log lines)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where workers run: local (one child process at a time, the default) or ray (units in "
                        "parallel on a Ray cluster; needs the [ray] extra)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --executor ray: an existing cluster (e.g. auto, or HOST:6379); absent = a local one")
    p.add_argument("--shards", type=int, default=None, metavar="N",
                   help="with --executor ray: split each variant into N case shards (default: only when there are "
                        "fewer variants than GPUs)")
    p.add_argument("--accelerator-type", default=None, metavar="NAME",
                   help="with --executor ray: the GPU model to run on when the cluster mixes models, e.g. H200")
    p.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..errors import UserInputError
    from ..plan import Overrides, apply_overrides, make_plan
    from ..runner.orchestrator import Orchestrator, default_out_dir, prepare_out_dir
    from ..suite import load_suite

    console = Console(stderr=True)
    suite = apply_overrides(
        load_suite(args.suite),
        Overrides(variants=args.variants, cases=args.cases, without_baseline=args.without_baseline,
                  memory_budget=args.vram_budget, offload=args.offload, size=args.size,
                  usd_per_kwh=args.usd_per_kwh, usd_per_gpu_hour=args.usd_per_gpu_hour),
        where={"variants": "--variants", "cases": "--cases", "memory_budget": "--vram-budget", "offload": "--offload",
               "size": "--size", "usd_per_kwh": "--usd-per-kwh", "usd_per_gpu_hour": "--usd-per-gpu-hour"},
    )
    if args.require_idle_gpu:
        from ..runner.gpu_state import require_idle_gpu

        require_idle_gpu(0)  # the parent holds no CUDA context: every listed process is another's
    if args.resume and args.out is None:
        raise UserInputError("--resume", "needs --out DIR (the run directory to finish)")
    out = args.out or default_out_dir(suite)
    plan = make_plan(suite)
    executor = _executor(args)  # before anything is written: a missing Ray is one line, exit 2
    prepare_out_dir(out, args.resume)  # refuse a bad --out before printing anything
    console.print(f"[bold]qie-bench run[/] {suite.name}: {len(plan.case_set.cases)} cases x {len(plan.variants)} variants "
                  f"x {suite.measurement.repeats} repeats = {plan.total} items -> {out}")
    if suite.model.source != "pretrained":
        console.print(f"[yellow]model weights are RANDOM ({suite.model.source}): memory and speed are real, quality is not[/]")
    t0 = time.perf_counter()
    previous_handler = _terminate_on_sigterm()
    orchestrator = Orchestrator(plan, out, resume=args.resume, progress=_progress(console, plan, args.no_progress),
                                executor=executor)
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
    finally:
        import signal

        signal.signal(signal.SIGTERM, previous_handler)  # a caller (a test, a notebook) gets its own back
    wall = time.perf_counter() - t0
    print_summary(console, summary, out)
    console.print(f"wall time {wall:.1f} s; results in {out}")
    return 0


def _executor(args: argparse.Namespace) -> Any:
    from ..errors import UserInputError
    from ..runner.executor_registry import make_executor

    ray_only = {"address": args.address, "shards": args.shards, "accelerator_type": args.accelerator_type}
    given = {k: v for k, v in ray_only.items() if v is not None}
    if args.executor != "ray":
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise UserInputError(flag, "only applies to --executor ray", f"add --executor ray, or drop {flag}")
        return make_executor("local")
    return make_executor("ray", **given)


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so `finally` blocks stop the worker and close files."""


def _terminate_on_sigterm() -> Any:
    """Install the SIGTERM handler for the run; returns the one it replaced (restored after)."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handler)


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


def _two_lines(name: str) -> str:
    """A metric name as a two-line header: 'ssim_vs_baseline' -> 'ssim_vs\nbaseline'."""
    words = name.split("_")
    half = (len(words) + 1) // 2
    return "_".join(words[:half]) + ("\n" + "_".join(words[half:]) if words[half:] else "")


def _seconds(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def print_summary(console: Any, summary: dict, out: Any = None) -> None:
    """A compact table that fits 100 columns: status, latency, peak memory, weights and the
    suite's gated quality metrics. Every other figure is in summary.json and the report."""
    from rich import box
    from rich.table import Table

    from ..results import RunSummary, Unit, measure

    s = RunSummary.model_validate(summary)
    gpu = str(s.fingerprint.environment.get("device") or "").startswith("cuda")
    peak_key = "peak_vram_process_bytes" if gpu else "rss_peak_bytes"
    gated = [k for k, v in s.gates.items() if not isinstance(v, dict) and measure(k) is None]
    t = Table(title=f"{s.fingerprint.suite.get('name')} — {s.weights.get('model')} weights, "
                    f"{s.fingerprint.hardware_class}", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    t.add_column("variant", no_wrap=True, min_width=max(len(n) for n in s.variants) if s.variants else 7)
    for col in ("ok", "p50 s", "p95 s", "peak VRAM" if gpu else "peak RSS", "weights", *map(_two_lines, gated)):
        t.add_column(col, justify="right", no_wrap=True)
    failures: list[str] = []
    for name, v in s.variants.items():
        c = v.status_counts
        failed = ", ".join(f"{n} {k}" for k, n in c.items() if k != "OK" and n)
        if failed:
            failures.append(f"{name}: {failed}")
        peak = v.get(peak_key)
        if gpu and peak is None:  # no per-process figure in some containers: the device's
            peak = v.get("peak_vram_bytes")
        row = [name, f"{c['OK']}/{v.planned}",
               _seconds(v.latency_p50_s), _seconds(v.latency_p95_s),
               Unit.BYTES.format(peak), Unit.BYTES.format(v.weights_bytes)]
        row += [Unit.NONE.format(v.get(m)) for m in gated]
        t.add_row(*row)
    console.print(t)
    if failures:
        console.print("not OK: " + "; ".join(failures) + " (errors in cases.jsonl)", highlight=False)
    where = f" in {out}/summary.json" if out is not None else " in summary.json"
    console.print(f"every figure (all memory views, per-step times, every metric){where}; "
                  f"an HTML report: qie-bench report {out or 'RUN_DIR'} --out report.html", highlight=False)
    if not s.complete:
        console.print(f"[red]incomplete: {s.recorded_items} of {s.planned_items} planned items recorded[/]")

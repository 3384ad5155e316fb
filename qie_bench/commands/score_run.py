"""`qie-bench score-run RUN_DIR`: (re)score a finished run's outputs, e.g. later, on a machine that
has the judge's weights.

Every variant's outputs are scored in a child process (the run's own scoring phase,
``runner/scoring.py``); the scores are appended to ``scores.jsonl`` (a later line supersedes an
earlier one for the same output) and ``summary.json`` is rebuilt and replaced atomically. Metric
values of other metrics already in the run are kept: the new values are laid over them.
Everything is checked before anything is written: a bad flag, a run directory that is not one,
an unknown metric or a case set that cannot be found is one line and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-run", help="(re)score a finished run's outputs and update its summary",
                       description="Score the outputs of a run directory with the suite's metrics, or those named, and "
                                   "rebuild summary.json. Scores are kept apart from the edit records (scores.jsonl).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory written by `qie-bench run`")
    p.add_argument("--metrics", default=None, metavar="A,B", help="metrics to compute (default: the suite's [metrics] names)")
    p.add_argument("--weights", choices=("real", "random"), default=None, help="metric weights (default: the suite's)")
    p.add_argument("--device", default=None, help="device for the metric models, e.g. cuda (default: the suite's)")
    p.add_argument("--judge", default=None, metavar="DIR",
                   help="the VLM judge's weights: a Qwen2.5-VL-Instruct directory or a Qwen-Image-Edit checkpoint")
    p.add_argument("--cases", type=Path, default=None, metavar="DIR",
                   help="the case set's folder, when it is not where the run found it (its fingerprint must match)")
    p.add_argument("--all", action="store_true", help="re-score every output (default: only outputs without a score)")
    p.set_defaults(handler=score_run_command)


def metrics_config(suite_metrics: dict[str, Any] | None, args: argparse.Namespace) -> Any:
    """The run's [metrics] with the flags laid over; a UserInputError naming the flag when invalid."""
    from pydantic import ValidationError

    from ..errors import UserInputError
    from ..metrics.config import MetricsConfig

    data = dict(suite_metrics or {})
    flags = {"names": args.metrics, "weights": args.weights, "device": args.device, "judge": args.judge}
    data.update({k: v for k, v in flags.items() if v is not None})
    if "names" not in data:
        raise UserInputError("--metrics", "the run's suite computes no metric", "name the metrics, e.g. --metrics ssim,psnr")
    try:
        return MetricsConfig.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        key = str(e["loc"][0]) if e["loc"] else "metrics"
        flag = {"names": "--metrics"}.get(key, f"--{key}")
        raise UserInputError(flag, e["msg"].removeprefix("Value error, ")) from None


def score_run_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    done = score_run(args.run_dir, args, on_message=lambda text: console.print(text, highlight=False))
    for outcome in done:
        console.print(f"{outcome.variant}: {outcome.scored} scored, {outcome.failed} not scored, "
                      f"{outcome.skipped_fresh} already scored ({outcome.wall_s:.1f} s)", highlight=False)
    console.print(f"scores -> {args.run_dir / 'scores.jsonl'}; summary -> {args.run_dir / 'summary.json'}", highlight=False)
    return 0


def score_run(run_dir: Path, args: argparse.Namespace, on_message: Any = print) -> list[Any]:
    """Score ``run_dir`` as the flags in ``args`` say; returns each variant's outcome."""
    from ..cases import load_case_set
    from ..errors import UserInputError
    from ..results import RunDir, atomic_write_json
    from ..results.rundir import load_records, read_builds
    from ..runner.scoring import ScoringPhase
    from ..suite import Suite

    rd = RunDir.load(run_dir)  # validates run.json, summary.json, cases.jsonl (exit 2 when malformed)
    if not rd.suite_config:
        raise UserInputError(str(run_dir / "run.json"), "has no suite_config (written by an older qie-bench)",
                             "re-run the suite")
    suite = Suite.from_config(rd.suite_config)
    config = metrics_config(rd.suite_config.get("metrics"), args)
    if config.judge is None and suite.model.source == "pretrained" and suite.model.id:
        config = config.model_copy(update={"judge": suite.model.id})  # the edit model's own text encoder
    case_dir = args.cases or suite.case_set_dir()
    want = (rd.run.get("case_set") or {}).get("fingerprint")
    where = "--cases" if args.cases else f"{run_dir / 'run.json'}: suite_config.cases.path"
    if not case_dir.is_dir():
        raise UserInputError(where, f"case set folder {case_dir} not found", "pass --cases DIR (the run's case set)")
    case_set = load_case_set(case_dir, max_image_pixels=suite.cases.max_image_pixels)
    if suite.cases.select:  # the run's fingerprint is of the cases it selected (plan.make_plan)
        case_set = case_set.select(suite.cases.select)
    if want and case_set.fingerprint != want:
        raise UserInputError(where, f"case set {case_dir} has fingerprint {case_set.fingerprint[:19]}…, the run used "
                                    f"{want[:19]}…", "pass the case set the run used")
    m = suite.measurement
    phase = ScoringPhase(run_dir, rd.run_id, config.model_dump(mode="json"), case_dir,
                         max_image_pixels=suite.cases.max_image_pixels, item_timeout_s=m.case_timeout_s,
                         build_timeout_s=m.build_timeout_s, max_restarts=m.max_child_restarts,
                         raise_user_errors=True, on_message=on_message)
    variants = list(dict.fromkeys([*(v for v in [suite.baseline_variant] if v), *(r.variant for r in rd.records)]))
    outcomes = []
    for variant in variants:
        records = load_records(run_dir)
        outcomes.append(phase.score_variant(variant, records, suite.baseline_variant, rescore=args.all,
                                            keep_other_metrics=True))
    from ..results.summary import build_summary

    fresh = RunDir.load(run_dir)
    summary = build_summary(fresh.run, fresh.records, read_builds(run_dir), gates=(fresh.summary_json or {}).get("gates"),
                            finished_at=(fresh.summary_json or {}).get("finished_at"))
    atomic_write_json(run_dir / "summary.json", summary)
    return outcomes

"""`qie-bench distill SUITE --student-layers K --out DIR`: train a student transformer.

The teacher is the suite's model (its `[model]` table, loaded in `--dtype`). The student starts
from K of the teacher's blocks and is trained on the teacher's predictions over the suite's case
set (`qie_bench.distill`); a share of the cases is held out, and the student's error against the
teacher on them is measured before and after training, printed and written to the checkpoint's
`qie_student.json`. Use the checkpoint with a `distilled` variant: `method = "student"`,
`checkpoint = "DIR"`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="train a smaller student transformer from the suite's model",
                       description="Distil a student with fewer transformer blocks from the suite's model on the "
                                   "suite's case set, and save it as a checkpoint for a 'distilled' variant.")
    p.add_argument("suite", type=Path, help="suite file: its model is the teacher, its cases the data")
    p.add_argument("--student-layers", type=int, required=True, metavar="K", help="blocks of the student (< the teacher's)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint folder to write")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 150)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4)")
    p.add_argument("--init", choices=("uniform", "score"), default="uniform",
                   help="student blocks: evenly spaced teacher blocks, or the most influential (depth-pruning score)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="teacher dtype (the student trains in fp32)")
    p.add_argument("--training", default=None, metavar="JSON",
                   help='more training settings as JSON, e.g. \'{"batch": 8, "alpha": 0.8, "max_cases": 12}\'')
    p.set_defaults(handler=distill_command)


def _training_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from ..distill.train import TrainingConfig
    from ..errors import UserInputError
    from ..validation import describe_validation_error

    raw: dict[str, Any] = {}
    if args.training:
        try:
            raw = json.loads(args.training)
        except json.JSONDecodeError as err:
            raise UserInputError("--training", f"not valid JSON: {err.msg}") from None
        if not isinstance(raw, dict):
            raise UserInputError("--training", "must be a JSON object")
    if args.steps is not None:
        raw["steps"] = args.steps
    if args.lr is not None:
        raw["lr"] = args.lr
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as err:
        key, problem, fix = describe_validation_error(err.errors()[0], TrainingConfig)
        flag = {"steps": "--steps", "lr": "--lr"}.get(key, f"--training {key}")
        raise UserInputError(flag, problem, fix) from None


def distill_command(args: argparse.Namespace) -> int:
    import time

    from ..distill.checkpoint import META_NAME, save_student
    from ..distill.context import building_for
    from ..errors import UserInputError
    from ..models import LoadPlan, load_model
    from ..suite import load_suite
    from ..variants.base import DTYPES
    from ..variants.distill import train_student

    t0 = time.perf_counter()
    suite = load_suite(args.suite)
    cfg = _training_config(args)
    if args.out.exists() and not args.out.is_dir():
        raise UserInputError("--out", f"'{args.out}' is a file", "name a folder")
    if args.out.is_dir() and any(args.out.iterdir()) and not (args.out / META_NAME).exists():
        raise UserInputError("--out", f"'{args.out}' exists and is not a student checkpoint", "choose a new or empty folder")
    if args.student_layers < 1:
        raise UserInputError("--student-layers", "must be at least 1")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def check_layers(teacher_layers: int) -> None:
        if args.student_layers >= teacher_layers:
            raise UserInputError("--student-layers", f"must be fewer than the teacher's {teacher_layers} blocks "
                                 f"(got {args.student_layers})", f"use 1 to {teacher_layers - 1}")

    if suite.model.source == "tiny":  # known before loading anything
        check_layers(suite.model.tiny.transformer_layers)
    loaded = load_model(suite.model, LoadPlan(dtype=DTYPES[args.dtype]))
    teacher_layers = len(loaded.pipe.transformer.transformer_blocks)
    check_layers(teacher_layers)
    say(f"qie-bench distill: teacher {loaded.source} ({teacher_layers} blocks, {args.dtype}) -> student "
        f"{args.student_layers} blocks ({args.init}), {cfg.steps} steps")
    with building_for(suite) as ctx:
        student, meta = train_student(loaded, ctx, args.student_layers, args.init, cfg, log=say)
    meta["command"] = {"suite": str(suite.path), "argv": sys.argv[1:]}
    meta["seconds"]["wall_including_load"] = time.perf_counter() - t0
    save_student(student, args.out, meta)
    e = meta["errors"]
    n_held = len(meta["data"]["held_out_cases"])
    print(f"held-out error (MSE vs teacher, {n_held} cases, {meta['data']['held_out_calls']} calls): "
          f"before {e['held_out_mse_before']:.6g} -> after {e['held_out_mse_after']:.6g} "
          f"(relative {e['held_out_relative_mse_before']:.4g} -> {e['held_out_relative_mse_after']:.4g})")
    print(f"student: {args.student_layers} of {teacher_layers} blocks {meta['student']['kept_blocks']}; "
          f"checkpoint {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0

"""One distillation run, from recorded pipeline calls to a trained student.

Used three ways: `qie-bench distill` (a student with fewer blocks, saved as a checkpoint), the
`distilled` variant's `train_if_missing`, and the `pruned` variant's optional recovery training
(the pruned transformer is the student, the unpruned one the teacher).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import surgery
from .capture import BlockInfluence, run_cases
from .context import BuildContext
from .train import TrainingConfig, prediction_error, split_cases, teacher_targets, train


@dataclass
class StudentPlan:
    """What the student will be, decided before the teacher's targets are computed."""

    block_map: dict[int, int]  # student block -> teacher block whose output it should match
    build: Callable[[], nn.Module]  # makes the student; may change the teacher in place (pruning)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class DistillResult:
    student: nn.Module
    record: dict[str, Any]


def block_plan(teacher: nn.Module, layers: int, init: str, influence: BlockInfluence | None) -> StudentPlan:
    """A student of `layers` teacher blocks: evenly spaced (`init = "uniform"`) or the most
    influential ones (`init = "score"`), each matched to the end of the teacher segment it
    replaces."""
    total = len(teacher.transformer_blocks)
    if init == "score":
        assert influence is not None
        order = sorted(range(total), key=lambda i: -influence.image[i])
        kept = sorted(order[:layers])
    else:
        kept = surgery.evenly_spaced(total, layers)
    ends = surgery.segment_ends(kept, total)
    return StudentPlan(
        block_map=dict(enumerate(ends)),
        build=lambda: surgery.student_from_teacher(teacher, kept),
        info={"teacher_layers": total, "student_layers": layers, "kept_blocks": kept, "init": init,
              "feature_map": {str(i): t for i, t in enumerate(ends)}},
    )


def distill(
    loaded: Any,
    ctx: BuildContext,
    cfg: TrainingConfig,
    plan_for: Callable[[BlockInfluence | None], StudentPlan],
    *,
    need_influence: bool = False,
    log: Callable[[str], None] | None = None,
) -> DistillResult:
    """Record the teacher's calls on the suite's cases, compute its targets once, build the
    student, train it, and measure its error against the teacher on held-out cases before and
    after training. The teacher is `loaded.pipe.transformer`; the student is trained in fp32."""
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    cases = list(ctx.case_set.cases)
    if cfg.max_cases is not None:
        cases = cases[: cfg.max_cases]
    train_cases, held_cases = split_cases(cases, cfg.held_out_fraction)
    gen = ctx.generation
    say(f"recording teacher calls: {len(train_cases)} training + {len(held_cases)} held-out cases, "
        f"{gen.steps} steps, true_cfg_scale {gen.true_cfg_scale}")
    train_calls, influence = run_cases(loaded, train_cases, gen, record_calls=True, influence=need_influence,
                                       sampled_timesteps=cfg.sampled_timesteps, seed=cfg.seed)
    held_calls, _ = run_cases(loaded, held_cases, gen, record_calls=True,
                              sampled_timesteps=cfg.sampled_timesteps, seed=cfg.seed + 1)
    t_record = time.perf_counter()
    teacher = loaded.pipe.transformer
    plan = plan_for(influence)
    feature_blocks = sorted(set(plan.block_map.values()))
    train_targets = teacher_targets(teacher, train_calls, feature_blocks)
    held_targets = teacher_targets(teacher, held_calls, feature_blocks)
    t_targets = time.perf_counter()
    student = plan.build().to(dtype=torch.float32)
    before = prediction_error(student, held_calls, held_targets)
    before_train = prediction_error(student, train_calls, train_targets)
    say(f"student before training: held-out MSE {before['mse']:.6g} (relative {before['relative_mse']:.4g})")
    history = train(student, train_calls, train_targets, plan.block_map, cfg, log=say)
    after = prediction_error(student, held_calls, held_targets)
    after_train = prediction_error(student, train_calls, train_targets)
    say(f"student after training:  held-out MSE {after['mse']:.6g} (relative {after['relative_mse']:.4g})")
    record = {
        **plan.info,
        "training": cfg.model_dump(),
        "data": {
            "case_set": ctx.case_set.name,
            "case_set_fingerprint": ctx.case_set.fingerprint,
            "train_cases": [c.id for c in train_cases],
            "held_out_cases": [c.id for c in held_cases],
            "train_calls": len(train_calls),
            "held_out_calls": len(held_calls),
            "generation": gen.model_dump(),
        },
        "errors": {
            "held_out_mse_before": before["mse"],
            "held_out_mse_after": after["mse"],
            "held_out_relative_mse_before": before["relative_mse"],
            "held_out_relative_mse_after": after["relative_mse"],
            "train_mse_before": before_train["mse"],
            "train_mse_after": after_train["mse"],
            "measure": "mean over recorded calls of MSE(student prediction, teacher prediction) on the noisy-latent tokens",
        },
        "history": history,
        "influence": influence.as_record() if influence is not None else None,
        "seconds": {"record": t_record - t0, "targets": t_targets - t_record, "train": history["seconds"],
                    "total": time.perf_counter() - t0},
    }
    return DistillResult(student, record)


class small_cpu_threads:
    """One intra-op thread while a small model computes on the CPU.

    The tiny transformer's ops are far too small to split across threads; with two threads on
    a busy 2-core machine each op waits at OpenMP barriers, and recording + training ran about
    10x slower than with one (measured). Large models or GPUs are left alone.
    """

    def __init__(self, loaded: Any, max_params: int = 100_000_000) -> None:
        self.active = loaded.device.type == "cpu" and sum(p.numel() for p in loaded.pipe.transformer.parameters()) < max_params
        self.saved = torch.get_num_threads()

    def __enter__(self) -> None:
        if self.active:
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            torch.set_num_threads(self.saved)

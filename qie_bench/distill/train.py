"""Distillation of a transformer (the student) from another (the teacher) on recorded calls.

The loss, per recorded transformer call, on the noisy-latent tokens whose prediction the
pipeline uses (reference-latent tokens are discarded by the pipeline and not scored)::

    L = alpha * L_recon + (1 - alpha) * L_KL + feature_weight * L_feat

- L_recon: MSE between the student's and the teacher's velocity predictions.
- L_KL: the classic temperature-softened term (Hinton et al., 2015), T^2 * KL(softmax(t/T) ||
  softmax(s/T)), with the softmax over each token's output channels (the packed 2x2 x latent
  channels, 64 in the real model). A velocity is not a class distribution, so this is an
  auxiliary term, chosen for one property: softmax is shift-invariant, so the term scores the
  *shape* of each token's channel vector regardless of its offset, and for large T it tends to
  1/2 x the MSE of the per-token-centred predictions (Hinton's high-temperature limit), so it
  cannot pull against L_recon; smaller T stresses each token's dominant channels. The default
  alpha = 0.9 keeps L_recon the main term.
- L_feat: feature matching, MSE between student block i's output hidden states and teacher block
  map(i)'s, divided by the teacher's mean square (scale-free across blocks). Both streams are
  matched, except the text stream of the last block, which the model never reads.

Teacher targets are computed once per recorded call and kept (`teacher_targets`); training then
never runs the teacher again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .capture import TransformerCall
from .config import TrainingConfig


@dataclass
class Target:
    output: torch.Tensor  # teacher prediction on the noisy tokens, fp32
    features: dict[int, tuple[torch.Tensor, torch.Tensor]]  # teacher block -> (image, text) hidden states


def _module_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _module_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _BlockTap:
    """Forward hooks that keep the outputs of chosen blocks of the current call."""

    def __init__(self, model: nn.Module, indices: Sequence[int], detach: bool) -> None:
        self.outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = []
        for i in sorted(set(indices)):
            def hook(_m: Any, _a: Any, out: Any, i: int = i) -> None:
                enc, hid = out
                self.outputs[i] = (hid.detach().float().clone(), enc.detach().float().clone()) if detach else (hid, enc)
            self._handles.append(model.transformer_blocks[i].register_forward_hook(hook))

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def predict(model: nn.Module, call: TransformerCall) -> torch.Tensor:
    """The model's prediction for the call's noisy tokens."""
    inputs = call.replay_inputs(_module_dtype(model), _module_device(model))
    out = model(**inputs, return_dict=False)[0]
    return out[:, : call.n_noisy]


def teacher_targets(teacher: nn.Module, calls: Sequence[TransformerCall], feature_blocks: Sequence[int]) -> list[Target]:
    """Teacher predictions (and outputs of `feature_blocks`) for every call, computed once."""
    tap = _BlockTap(teacher, feature_blocks, detach=True)
    targets = []
    try:
        with torch.no_grad():
            for call in calls:
                tap.outputs = {}
                out = predict(teacher, call).float()
                targets.append(Target(out, dict(tap.outputs)))
    finally:
        tap.close()
    return targets


def distill_loss(
    s_out: torch.Tensor,
    target: Target,
    s_feats: dict[int, tuple[torch.Tensor, torch.Tensor]],
    block_map: dict[int, int],
    last_block: int,
    cfg: TrainingConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    t_out = target.output
    s_out = s_out.float()
    recon = F.mse_loss(s_out, t_out)
    total = cfg.alpha * recon
    parts = {"recon": recon.item()}
    if cfg.alpha < 1.0:
        T = cfg.temperature
        kl = F.kl_div(F.log_softmax(s_out / T, dim=-1), F.log_softmax(t_out / T, dim=-1), log_target=True,
                      reduction="none").sum(-1).mean() * T * T
        total = total + (1.0 - cfg.alpha) * kl
        parts["kl"] = kl.item()
    if cfg.feature_weight > 0 and block_map:
        feat = s_out.new_zeros(())
        n = 0
        for s_i, t_i in block_map.items():
            s_img, s_txt = s_feats[s_i]
            t_img, t_txt = target.features[t_i]
            feat = feat + F.mse_loss(s_img.float(), t_img) / t_img.pow(2).mean().clamp_min(1e-12)
            n += 1
            if s_i != last_block:
                feat = feat + F.mse_loss(s_txt.float(), t_txt) / t_txt.pow(2).mean().clamp_min(1e-12)
                n += 1
        feat = feat / max(n, 1)
        total = total + cfg.feature_weight * feat
        parts["feat"] = feat.item()
    parts["total"] = total.item()
    return total, parts


def prediction_error(model: nn.Module, calls: Sequence[TransformerCall], targets: Sequence[Target]) -> dict[str, float]:
    """Mean over calls of the MSE of the model's prediction against the teacher's, and that MSE
    relative to the teacher prediction's mean square."""
    mse, rel = 0.0, 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for call, target in zip(calls, targets):
            err = F.mse_loss(predict(model, call).float(), target.output).item()
            mse += err
            rel += err / max(target.output.pow(2).mean().item(), 1e-12)
    model.train(was_training)
    n = max(len(calls), 1)
    return {"mse": mse / n, "relative_mse": rel / n, "calls": len(calls)}


def train(
    student: nn.Module,
    calls: Sequence[TransformerCall],
    targets: Sequence[Target],
    block_map: dict[int, int],
    cfg: TrainingConfig,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train `student` in place (all its parameters) to imitate the recorded teacher targets.
    `block_map`: student block index -> teacher block index for feature matching."""
    if cfg.steps == 0 or not calls:
        return {"steps": 0, "seconds": 0.0, "loss_first": None, "loss_last": None}
    t0 = time.perf_counter()
    student.train()
    student.requires_grad_(True)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    rng = torch.Generator(device="cpu").manual_seed(cfg.seed)
    tap = _BlockTap(student, list(block_map), detach=False) if cfg.feature_weight > 0 and block_map else None
    last_block = len(student.transformer_blocks) - 1
    first_loss = last_loss = None
    window: list[float] = []
    try:
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            picks = torch.randint(len(calls), (cfg.batch,), generator=rng).tolist()
            step_loss = 0.0
            for i in picks:
                if tap is not None:
                    tap.outputs = {}
                out = predict(student, calls[i])
                loss, parts = distill_loss(out, targets[i], tap.outputs if tap else {}, block_map, last_block, cfg)
                (loss / cfg.batch).backward()
                step_loss += parts["total"] / cfg.batch
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if first_loss is None:
                first_loss = step_loss
            window.append(step_loss)
            if log is not None and (step + 1) % max(1, cfg.steps // 5) == 0:
                log(f"step {step + 1}/{cfg.steps}: loss {sum(window) / len(window):.5g}")
                window = []
            last_loss = step_loss
    finally:
        if tap is not None:
            tap.close()
        student.requires_grad_(False)
        student.eval()
        opt.zero_grad(set_to_none=True)
    return {"steps": cfg.steps, "seconds": time.perf_counter() - t0, "loss_first": first_loss, "loss_last": last_loss}


def split_cases(cases: Sequence[Any], held_out_fraction: float) -> tuple[list[Any], list[Any]]:
    """(train, held-out): the held-out share chosen by a hash of each case id (the case's seed),
    so the split does not depend on manifest order and a case is held out in every run."""
    if len(cases) < 2:
        raise ValueError("distillation needs at least 2 cases (one to train on, one held out)")
    n_held = min(len(cases) - 1, max(1, round(len(cases) * held_out_fraction)))
    by_hash = sorted(cases, key=lambda c: (c.seed(0), c.id))
    held_ids = {c.id for c in by_hash[:n_held]}
    return [c for c in cases if c.id not in held_ids], [c for c in cases if c.id in held_ids]

"""Structural edits of a `QwenImageTransformer2DModel`: keep a subset of its blocks.

The transformer's blocks are homogeneous and indexed by position (`transformer_blocks.N.*`), so
keeping K of them is a new `nn.ModuleList` of the kept blocks plus `num_layers = K` in the
config; `save_pretrained` then writes a checkpoint that `from_pretrained` rebuilds exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` indices of `range(total)`, evenly spaced, always including the first and the last
    when keep >= 2 (the embedding-side and output-side blocks).

    >>> evenly_spaced(60, 40)[:5], evenly_spaced(2, 1), evenly_spaced(6, 3)
    ([0, 2, 3, 5, 6], [0], [0, 2, 5])
    """
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total}")
    if keep == 1:
        return [0]
    step = (total - 1) / (keep - 1)
    picked = sorted({round(i * step) for i in range(keep)})
    assert len(picked) == keep, (total, keep, picked)
    return picked


def segment_ends(kept: Sequence[int], total: int) -> list[int]:
    """For a student made of teacher blocks `kept`, the teacher block whose output student
    block i should reproduce: the last teacher block before the next kept one (student block i
    stands in for teacher blocks kept[i] .. kept[i+1]-1); the last student block maps to the
    teacher's last block."""
    ends = [nxt - 1 for nxt in kept[1:]] + [total - 1]
    return ends


def keep_blocks(transformer: nn.Module, kept: Sequence[int]) -> list[int]:
    """Keep only blocks `kept` (sorted, unique) of `transformer.transformer_blocks`, in place.

    Returns the removed indices. Updates `config.num_layers` so the model round-trips through
    `save_pretrained` / `from_pretrained`.
    """
    blocks = transformer.transformer_blocks
    total = len(blocks)
    kept = sorted({int(i) for i in kept})
    if not kept or kept[0] < 0 or kept[-1] >= total:
        raise ValueError(f"kept blocks {kept} are not a non-empty subset of 0..{total - 1}")
    transformer.transformer_blocks = nn.ModuleList([blocks[i] for i in kept])
    transformer.register_to_config(num_layers=len(kept))
    return [i for i in range(total) if i not in set(kept)]


def student_from_teacher(teacher: nn.Module, kept: Sequence[int]) -> nn.Module:
    """A new transformer: a copy of `teacher` (embeddings, norms, output projection) with only
    copies of blocks `kept`. Copies only what it keeps: the teacher's other blocks are never
    duplicated, so peak memory is teacher + student."""
    blocks = teacher.transformer_blocks
    teacher.transformer_blocks = nn.ModuleList()
    try:
        student = copy.deepcopy(teacher)
    finally:
        teacher.transformer_blocks = blocks
    student.transformer_blocks = nn.ModuleList([copy.deepcopy(blocks[i]) for i in sorted(kept)])
    student.register_to_config(num_layers=len(kept))
    return student


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_params(transformer: nn.Module) -> int:
    """Parameters of one transformer block (all blocks are the same size before width pruning)."""
    return count_params(transformer.transformer_blocks[0])


def transformer_dtype(transformer: nn.Module) -> torch.dtype:
    return next(transformer.parameters()).dtype


def component_dtypes(pipe: object) -> dict[str, str]:
    """dtype of each weight component's first parameter, as the dtype variant records it."""
    from ..models import WEIGHT_COMPONENTS

    out = {}
    for name in WEIGHT_COMPONENTS:
        module = getattr(pipe, name, None)
        if module is not None:
            out[name] = str(next(module.parameters()).dtype).removeprefix("torch.")
    return out

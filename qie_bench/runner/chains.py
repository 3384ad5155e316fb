"""Chained cases in a run: which image a turn reads, where its output goes.

A chain's turn ``k`` is measured as a case of its own (`Case.turn`), id ``<case>@t<k>``: its
output is ``images/<variant>/<case>@t<k>.png`` and its record key ``<variant>/<case>@t<k>/<repeat>``
(with ``turn = k`` in the record). Turn ``k > 1`` reads the previous turn's output from the run
directory, not from memory, so a worker restarted between turns, or a run resumed after a kill,
carries on from what is on disk. The metrics of a turn compare with the chain's original source
outside the union of the masks of turns 1..k (``psnr_outside_mask``, ``ssim_outside_mask``),
and with the baseline variant's output of the same turn (``*_vs_baseline``).
"""

from __future__ import annotations

from pathlib import Path

from ..cases import TURN_SEP, Case


def output_path(out_dir: Path, variant: str, case_id: str, turn: int) -> Path:
    """Where the repeat-0 output of a chain's turn is kept (and the next turn reads it)."""
    return out_dir / "images" / variant / f"{case_id}{TURN_SEP}{turn}.png"


def chain_turn(case: Case, turn: int, out_dir: Path, variant: str) -> Case:
    """Turn ``turn`` of the chained ``case`` as a case to run: turn 1 reads the case's images,
    turn k > 1 this variant's output of turn k - 1 in ``out_dir``."""
    previous = None if turn == 1 else output_path(out_dir, variant, case.id, turn - 1)
    return case.turn(turn, previous)

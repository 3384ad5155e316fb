"""``qie-bench score``: score one output image with the harness's metrics, outside any run.

    qie-bench score --source S.png --output O.png [--reference R.png] [--mask M.png]
                    [--caption TEXT] [--expected-text TEXT] [--metrics ssim,psnr,...] [--weights real|random]
                    [--weights-dir DIR] [--device cpu] [--json]

``--reference`` is the baseline variant's output (for the ``*_vs_baseline`` metrics); ``--mask``
a PNG the size of the source, white where the edit may change pixels; ``--expected-text`` the text
the output must show (``text_accuracy``, ``text_found``, read by OCR). Metrics whose reference is
not given print as ``-`` with the reason. Without ``--metrics``, a metric whose real weights are
missing (CLIP, AlexNet) is skipped and listed, with why and how to get the files, while every
other metric is computed; a metric named in ``--metrics`` whose weights are missing is an error.
Nothing ever falls back to random weights. Exit code 0, or 2 for bad input (a missing or
unreadable file, an unknown metric, missing real weights of a named metric).

Only argparse is imported at module level: ``qie_bench.cli`` imports this module for every
command, and the metric stack (torch, torchmetrics, pyiqa, transformers) takes seconds to import.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..errors import UserInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score`` subcommand."""
    parser = subparsers.add_parser(
        "score",
        help="score one output image (quality metrics, no model run)",
        description="Score an edited image against its source, an optional baseline output, mask and caption.",
    )
    parser.add_argument("--source", required=True, metavar="S.png", help="the input image the edit started from")
    parser.add_argument("--output", required=True, metavar="O.png", help="the edited image to score")
    parser.add_argument("--reference", metavar="R.png", help="the baseline variant's output (same case and seed)")
    parser.add_argument("--mask", metavar="M.png", help="mask PNG at the source's size: white = may change")
    parser.add_argument("--caption", metavar="TEXT", help="target caption, for clip_score")
    parser.add_argument("--expected-text", metavar="TEXT",
                        help="the text the output must show, for text_accuracy and text_found (OCR)")
    parser.add_argument("--instruction", metavar="TEXT",
                        help="the edit instruction, for the VLM judge's semantic consistency (judge_sc, judge_overall)")
    parser.add_argument("--judge", metavar="DIR",
                        help="the VLM judge's weights: a Qwen2.5-VL-Instruct directory or a Qwen-Image-Edit checkpoint")
    parser.add_argument("--metrics", metavar="A,B,...",
                        help="comma-separated metric names (default: all whose weights are available)")
    parser.add_argument("--weights", choices=("real", "random"), default="real",
                        help="real pretrained metric weights (default) or seeded random ones (plumbing only)")
    parser.add_argument("--weights-dir", metavar="DIR", help="folder searched first for real metric weights")
    parser.add_argument("--device", default="cpu", help="device for metric models (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def _config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from .config import MetricsConfig
    from .registry import REGISTRY

    fields: dict[str, Any] = {"weights": args.weights, "weights_dir": args.weights_dir, "device": args.device,
                              "judge": args.judge}
    if args.metrics:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
        for name in names:
            REGISTRY.get(name)  # UserInputError with a did-you-mean hint
        fields["names"] = names
    try:
        return MetricsConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "score"
        raise UserInputError(where, first["msg"]) from None


def run(args: argparse.Namespace) -> int:
    """Handler of ``qie-bench score``; returns the exit code."""
    from .base import to_json_value
    from .images import load_image, load_mask
    from .prepared import ScoreInputs

    config = _config(args)
    source = load_image(args.source)
    inputs = ScoreInputs(
        output=load_image(args.output),
        source=source,
        baseline_output=load_image(args.reference) if args.reference else None,
        mask=load_mask(args.mask, source.size) if args.mask else None,
        caption=args.caption,
        expected_text=args.expected_text,
        instruction=args.instruction,
    )
    from .scorer import Scorer

    scorer = Scorer(config, missing_weights="skip")  # skips only with the default metric list
    results, notes = scorer.score_detailed(inputs)
    described = scorer.describe()
    if args.json:
        payload = {
            "weights_kind": scorer.weights_kind,
            "scores": {name: result.value for name, result in results.items()},
            "reasons": {name: result.reason for name, result in results.items() if result.reason},
            "skipped": scorer.skipped,
            "details": {name: result.detail for name, result in results.items() if result.detail is not None},
            "notes": notes,
            "metrics": described,
        }
        print(json.dumps(to_json_value(payload), indent=2, ensure_ascii=False))
        return 0
    print(format_table(results, described, scorer.weights_kind, notes, scorer.skipped))
    return 0


def format_value(value: float | None) -> str:
    """A score for humans: 4 significant decimals, ``inf`` spelled out, ``-`` for no value."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def format_table(
    results: dict[str, Any], described: dict[str, dict[str, Any]], weights_kind: str, notes: list[str],
    skipped: dict[str, str] | None = None,
) -> str:
    """Plain-text table: metric, value, direction, reference, backbone, and a note for ``-`` values;
    then one line per skipped metric with the full reason (what is missing, where it looked, how
    to get it)."""
    from .registry import REGISTRY

    skipped = skipped or {}
    header = ("metric", "value", "better", "reference", "backbone", "note")
    rows = []
    for name, result in results.items():
        info = described.get(name) or REGISTRY.get(name).declaration()
        region = info["region"]
        reference = info["reference"] + ("" if region == "whole" else f" ({region.replace('_', ' ')})")
        backbone = info.get("backbone") or "-"
        note = "skipped: real weights not found (see below)" if name in skipped else (result.reason or "")
        rows.append((name, format_value(result.value), info["direction"], reference, backbone, note))
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    lines = [line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)]
    lines.append("")
    lines.append(f"metric weights: {weights_kind}")
    if weights_kind == "random":
        lines.append("  (random-weight models: clip_iqa, lpips and clip_score values say nothing about quality)")
    lines += [f"note: {note}" for note in notes]
    if skipped:
        lines.append(f"skipped {len(skipped)} metric{'s' if len(skipped) != 1 else ''} (name them with --metrics "
                     "to make missing weights an error):")
        lines += [f"  {name}: {reason}" for name, reason in skipped.items()]
    details: dict[str, list[str]] = {}  # one line per distinct detail (metrics may share one)
    for name, result in results.items():
        if getattr(result, "detail", None) is not None:
            details.setdefault(json.dumps(result.detail, ensure_ascii=False), []).append(name)
    lines += [f"detail ({', '.join(names)}): {text}" for text, names in details.items()]
    return "\n".join(lines)

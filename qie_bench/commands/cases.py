"""`qie-bench cases validate|list DIR`: check a case set before spending GPU time on it.

Errors are `UserInputError`s; the top-level CLI prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..cases import DEFAULT_MAX_IMAGE_PIXELS, CaseSet, load_case_set

INSTRUCTION_WIDTH = 60  # terminal cells of the instruction shown by `cases list` (CJK = 2 cells)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cases", help="validate or list a case set", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cases_command", required=True, metavar="ACTION")

    v = sub.add_parser("validate", help="check a case set: manifest, paths, every image and mask decoded")
    v.add_argument("dir", metavar="DIR", help="case-set folder (holds cases.jsonl)")
    v.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="refuse larger images (default: %(default)s)",
    )
    v.set_defaults(handler=validate)

    ls = sub.add_parser("list", help="print the cases of a set as a table")
    ls.add_argument("dir", metavar="DIR", help="case-set folder (holds cases.jsonl)")
    ls.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="ID_OR_CATEGORY",
        help="only these case ids or categories (repeatable, or comma-separated)",
    )
    ls.set_defaults(handler=list_cases)


def validate(args: argparse.Namespace) -> int:
    cs = load_case_set(args.dir, max_image_pixels=args.max_image_pixels, check_images=True)
    print(ok_line(cs))
    return 0


def ok_line(cs: CaseSet) -> str:
    s = cs.summary()
    langs = s["languages"]
    assert isinstance(langs, dict)
    lang_text = "/".join(f"{k}={v}" for k, v in langs.items())
    chains = f"{s['chains']} chained ({sum(len(c.turns) for c in cs.cases)} turns), " if s["chains"] else ""
    return f"OK: {cs.name}: {s['cases']} cases, {s['with_mask']} with masks, {s['multi_image']} multi-image, {chains}languages {lang_text}, fingerprint {cs.fingerprint}"


def list_cases(args: argparse.Namespace) -> int:
    # Listing is for reading the set, so skip decoding images (fast); `validate` does that.
    cs = load_case_set(args.dir, check_images=False)
    names = [n.strip() for item in args.select for n in item.split(",") if n.strip()]
    cs = cs.select(names)

    from rich.console import Console  # imported lazily: only this subcommand needs it
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{cs.name} ({len(cs.cases)} cases)", title_justify="left")
    for col in ("id", "category", "lang", "#img", "mask"):
        table.add_column(col, no_wrap=True)
    # rich measures display width, so Chinese text is cut at the same visual width as English
    table.add_column("instruction", no_wrap=True, overflow="ellipsis", max_width=INSTRUCTION_WIDTH)
    for c in cs.cases:
        # markup=False semantics for cells: instructions may contain "[...]"
        table.add_row(
            c.id, c.category, c.language, str(len(c.image_paths)), "yes" if c.mask_path else "-", Text(c.instruction)
        )
    # A fixed minimum width keeps the table readable when stdout is a pipe (rich uses 80 there).
    console = Console(width=max(Console().width, 140), highlight=False)
    console.print(table)
    console.print(ok_line(cs).replace("OK: ", "", 1), markup=False, soft_wrap=True)
    return 0

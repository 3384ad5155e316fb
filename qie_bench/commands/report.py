"""`qie-bench report RUN_DIR [RUN_DIR ...] --out FILE.html`: one self-contained HTML report.

Every variant of every run in one page; runs on different hardware classes become a hardware
comparison; runs of different case sets are refused (exit 2). `--markdown` also writes the
tables as GitHub-flavoured Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_page_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as GitHub-flavoured Markdown here")
    p.add_argument("--cases", type=Path, action="append", default=[], metavar="DIR",
                   help="case-set folder to take source images and instructions from (default: the suite's, found by fingerprint)")
    p.add_argument("--gallery-cases", type=int, default=40, metavar="N",
                   help="cases shown in the gallery, worst first (default 40; 0 = all)")
    p.add_argument("--title", default=None, help="page title")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of one or more runs",
                       description="Compare every variant of every run given in one self-contained HTML file "
                                   "(tables, physical floors, plots, a per-case gallery). Runs on different hardware "
                                   "become a hardware comparison; runs of different case sets are refused.")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories written by `qie-bench run`")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write, e.g. reports/NAME.html")
    add_page_options(p)
    p.set_defaults(handler=report_command)


def check_out_path(path: Path, flag: str) -> None:
    from ..errors import UserInputError

    if path.is_dir():
        raise UserInputError(str(path), "is a directory", f"pass a file name for {flag}, e.g. {path / 'report.html'}")


def write_text(path: Path, text: str, flag: str) -> None:
    from ..errors import UserInputError
    from ..results import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise UserInputError(str(path), f"cannot write {flag} ({err.strerror})", "choose a writable path") from None


def gallery_limit(n: int) -> int | None:
    from ..errors import UserInputError

    if n < 0:
        raise UserInputError("--gallery-cases", f"must be 0 (all) or more, got {n}")
    return None if n == 0 else n


def report_command(args: argparse.Namespace) -> int:
    from ..report.data import build_report_data
    from ..report.html import build_context, render_html
    from ..report.markdown import render_markdown

    check_out_path(args.out, "--out")
    if args.markdown:
        check_out_path(args.markdown, "--markdown")
    limit = gallery_limit(args.gallery_cases)
    data = build_report_data(args.run_dirs, args.cases)
    ctx = build_context(data, title=args.title, gallery_cases=limit)
    html = render_html(ctx)
    write_text(args.out, html, "--out")
    if args.markdown:
        write_text(args.markdown, render_markdown(ctx), "--markdown")
    flags = len(data.flags)
    print(f"report: {args.out} ({len(html) / 1e6:.1f} MB, {len(data.runs)} run(s), {len(data.columns)} variant column(s)"
          + (f", {flags} measurement(s) below their physical floor" if flags else "") + ")")
    if args.markdown:
        print(f"markdown: {args.markdown}")
    return 0

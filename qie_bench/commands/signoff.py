"""`qie-bench signoff RUN_DIR --baseline FILE --out FILE.html`: the pre-release sign-off page.

One verdict at the top, taken from the gate exactly: gate pass -> SIGNED OFF (exit 0); a
regression or a run not comparable with the baseline -> BLOCKED (exit 1), with the gate's
failing checks as the reasons. Bad input (missing or corrupted files) is exit 2 and writes no
page. The page lists every gate check, the fingerprints of run and baseline, and the sha256 of
every artefact it relied on (summary.json, cases.jsonl, run.json, the baseline, every image shown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .report import add_page_options, check_out_path, gallery_limit, write_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("signoff", help="pre-release sign-off page: SIGNED OFF (exit 0) or BLOCKED (exit 1)",
                       description="Run the gate against a baseline and write a self-contained sign-off page with one "
                                   "verdict (SIGNED OFF only when the gate passes), every check, the fingerprints and "
                                   "the sha256 of every artefact relied on. Exit 0 signed off, 1 blocked, 2 bad input.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory written by `qie-bench run`")
    p.add_argument("--baseline", type=Path, required=True, help="baseline file, e.g. baselines/<suite>/<hardware>.json")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write, e.g. reports/NAME-signoff.html")
    add_page_options(p)
    p.set_defaults(handler=signoff_command)


def signoff_command(args: argparse.Namespace) -> int:
    from ..report.data import build_report_data
    from ..report.html import build_context, render_html, report_artefacts
    from ..report.markdown import render_markdown
    from ..report.signoff import run_gate, signoff_artefacts, signoff_view

    check_out_path(args.out, "--out")
    if args.markdown:
        check_out_path(args.markdown, "--markdown")
    limit = gallery_limit(args.gallery_cases)
    result = run_gate(args.run_dir, args.baseline)  # bad input: UserInputError, exit 2
    data = build_report_data([args.run_dir], args.cases)
    view = signoff_view(result, args.run_dir, args.baseline)
    ctx = build_context(data, title=args.title, gallery_cases=limit, signoff=view)
    ctx.run_facts.append(view.baseline_facts)
    view.artefacts = signoff_artefacts(view, report_artefacts(ctx))
    write_text(args.out, render_html(ctx), "--out")
    if args.markdown:
        write_text(args.markdown, render_markdown(ctx), "--markdown")
    print(f"signoff: {view.verdict} — gate {view.headline} (exit {view.gate_exit_code}); page: {args.out}")
    for reason in view.reasons[:10]:
        print(f"  {reason}")
    if len(view.reasons) > 10:
        print(f"  … and {len(view.reasons) - 10} more (see the page)")
    return view.exit_code

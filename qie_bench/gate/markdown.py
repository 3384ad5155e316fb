"""A GitHub-flavoured Markdown report, written for `$GITHUB_STEP_SUMMARY`: the verdict first,
then the failures, then every check in a collapsed section."""

from __future__ import annotations

from pathlib import Path

from ..results import atomic_write_text
from .compare import Check, GateResult, Verdict

_ICON = {Verdict.PASS: "✅", Verdict.FAIL: "❌", Verdict.UNTESTABLE: "❓", Verdict.NOT_COMPARABLE: "⛔", Verdict.SKIP: "➖", Verdict.NEW: "🆕"}
_COLUMNS = ("", "metric", "variant", "baseline", "current", "change", "threshold", "verdict", "why")


def _cell(text: str) -> str:
    # A pipe would end the cell, a newline the row, and <suite> would be read as an HTML tag.
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
            .replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _table(checks: list[Check]) -> list[str]:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join(["---"] * len(_COLUMNS)) + "|"]
    for c in checks:
        row = (_ICON[c.verdict], c.name, c.variant or "—", c.baseline, c.current, c.change, c.threshold, c.verdict.value, c.why)
        lines.append("| " + " | ".join(_cell(x) for x in row) + " |")
    return lines


def render_markdown(result: GateResult) -> str:
    code = result.exit_code
    icon = "✅" if code == 0 else ("❌" if code == 1 else "⛔")
    fp = result.run.fingerprint
    lines = [
        f"## {icon} qie-bench gate: {result.headline} (exit {code})",
        "",
        (f"Run `{result.run.run_id}` against baseline `{result.baseline.run_id}` · suite **{result.run.suite_name}** · "
         f"case set `{(fp.get('case_set') or {}).get('name')}` · `{result.run.hardware_class}` · "
         f"model weights: {(result.run.weights or {}).get('model')}, metric weights: {(result.run.weights or {}).get('metrics')}"),
        "",
    ]
    for note in result.notes:
        lines.append(f"> {note}")
    if result.notes:
        lines.append("")
    failures = result.failures
    if failures:
        lines += ["### Failures", "", *_table(failures), ""]
    lines += ["<details><summary>All checks (" + str(len(result.checks)) + ")</summary>", "", *_table(result.checks), "",
              "</details>", ""]
    return "\n".join(lines)


def write_markdown(result: GateResult, path: Path) -> None:
    atomic_write_text(path, render_markdown(result))


def write_markdown_error(message: str, path: Path) -> None:
    atomic_write_text(path, f"## ⛔ qie-bench gate: invalid input (exit 2)\n\n```\n{message}\n```\n")

"""The report's tables as GitHub-flavoured Markdown (for PR comments and $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from .html import PageContext
from .tables import Cell, Table


def _cell(c: Cell) -> str:
    text = c.text + (f" ({c.sub})" if c.sub else "")
    if c.cls == "flag":
        text = f"**{text}**"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_markdown(t: Table) -> list[str]:
    align = ["---:" if (t.rows and t.rows[0][i].numeric) else ":---" for i in range(len(t.header))]
    lines = [f"### {t.title}", "", "| " + " | ".join(h.replace("|", "\\|") for h in t.header) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"<sub>{t.caption}</sub>"]
    return lines + [""]


def render_markdown(ctx: PageContext) -> str:
    lines = [f"## {ctx.title}", "", ctx.subtitle, ""]
    s = ctx.signoff
    if s is not None:
        icon = "✅" if s.signed_off else "⛔"
        lines += [f"### {icon} {s.verdict}", "", f"Gate: **{s.headline}** (exit {s.gate_exit_code}) against `{s.baseline_path}`.", ""]
        lines += [f"- {r}" for r in s.reasons] + ([""] if s.reasons else [])
    for b in ctx.banners:
        if b.level == "danger":
            lines += ["> [!CAUTION]", f"> **{b.title}.** {b.text}", ""]
    if ctx.floor_flags:
        lines += ["> [!WARNING]", f"> {len(ctx.data.flags)} measurement(s) beat the physical floor (measurement errors):"]
        lines += [f"> - {line}" for line in ctx.floor_flags] + [""]
    for n in ctx.data.notes:
        lines.append(f"- {n}")
    if ctx.data.notes:
        lines.append("")
    tables = [ctx.tables["speed"], ctx.tables["budgets"], ctx.tables["quality"], ctx.tables["hardware"], ctx.tables["time_floors"],
              ctx.tables["memory_floors"], ctx.tables["projections"]]
    for t in tables:
        if t is not None:
            lines += table_markdown(t)
    return "\n".join(lines).rstrip() + "\n"

"""One self-contained HTML page: every image and plot embedded as a data URI, the CSS and the
one small script inline, nothing fetched from anywhere.

The page's script counts its images once they have loaded and writes the counts into the DOM
(`<body data-images-loaded=… data-images-failed=…>` and the footer), so a headless browser
can check that every embedded image decoded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from . import tables as T
from ..fingerprint import file_sha256
from .data import ReportData, output_size_label
from .gallery import Gallery, build_gallery
from .chains import has_chains, plot_chains
from .plots import Plot, all_plots


@dataclass
class Banner:
    level: str  # 'danger', 'warn', 'ok'
    title: str
    text: str


@dataclass
class RunFacts:
    label: str
    rows: list[tuple[str, str]]


@dataclass
class PageContext:
    title: str
    subtitle: str
    generated_at: str
    banners: list[Banner]
    data: ReportData
    tables: dict[str, Any]
    plots: list[Plot]
    gallery: Gallery
    run_facts: list[RunFacts]
    floor_flags: list[str]
    signoff: Any | None = None  # signoff.SignoffView
    extra_notes: list[str] = field(default_factory=list)


def weights_banners(data: ReportData) -> list[Banner]:
    """The banner a reader cannot miss when any number comes from random weights."""
    out = []
    random_model = [r for r in data.runs if r.random_model]
    if random_model:
        which = ", ".join(f"{r.label}: {r.summary['weights']['model']}" for r in random_model)
        out.append(Banner("danger", "RANDOM MODEL WEIGHTS",
                          f"{'Every run' if len(random_model) == len(data.runs) else 'Some runs'} used randomly initialised "
                          f"model weights ({which}). Memory and speed are real; the images and every quality number are "
                          "NOT — do not use them to judge quality."))
    random_metrics = [r for r in data.runs if r.random_metrics]
    if random_metrics:
        which = ", ".join(f"{r.label}: {r.summary['weights'].get('metrics')}" for r in random_metrics)
        out.append(Banner("danger", "RANDOM METRIC WEIGHTS",
                          f"Learned quality metrics (LPIPS, CLIP-based scores) were computed with random network weights "
                          f"({which}): their values are meaningless."))
    if not out:
        out.append(Banner("ok", "Real weights", "Every run used the pretrained model"
                          + (" and real metric weights." if all((r.summary.get("weights") or {}).get("metrics") == "real"
                                                                for r in data.runs) else ".")))
    return out


def run_facts(data: ReportData) -> list[RunFacts]:
    out = []
    for r in data.runs:
        fp = r.summary["fingerprint"]
        env, model, suite, cs = fp["environment"], fp["model"], fp["suite"], fp["case_set"]
        gen = r.summary.get("generation") or {}
        project = env.get("project") or {}
        model_desc = model.get("source", "?") + (f" {model.get('id')}" if model.get("id") else "") + \
            (f" @ {model.get('revision')}" if model.get("revision") else "")
        rows = [
            ("run", f"{r.run_id} · {r.path}"),
            ("hardware", f"{r.hardware_class}" + (f" (table: {r.gpu.name})" if r.gpu else "")),
            ("weights", f"model {r.summary['weights'].get('model')}; metrics {r.summary['weights'].get('metrics')}"),
            ("model", model_desc),
            ("suite", f"{suite.get('name')} {suite.get('fingerprint')}"),
            ("case set", f"{cs.get('name')} ({cs.get('cases')} cases) {cs.get('fingerprint')}"),
            ("generation", (f"{output_size_label(gen)}, {gen.get('steps')} steps, true CFG "
                            f"{gen.get('true_cfg_scale')}")),
            ("environment", f"python {env.get('python')}, torch CUDA {env.get('torch_cuda')}, driver {env.get('driver')}, "
                            + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)),
            ("project commit", f"{project.get('commit')}" + (" (dirty working tree)" if project.get("dirty") else "")),
            ("complete", f"{r.summary.get('recorded_items')} of {r.summary.get('planned_items')} items recorded"
                         + ("" if r.summary.get("complete") else " — INCOMPLETE")),
            ("finished", f"{r.summary.get('finished_at')}"),
        ]
        out.append(RunFacts(r.label, rows))
    return out


def floor_flag_lines(data: ReportData) -> list[str]:
    lines = []
    for col, f in data.flags:
        fmt = T.fmt_bytes if ("peak" in f.what or "bytes" in f.what) else T.fmt_s
        lines.append(f"{col.key}: {f.what} {fmt(f.measured)} is below its floor {fmt(f.floor)} "
                     f"({T.fmt_ratio(f.ratio)}) at {f.where}")
    if len(lines) > 30:
        lines = lines[:30] + [f"… and {len(lines) - 30} more"]
    return lines


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("qie_bench.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.globals["arrow"] = T.arrow
    return env


def build_context(data: ReportData, *, title: str | None = None, gallery_cases: int | None = 40,
                  thumb_px: int = 224, signoff: Any | None = None) -> PageContext:
    suites = list(dict.fromkeys(r.summary["fingerprint"]["suite"].get("name") for r in data.runs))
    hw = list(dict.fromkeys(r.label for r in data.runs))
    title = title or (f"qie-bench {'sign-off' if signoff else 'report'}: {', '.join(s for s in suites if s)}")
    cs = data.runs[0].summary["fingerprint"]["case_set"]
    subtitle = (f"{len(data.runs)} run{'s' if len(data.runs) > 1 else ''} on {', '.join(hw)}"
                + (" — hardware comparison" if data.hardware_comparison else "")
                + f" · case set {cs.get('name')} ({cs.get('cases')} cases) · "
                + f"{len({c.variant for c in data.columns})} variants")
    return PageContext(
        title=title, subtitle=subtitle,
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        banners=weights_banners(data), data=data, tables=T.all_tables(data), plots=[*all_plots(data), *([plot_chains(data)] if has_chains(data) else [])],
        gallery=build_gallery(data, gallery_cases, thumb_px), run_facts=run_facts(data),
        floor_flags=floor_flag_lines(data), signoff=signoff)


def render_html(ctx: PageContext) -> str:
    return _env().get_template("report.html.j2").render(ctx=ctx, version=__version__)


def report_artefacts(ctx: PageContext) -> list[tuple[str, Path, str, int]]:
    """(role, path, sha256, size) of every file the page's numbers and images come from."""
    out: list[tuple[str, Path, str, int]] = []
    for r in ctx.data.runs:
        for name in ("summary.json", "cases.jsonl", "scores.jsonl", "run.json"):
            p = r.path / name
            if p.is_file():
                out.append((f"{r.label}: {name}", p, file_sha256(p), p.stat().st_size))
    for p in ctx.gallery.images:
        if p.is_file():
            out.append(("image shown", p, file_sha256(p), p.stat().st_size))
    return out

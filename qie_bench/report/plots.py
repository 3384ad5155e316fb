"""The report's plots (matplotlib, Agg backend), each returned as an embeddable PNG data URI.

Every plot reads only `ReportData`; a plot with nothing to show returns None and the page says
why instead of drawing an empty frame.
"""

from __future__ import annotations

import base64
import io
import statistics
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from .data import Column, ReportData, headline_metrics, num

GiB = 2**30
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 110
_MPL = tuple(int(x) for x in matplotlib.__version__.split(".")[:2] if x.isdigit())


@dataclass(frozen=True)
class Plot:
    title: str
    uri: str | None  # data:image/png;base64,...
    caption: str
    alt: str


def _uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: plt.Axes) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)


def variant_colors(data: ReportData) -> dict[str, str]:
    names = list(dict.fromkeys(c.variant for c in data.columns))
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(names)}


def run_markers(data: ReportData) -> dict[str, str]:
    return {r.label: MARKERS[i % len(MARKERS)] for i, r in enumerate(data.runs)}


def _short(col: Column, data: ReportData) -> str:
    return col.key if len(data.runs) > 1 else col.variant


def peak_memory(col: Column) -> tuple[float | None, str]:
    """The headline peak-memory figure of a column and what it is."""
    for key, what in (("peak_vram_bytes", "NVML device"), ("torch_peak_reserved_bytes", "allocator reserved"),
                      ("rss_peak_bytes", "RSS (CPU)")):
        v = col.value(key)
        if v is not None:
            return v, what
    return None, "—"


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both memory (lower) and quality."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = False
        for j, (x2, y2) in enumerate(points):
            if j == i:
                continue
            better_y = y2 >= y if higher_is_better else y2 <= y
            strictly = x2 < x or (y2 > y if higher_is_better else y2 < y)
            if x2 <= x and better_y and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def plot_pareto(data: ReportData) -> Plot:
    metric = data.primary_metric
    direction = data.metric_directions.get(metric) if metric else "lower"
    ylabel = metric if metric else "latency P50 (s)"
    title = f"{'Quality' if metric else 'Latency'} vs peak memory"
    colors, markers = variant_colors(data), run_markers(data)
    pts, cols, kinds = [], [], set()
    refs = []  # baselines without a value of a *_vs_baseline metric (they are its reference)
    for col in data.columns:
        mem, kind = peak_memory(col)
        y = col.metric_mean(metric) if metric else col.value("latency_p50_s")
        if mem is not None and col.is_baseline and (y is None or not np.isfinite(y)):
            refs.append((mem / GiB, col))
            kinds.add(kind)
            continue
        if mem is None or y is None or not np.isfinite(y):
            continue
        pts.append((mem / GiB, y))
        cols.append(col)
        kinds.add(kind)
    if not pts:
        return Plot(title, None, "no variant has both a peak-memory figure and a quality value", title)
    higher = direction == "higher"
    front = pareto_front(pts, higher)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    fx = sorted((pts[i] for i in front), key=lambda p: p[0])
    if len(fx) > 1:
        ax.step([p[0] for p in fx], [p[1] for p in fx], where="post", color="#444", linewidth=1, linestyle="--",
                label="Pareto front", zorder=1)
    for i, ((x, y), col) in enumerate(zip(pts, cols)):
        on = i in front
        ax.scatter([x], [y], s=90 if on else 50, marker=markers[col.run.label], color=colors[col.variant],
                   edgecolors="black" if on else "none", linewidths=1.4, zorder=3)
        ax.annotate(_short(col, data) + (" ★" if on else ""), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    for x, col in refs:
        ax.axvline(x, color=colors[col.variant], linestyle=":", linewidth=1.2)
        ax.annotate(f"{_short(col, data)} (reference)", (x, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=8, color=colors[col.variant], xytext=(-10, 0), textcoords="offset points", va="bottom")
    ax.set_xlabel(f"peak memory, GiB ({', '.join(sorted(kinds))})", fontsize=9)
    arrow = "↑ better" if higher else "↓ better"
    ax.set_ylabel(f"{ylabel} ({arrow})", fontsize=9)
    ax.set_xlim(left=0, right=max([p[0] for p in pts] + [x for x, _ in refs]) * 1.25 or 1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.4g"))
    _style(ax)
    if len(fx) > 1:
        ax.legend(fontsize=8, loc="best")
    if refs:
        why_ref = " Dotted vertical lines: baseline variants, the reference of the *_vs_baseline metric (no value of their own)."
    else:
        why_ref = ""
    why = (f"{metric}: {'higher' if higher else 'lower'} is better.{why_ref}" if metric
           else "No quality metric in these runs: latency P50 is plotted instead (lower is better).")
    return Plot(title, _uri(fig), f"Each point is a variant on one run; ★ and a black outline mark the Pareto front "
                                  f"(no other variant uses less memory AND scores better). {why}", title)


def plot_latency(data: ReportData) -> Plot:
    title = "Latency distribution per variant"
    cols = [c for c in data.columns if c.latencies]
    if not cols:
        return Plot(title, None, "no OK record has a latency", title)
    colors = variant_colors(data)
    fig, ax = plt.subplots(figsize=(7.2, 0.5 + 0.45 * len(cols) + 0.6))
    values = [c.latencies for c in cols]
    kw = {"orientation": "horizontal"} if _MPL >= (3, 10) else {"vert": False}
    bp = ax.boxplot(values, widths=0.55, patch_artist=True, showfliers=False,
                    medianprops={"color": "black", "linewidth": 1.4}, **kw)
    for patch, c in zip(bp["boxes"], cols):
        patch.set_facecolor(colors[c.variant])
        patch.set_alpha(0.35)
    rng = np.random.default_rng(0)
    for i, (v, c) in enumerate(zip(values, cols), start=1):
        ax.scatter(v, i + rng.uniform(-0.15, 0.15, len(v)), s=9, color=colors[c.variant], alpha=0.8, zorder=3)
    ax.set_yticks(range(1, len(cols) + 1), [_short(c, data) for c in cols], fontsize=8)
    ax.invert_yaxis()
    lo, hi = min(min(v) for v in values), max(max(v) for v in values)
    if lo > 0 and hi / lo > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency of one edit, s (every OK repeat)", fontsize=9)
    _style(ax)
    return Plot(title, _uri(fig), "Boxes: quartiles and median; dots: every OK repeat of every case.", title)


def plot_oom(data: ReportData) -> Plot:
    title = "OOM rate per variant"
    budgets = {r.label: (r.summary.get("measurement") or {}).get("memory_budget") for r in data.runs}
    cols = [c for c in data.columns if c.value("oom_rate") is not None]
    if not cols:
        return Plot(title, None, "no variant has an OOM rate (no attempts recorded)", title)
    if all(c.value("oom_rate") == 0 for c in cols) and not any(budgets.values()):
        return Plot(title, None, "no variant ran out of memory: every OOM rate is 0%", title)
    colors = variant_colors(data)
    fig, ax = plt.subplots(figsize=(7.2, 0.5 + 0.4 * len(cols) + 0.6))
    rates = [c.value("oom_rate") * 100 for c in cols]
    labels = [_short(c, data) + (f" @ {budgets[c.run.label]} budget" if budgets.get(c.run.label) else "") for c in cols]
    ax.barh(range(len(cols)), rates, color=[colors[c.variant] for c in cols], alpha=0.85)
    for i, r in enumerate(rates):
        ax.text(r + 1, i, f"{r:.0f}%", va="center", fontsize=8)
    ax.set_yticks(range(len(cols)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("OOM attempts / attempts, %", fontsize=9)
    _style(ax)
    caption = "OOM rate = OOM attempts / (OK + OOM + ERROR + TIMEOUT)."
    if any(budgets.values()):
        caption += " Runs with a memory budget emulate a smaller GPU by capping the allocator."
    return Plot(title, _uri(fig), caption, title)


def plot_categories(data: ReportData, metric: str | None = None) -> Plot:
    """Mean of ``metric`` (default: the primary fidelity metric; latency when there is none) per
    case category and variant."""
    metric = metric or data.primary_metric
    what = metric or "latency P50 (s)"
    title = f"Per-category {'quality' if metric else 'latency'}: {what}"
    if not data.categories:
        return Plot(title, None, "the case set was not found, so case categories are unknown", title)
    cats = [c for c in dict.fromkeys(data.categories.values())]
    cols = data.columns
    grid = np.full((len(cats), len(cols)), np.nan)
    for j, col in enumerate(cols):
        if metric:
            per_case = col.metric_by_case(metric)
        else:
            by: dict[str, list[float]] = {}
            for r in col.ok_records:
                if r.latency_s is not None:
                    by.setdefault(r.case_id, []).append(float(r.latency_s))
            per_case = {k: statistics.median(v) for k, v in by.items()}
        for i, cat in enumerate(cats):
            vals = [v for cid, v in per_case.items() if data.categories.get(cid) == cat and np.isfinite(v)]
            if vals:
                grid[i, j] = float(np.mean(vals))
    keep = [j for j in range(len(cols)) if not np.all(np.isnan(grid[:, j]))]
    dropped = [cols[j] for j in range(len(cols)) if j not in keep]
    if not keep:
        return Plot(title, None, f"no per-case {what} values", title)
    grid, cols = grid[:, keep], [cols[j] for j in keep]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(cols) + 2.8), 0.38 * len(cats) + 1.4))
    higher = data.metric_directions.get(metric) == "higher" if metric else False
    cmap = "RdYlGn" if higher else "RdYlGn_r"
    im = ax.imshow(grid, aspect="auto", cmap=cmap)
    for i in range(len(cats)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.4g}", ha="center", va="center", fontsize=7.5)
    ax.set_yticks(range(len(cats)), cats, fontsize=8)
    ax.set_xticks(range(len(cols)), [_short(c, data) for c in cols], fontsize=8, rotation=20, ha="right")
    cbar = fig.colorbar(im, ax=ax, shrink=0.8, format=matplotlib.ticker.FormatStrFormatter("%.4g"))
    cbar.ax.tick_params(labelsize=7)
    caption = (f"Mean {metric} per case category ({'higher' if higher else 'lower'} is better; green is better)."
               if metric else "No quality metric in these runs: median latency per category instead (green is faster).")
    if dropped:
        caption += f" Not shown (no {what} values): {', '.join(_short(c, data) for c in dropped)}."
    return Plot(title, _uri(fig), caption, title)


def plot_steps(data: ReportData) -> Plot:
    title = "Per-step latency"
    colors, markers = variant_colors(data), run_markers(data)
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    drawn = 0
    for col in data.columns:
        by_index: dict[int, list[float]] = {}
        for r in col.ok_records:
            for i, s in enumerate(r.step_s or []):
                v = num(s)
                if v is not None:
                    by_index.setdefault(i, []).append(v)
        if not by_index:
            continue
        idx = sorted(by_index)
        med = [statistics.median(by_index[i]) for i in idx]
        q1 = [float(np.percentile(by_index[i], 25)) for i in idx]
        q3 = [float(np.percentile(by_index[i], 75)) for i in idx]
        x = [i + 1 for i in idx]
        ax.plot(x, med, marker=markers[col.run.label], color=colors[col.variant], label=_short(col, data), linewidth=1.4,
                markersize=5)
        ax.fill_between(x, q1, q3, color=colors[col.variant], alpha=0.15)
        if col.floors and col.floors.step_floor_p50:
            ax.axhline(col.floors.step_floor_p50, color=colors[col.variant], linestyle=":", linewidth=1)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return Plot(title, None, "no OK record has per-step times", title)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("denoising step", fontsize=9)
    ax.set_ylabel("step time, s", fontsize=9)
    ax.set_ylim(bottom=0)
    _style(ax)
    ax.legend(fontsize=8, loc="best")
    return Plot(title, _uri(fig), "Median time of each denoising step over every OK repeat (band: quartiles); "
                                  "dotted lines: the step's physical floor where the GPU is known.", title)


def all_plots(data: ReportData) -> list[Plot]:
    headline = [plot_categories(data, m) for m in headline_metrics(data) if m != data.primary_metric]
    return [plot_pareto(data), plot_latency(data), plot_oom(data), plot_categories(data), *headline, plot_steps(data)]


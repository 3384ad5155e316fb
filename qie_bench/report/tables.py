"""The report's tables as plain data (header + rows of cells), rendered by `html.py` and
`markdown.py` alike so that both show exactly the same numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..results import Measure, Unit
from .data import COMPONENTS, MEASURES, OPTIONAL_COLUMNS, Column, ReportData
from ..units import fmt_bytes  # noqa: F401  (re-exported for callers of this module)

GiB = 2**30


@dataclass(frozen=True)
class Cell:
    text: str
    sub: str = ""  # a second line: the change against the baseline, a note
    cls: str = ""  # 'good', 'bad', 'flag', 'muted', 'base'
    title: str = ""  # hover text (HTML only)
    numeric: bool = True


@dataclass
class Table:
    id: str
    title: str
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    header_titles: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    if s == 0:
        return "0 s"
    if s < 1e-6:
        return f"{s * 1e9:.3g} ns"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 600:
        return f"{s:.3g} s"
    return f"{s / 60:.1f} min"


def fmt_rate(r: float | None) -> str:
    return "—" if r is None else f"{r * 100:.1f}%"


def fmt_num(v: float | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "∞" if v > 0 else ("−∞" if v < 0 else "nan")
    return f"{v:.4g}"


def fmt_value(kind: str, v: float | None) -> str:
    return {"s": fmt_s, "bytes": fmt_bytes, "rate": fmt_rate}.get(kind, fmt_num)(v)


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "—"
    return f"×{r:#.3g}" if r < 100 else f"×{r:,.0f}"


def fmt_flops(f: float | None) -> str:
    if f is None:
        return "—"
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if f >= scale:
            return f"{f / scale:.3g} {unit}"
    return f"{f:.3g} FLOP"


def arrow(direction: str | None) -> str:
    return {"higher": "↑", "lower": "↓"}.get(direction or "", "")


def change_cell(value: float | None, base: float | None, kind: str, direction: str | None) -> tuple[str, str]:
    """('+12.3%' or '+0.021', css class) for a value against its baseline; relative for
    measurements, absolute for quality metrics (whose units are their own)."""
    if value is None or base is None or not (math.isfinite(value) and math.isfinite(base)):
        return "", ""
    if kind == "rate":
        delta = (value - base) * 100
        text = f"{delta:+.1f} pt"
    elif kind == "metric":
        delta = value - base
        text = f"{delta:+.3g}"
    else:
        if base == 0:
            return ("±0" if value == 0 else "new"), ""
        delta = (value - base) / abs(base)
        text = f"{delta * 100:+.1f}%"
    if delta == 0 or direction is None:
        return text, ""
    better = delta < 0 if direction == "lower" else delta > 0
    return text, "good" if better else "bad"


def _ident(col: Column, data: ReportData, *, with_status: bool = False) -> list[Cell]:
    cells = [Cell(col.run.label, numeric=False), Cell(col.variant, sub="baseline" if col.is_baseline else "",
                                                      cls="base" if col.is_baseline else "", numeric=False)]
    if with_status:
        ok = col.summary.get("complete")
        cells.append(Cell(col.status_line, cls="" if ok else "bad", numeric=False))
    return cells


# ---------------------------------------------------------------------------------------------
# Tables


def _measure_cell(m: Measure, v: float | None) -> str:
    return {Unit.SECONDS: fmt_s, Unit.BYTES: fmt_bytes, Unit.RATIO: fmt_rate}.get(m.unit, m.format)(v)


def speed_memory_table(data: ReportData) -> Table:
    shown = [m for m in MEASURES
             if m.key not in OPTIONAL_COLUMNS or any(col.value(m.key) is not None for col in data.columns)]
    header = ["hardware", "variant", "status"] + [m.label for m in shown]
    rows = []
    for col in data.columns:
        base = data.baseline_of(col)
        row = _ident(col, data, with_status=True)
        for m in shown:
            v = col.value(m.key)
            sub, cls = ("", "")
            if base is not None and base is not col:
                sub, cls = change_cell(v, base.value(m.key), "rate" if m.unit is Unit.RATIO else m.unit.value,
                                       m.direction.value)
            row.append(Cell(_measure_cell(m, v), sub, cls, title=m.key))
        rows.append(row)
    throttled = [f"{col.run.label} {col.variant}" for col in data.columns if (col.summary.get("gpu") or {}).get("throttled")]
    note = ("Latency is one whole edit (encode, denoise, decode); per step is one denoising step (both CFG "
            "passes); first call is the worker's first edit (compilation, lazy kernels; kept out of the latency), "
            "load + build the time to a ready model, forwards the transformer forwards that computed every block "
            "(a step cache skips some). Energy is NVML's counter read around each timed edit. Peaks are the maximum "
            "over OK records. The second line is the change against the run's baseline variant (green better, red "
            "worse). — means not measured (a CPU run has no VRAM or energy counter).")
    if throttled:
        note += (" WARNING: the GPU slowed down (power or thermal throttling) while measuring "
                 + ", ".join(throttled) + ": their latencies are not steady-state figures.")
    return Table("speed", "Speed and memory", header, rows, note, header_titles=["", "", ""] + [m.key for m in shown])


def quality_table(data: ReportData) -> Table | None:
    if not data.metrics:
        return None
    header = ["hardware", "variant", "cases scored"] + [f"{m} {arrow(data.metric_directions.get(m))}" for m in data.metrics]
    rows = []
    for col in data.columns:
        base = data.baseline_of(col)
        n = max([((col.summary.get("metrics") or {}).get(m) or {}).get("n", 0) for m in data.metrics] or [0])
        row = _ident(col, data) + [Cell(str(n))]
        for m in data.metrics:
            v = col.metric_mean(m)
            sub, cls = ("", "")
            if base is not None and base is not col:
                sub, cls = change_cell(v, base.metric_mean(m), "metric", data.metric_directions.get(m))
            row.append(Cell(fmt_num(v), sub, cls))
        rows.append(row)
    return Table("quality", "Quality", header, rows,
                 "Means over cases (repeat 0 of each OK case). ↑ higher is better, ↓ lower is better; the second "
                 "line is the absolute change against the run's baseline variant. *_vs_baseline metrics compare "
                 "with the baseline variant's own output, so the baseline itself has none.")


def hardware_table(data: ReportData) -> Table | None:
    """Each variant across hardware (only when the runs span several hardware classes)."""
    if not data.hardware_comparison:
        return None
    runs = data.runs
    variants = list(dict.fromkeys(c.variant for c in data.columns))
    header = ["variant"]
    for r in runs:
        header += [f"{r.label}: latency P50", f"{r.label}: peak memory", f"{r.label}: OOM rate"]
    rows = []
    from .plots import peak_memory

    for v in variants:
        row = [Cell(v, numeric=False)]
        ref = None
        for r in runs:
            col = next((c for c in data.columns if c.run is r and c.variant == v), None)
            if col is None:
                row += [Cell("not run", cls="muted")] * 3
                continue
            lat = col.value("latency_p50_s")
            mem, kind = peak_memory(col)
            sub = ""
            if ref is None:
                ref = lat
            elif lat and ref:
                sub = f"×{lat / ref:.2f} vs {runs[0].label}"
            row += [Cell(fmt_s(lat), sub), Cell(fmt_bytes(mem), kind if mem is not None else ""),
                    Cell(fmt_rate(col.value("oom_rate")))]
        rows.append(row)
    return Table("hardware", "Hardware comparison", header, rows,
                 "The same variant on each hardware class. Latency ratios are against the first run given.")


def _formats_label(col: Column) -> str:
    fl = col.floors
    if not fl:
        return "—"
    fm = fl.formats
    if len({fm[c].label for c in COMPONENTS if c in fm}) == 1:
        return next(iter(fm.values())).label
    return ", ".join(f"{c.replace('_', ' ')}: {fm[c].label}" for c in COMPONENTS if c in fm)


def _ratio_cell(ratio: float | None) -> Cell:
    if ratio is None:
        return Cell("—", cls="muted")
    if ratio < 1:
        return Cell(fmt_ratio(ratio), "BEATS FLOOR", "flag", "below the physical floor: a measurement error")
    return Cell(fmt_ratio(ratio))


def time_floor_table(data: ReportData) -> Table:
    header = ["hardware", "variant", "weights held as", "transformer work / edit", "latency P50", "floor",
              "measured / floor", "per step P50", "step floor", "measured / floor", "limited by"]
    show_measured = any(c.floors and c.floors.latency_floor_measured_peak_p50 for c in data.columns)
    if show_measured:
        header.insert(6, "floor at measured peak")
    rows = []
    for col in data.columns:
        fl = col.floors
        row = _ident(col, data) + [Cell(_formats_label(col), numeric=False)]
        row.append(Cell(fmt_flops(fl.edit_flops_p50 if fl else None)))
        row.append(Cell(fmt_s(col.value("latency_p50_s"))))
        row.append(Cell(fmt_s(fl.latency_floor_p50) if fl and fl.latency_floor_p50 else "—",
                        cls="" if fl and fl.latency_floor_p50 else "muted"))
        if show_measured:
            row.append(Cell(fmt_s(fl.latency_floor_measured_peak_p50) if fl and fl.latency_floor_measured_peak_p50 else "—"))
        row.append(_ratio_cell(fl.latency_ratio_p50 if fl else None))
        row.append(Cell(fmt_s(col.value("step_p50_s"))))
        row.append(Cell(fmt_s(fl.step_floor_p50) if fl and fl.step_floor_p50 else "—"))
        row.append(_ratio_cell(fl.step_ratio_p50 if fl else None))
        row.append(Cell(fl.bound if fl and fl.bound else ("—" if not fl or not fl.notes else fl.notes[-1]),
                        numeric=False, cls="" if fl and fl.bound else "muted"))
        rows.append(row)
    return Table("time-floors", "Time: measured beside the physical floor", header, rows,
                 "Floor = transformer passes × max(FLOPs ÷ peak matmul rate, weight bytes ÷ memory bandwidth), from the "
                 "model configuration, each case's tokens (output latent + every reference image at ~1 MP + text), "
                 "steps and true CFG — the least time any implementation could take on this GPU. Ratios are the "
                 "median over OK records of measured ÷ that record's floor. A ratio below ×1 is impossible: it flags "
                 "a measurement error.")


def memory_floor_table(data: ReportData) -> Table:
    header = ["hardware", "variant", "weights held as", "peak memory", "compared as", "floor (all weights + hidden states)",
              "lowest measured / floor", "weights", "weights floor", "measured / floor"]
    rows = []
    for col in data.columns:
        fl = col.floors
        mem_key = {"allocator allocated": "torch_peak_allocated_bytes", "allocator reserved": "torch_peak_reserved_bytes",
                   "NVML process": "peak_vram_process_bytes", "NVML device": "peak_vram_bytes",
                   "RSS": "rss_peak_bytes"}.get(fl.memory_kind or "", "")
        row = _ident(col, data) + [Cell(_formats_label(col), numeric=False)]
        row.append(Cell(fmt_bytes(col.value(mem_key)) if mem_key else "—"))
        row.append(Cell(fl.memory_kind or "—", numeric=False, cls="muted"))
        row.append(Cell(fmt_bytes(fl.memory_floor_max)))
        row.append(_ratio_cell(fl.memory_ratio_min))
        row.append(Cell(fmt_bytes(col.value("weights_bytes"))))
        row.append(Cell(fmt_bytes(fl.weights_floor)))
        row.append(_ratio_cell(fl.weights_ratio))
        rows.append(row)
    return Table("memory-floors", "Memory: measured beside the physical floor", header, rows,
                 "Floor = every parameter at its storage precision (NF4: 0.5 byte; quantization variants keep some "
                 "layers in 16-bit, counted at 16-bit) plus one copy of the hidden states; the harness keeps every "
                 "component on the device, so every peak (NVML device and process, allocator allocated and reserved; "
                 "RSS on a CPU) must be at least this; all are checked, the tightest is shown. Quantization state (scales) is not counted, so a small excess "
                 "over ×1 is expected.")


def projection_table(data: ReportData) -> Table | None:
    """Every variant's weight formats on the released model, on every known GPU: fits or not,
    and the least time an edit could take there."""
    if not data.projections:
        return None
    from .gpus import GPUS

    header = ["GPU", "memory"] + [p.variant for p in data.projections]
    rows = []
    for i, g in enumerate(GPUS):
        row = [Cell(g.name + (" · consumer" if g.consumer else ""), numeric=False), Cell(f"{g.memory_gib:.0f} GiB")]
        for p in data.projections:
            fit = p.fits[i]
            cls = {"fits": "good", "needs model offload": "warn", "needs block offload": "bad"}[fit.verdict]
            detail = [f"≥ {fmt_s(fit.edit_floor_s)} per edit ({fit.time.bound})"]
            if fit.streamed_per_forward_bytes:
                detail.append(f"streams ≥ {fmt_bytes(fit.streamed_per_forward_bytes)} per forward")
            elif fit.host_bytes_per_edit:
                detail.append(f"moves {fmt_bytes(fit.host_bytes_per_edit)} over PCIe per edit")
            row.append(Cell(fit.verdict, " · ".join(detail), cls, numeric=False,
                            title=f"all weights resident {fmt_bytes(fit.memory.resident_bytes)}; largest component "
                                  f"{fmt_bytes(fit.memory.model_offload_bytes)}"))
        rows.append(row)
    w = data.projections[0].workload
    formats = "; ".join(f"{p.variant}: {p.formats_label} — all weights {fmt_bytes(p.fits[0].memory.resident_bytes)}, "
                        f"transformer {fmt_bytes(p.fits[0].memory.transformer_bytes)}" for p in data.projections)
    same = all(p.workload == w for p in data.projections)
    work = (f"{w.steps} steps{' with true CFG (2 transformer passes per step)' if w.true_cfg else ''}, "
            f"{w.image_tokens:,} image + {w.text_tokens:,} text tokens per pass" if same else "each run's own settings")
    return Table("projections", "What each variant needs on each known GPU (the released 20.4 B model)", header, rows,
                 f"The released model with each variant's weight formats ({formats}) at the suite's settings: {work} "
                 "(the suite's output size plus one ~1 MP reference image). fits = every component resident; needs model "
                 "offload = only one component at a time fits; needs block offload = a component alone does not fit: "
                 "part of the transformer streams over PCIe in every forward, or the text encoder once per edit. Times are hard floors from spec peak rates "
                 "(compute, memory bandwidth, PCIe); real runs are slower.")


OFFLOAD_ORDER = ("none", "model", "group", "sequential")  # lightest first: what a user would pick


def budget_fit_table(data: ReportData) -> Table | None:
    """Which variant fits which memory budget, and how: per variant and budget, the lightest
    offload mode that ran every case, with its latency and NVML process peak; otherwise what
    each mode tried produced (OOM, and in which stage of the edit it ran out)."""
    budgeted = [c for c in data.columns if c.run.memory_budget]
    if not budgeted:
        return None
    from ..suite import size_text

    budgets = sorted({c.run.memory_budget for c in budgeted})
    variants = list(dict.fromkeys(c.variant for c in budgeted))
    rows = []
    for variant in variants:
        row = [Cell(variant, numeric=False)]
        for budget in budgets:
            mine = [c for c in budgeted if c.variant == variant]
            tried = sorted((c for c in mine if c.run.memory_budget == budget), key=_lightest_first)
            # What ran under a smaller budget runs under this one too (fitting is monotone).
            fits = sorted((c for c in mine if c.run.memory_budget <= budget
                           and c.records and all(r.ok for r in c.records)), key=_lightest_first)
            if fits:
                c = fits[0]
                peak = c.value("peak_vram_process_bytes") or c.value("peak_vram_bytes")
                where = "" if c.run.memory_budget == budget else f" · measured at {size_text(c.run.memory_budget)}"
                row.append(Cell(f"{c.run.offload} offload" if c.run.offload != "none" else "no offload",
                                f"{fmt_s(c.value('latency_p50_s'))} · {fmt_bytes(peak)}{where}",
                                "good" if c.run.offload == "none" else "warn", title=c.key, numeric=False))
            elif tried:
                # "Does not fit" only once the heaviest mode failed too; otherwise a lighter-only
                # attempt must not read as a verdict.
                final = any(c.run.offload in ("group", "sequential") for c in tried)
                out_of_memory = any(r.status.value == "OOM" for c in tried for r in c.records)
                verdict = ("does not fit" if final and out_of_memory else "no tried mode fits" if out_of_memory
                           else "failed (not memory)")
                row.append(Cell(verdict, "; ".join(_failure_summary(c) for c in tried), "bad", numeric=False))
            else:
                row.append(Cell("—", "not tried", "muted", numeric=False))
        rows.append(row)
    return Table("budgets", "Memory budgets: what fits, and how", ["variant"] + [f"{size_text(b)} budget" for b in budgets], rows,
                 "Each cell is the lightest offload mode that ran every case under that budget (no offload, then "
                 "model CPU offload, then group offload of transformer blocks and text-encoder layers), with its "
                 "median latency and NVML process peak; where none did, what each mode tried produced and in which "
                 "stage of the edit it ran out. A mode that ran under a smaller budget is shown for the larger "
                 "ones too (marked 'measured at'). Budgets are emulated by capping the allocator at budget − CUDA "
                 "context − 256 MiB; a mode not listed was not tried.")


def _lightest_first(col: Column) -> tuple[int, int]:
    """Lightest offload mode first; within one, the run under the largest budget (its numbers are
    the least squeezed)."""
    mode = col.run.offload
    return (OFFLOAD_ORDER.index(mode) if mode in OFFLOAD_ORDER else len(OFFLOAD_ORDER), -(col.run.memory_budget or 0))


def _failure_summary(col: Column) -> str:
    bad = [r for r in col.records if not r.ok]
    if not bad:
        return f"{col.run.offload}: not run"
    r = bad[0]
    where = (r.value("at_failure") or {}).get("phase")
    return f"{col.run.offload}: {r.status.value}" + (f" in {where}" if where else "")


def drop_empty_columns(t: Table | None, keep: int = 3) -> Table | None:
    """Drop columns that are '—' in every row (e.g. VRAM in a CPU-only report), naming them in the
    caption so the reader knows they were not measured rather than forgotten."""
    if t is None or not t.rows:
        return t
    empty = [i for i in range(keep, len(t.header)) if all(row[i].text == "—" and not row[i].sub for row in t.rows)]
    if not empty:
        return t
    names = [t.header[i] for i in empty]
    cols = [i for i in range(len(t.header)) if i not in empty]
    return Table(t.id, t.title, [t.header[i] for i in cols], [[row[i] for i in cols] for row in t.rows],
                 (t.caption + " " if t.caption else "") + f"Empty in every row, so hidden: {', '.join(names)}.",
                 [t.header_titles[i] for i in cols] if t.header_titles else [])


def all_tables(data: ReportData) -> dict[str, Table | list[Table] | None]:
    return {"speed": drop_empty_columns(speed_memory_table(data)), "budgets": budget_fit_table(data),
            "quality": quality_table(data),
            "hardware": hardware_table(data), "time_floors": drop_empty_columns(time_floor_table(data)),
            "memory_floors": memory_floor_table(data),
            "projections": projection_table(data)}

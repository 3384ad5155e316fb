"""The per-case gallery: source | baseline | each variant, worst cases first.

Images are embedded as downscaled thumbnails (JPEG, or PNG when small); the full-size files stay
in the run directory and the sign-off records their sha256.
"""

from __future__ import annotations

import base64
import io
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..results import Record
from .data import Column, ReportData, headline_metrics
from .tables import fmt_num, fmt_s

THUMB_PX = 224


@dataclass
class Thumb:
    label: str
    uri: str | None
    path: Path | None
    lines: list[str] = field(default_factory=list)
    cls: str = ""  # 'bad' for a failed case, 'base' for the baseline
    title: str = ""


@dataclass
class GalleryRow:
    case_id: str
    category: str
    language: str
    instruction: str
    reason: str  # why it is ranked where it is
    sources: list[Thumb]
    outputs: list[Thumb]
    expected_text: str | None = None  # what a text case's output must show (each output's line says what OCR read)


@dataclass
class Gallery:
    rows: list[GalleryRow]
    omitted: int
    order: str  # how cases are ranked
    columns: list[str]
    images: list[Path]  # every full-size file shown, for the sign-off's hashes


class ThumbCache:
    def __init__(self, px: int = THUMB_PX) -> None:
        self.px = px
        self._cache: dict[Path, str | None] = {}

    def uri(self, path: Path | None) -> str | None:
        if path is None:
            return None
        if path not in self._cache:
            self._cache[path] = thumbnail_uri(path, self.px)
        return self._cache[path]


def thumbnail_uri(path: Path, px: int = THUMB_PX) -> str | None:
    """A data URI of the image downscaled to at most `px` on its longer side (never upscaled):
    PNG for small images (exact pixels), JPEG quality 88 otherwise. None if it cannot be read."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError):
        return None
    im.thumbnail((px, px), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if im.width * im.height <= 128 * 128:
        im.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        im.save(buf, format="JPEG", quality=88, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _case_records(col: Column, case_id: str) -> list[dict]:
    # a chained case's records in turn order (its row shows the last turn: the drift so far)
    return sorted((r for r in col.records if r.case_id == case_id), key=lambda r: (r.turn or 0, r.repeat))


def _problem(records: list[dict]) -> str | None:
    for r in records:
        if not r.ok:
            err = (r.error or "").strip().splitlines()
            return r.status.value + (f": {err[-1][:120]}" if err else "")
        if r.output_finite is False:
            return "non-finite output"
        if r.output_constant is True:
            return "constant output"
    return None if records else "no record"


def recognised_text(record: Record, limit: int = 48) -> str | None:
    """What OCR read in a text case's output (``metric_details.text_accuracy.recognised``), as
    one gallery line; None when the record has no OCR detail (not a text case, not scored)."""
    detail = ((record.value("metric_details") or {}).get("text_accuracy") or {})
    if "recognised" not in detail:
        return None
    lines = [str(t) for t in detail.get("recognised") or []]
    text = " / ".join(lines)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"read: “{text}”" if lines else "read: nothing"


def resized_text(note: str) -> str:
    """A record's ``scored_output_resized`` as one gallery line: "scored resized 160x112→451x300"."""
    sizes = dict.fromkeys(re.findall(r"from (\d+x\d+) to (\d+x\d+)", note))
    if not sizes:
        return f"scored resized: {note[:60]}"
    return "scored resized " + ", ".join(f"{a}→{b}" for a, b in sizes)


def _metric_short(name: str) -> str:
    return name.replace("_vs_baseline", " vs base").replace("_outside_mask", " outside mask")


def build_gallery(data: ReportData, max_cases: int | None = 40, px: int = THUMB_PX) -> Gallery:
    metric = data.primary_metric
    direction = data.metric_directions.get(metric) if metric else None
    cols = data.columns
    case_ids: list[str] = []
    for run in data.runs:
        if run.case_set is not None:
            case_ids += [c.id for c in run.case_set.cases]
    for col in cols:
        case_ids += [r.case_id for r in col.records]
    case_ids = list(dict.fromkeys(case_ids))

    col_median = {id(c): (statistics.median(c.latencies) if c.latencies else None) for c in cols}
    ranked = []
    for cid in case_ids:
        failures = [(c, p) for c in cols if (p := _problem(_case_records(c, cid))) is not None]
        if metric:
            vals = [v for c in cols if not c.is_baseline
                    and (v := c.metric_by_case(metric).get(cid)) is not None and not math.isnan(v)]
            if vals:
                worst = min(vals) if direction == "higher" else max(vals)
                badness = -worst if direction == "higher" else worst
                reason = f"worst {metric} {fmt_num(worst)}"
            else:
                badness, reason = -math.inf, f"no {metric}"
        else:
            rel = []
            for c in cols:
                lat = [float(r.latency_s) for r in _case_records(c, cid) if r.ok and r.latency_s]
                if lat and col_median[id(c)]:
                    rel.append(statistics.median(lat) / col_median[id(c)])
            badness = max(rel) if rel else -math.inf
            reason = f"{badness:.2f}× its variant's median latency" if rel else "no latency"
        if failures:
            reason = f"{len(failures)} failed: " + "; ".join(f"{c.variant} {p}" for c, p in failures[:2])
        ranked.append((0 if failures else 1, -badness if badness != -math.inf else math.inf, cid, reason))
    ranked.sort(key=lambda t: (t[0], t[1]))
    order = (f"failed cases first, then by the worst {metric} over the non-baseline variants "
             f"({'lowest' if direction == 'higher' else 'highest'} first)" if metric
             else "failed cases first, then by latency relative to the variant's median (slowest first): "
                  "no fidelity metric in these runs")
    omitted = max(0, len(ranked) - max_cases) if max_cases is not None else 0
    if max_cases is not None:
        ranked = ranked[:max_cases]

    thumbs = ThumbCache(px)
    shown: list[Path] = []
    rows = []
    headline = headline_metrics(data)
    others = [m for m in data.metrics if m != metric and m not in headline]
    shown_metrics = list(dict.fromkeys(([metric] if metric else []) + headline + others[:3]))
    for _, _, cid, reason in ranked:
        case = next((r.case(cid) for r in data.runs if r.case(cid) is not None), None)
        sources = []
        if case is not None:
            for i, p in enumerate(case.image_paths):
                sources.append(Thumb(f"input {i + 1}" if len(case.image_paths) > 1 else "source", thumbs.uri(p), p,
                                     [p.name]))
                shown.append(p)
        outputs = []
        for col in cols:
            recs = _case_records(col, cid)
            last_turn = recs[-1].turn if recs else None
            path = (col.run.output_image(col.variant, f"{cid}@t{last_turn}") if last_turn is not None
                    else col.run.output_image(col.variant, cid))
            problem = _problem(recs)
            lines = []
            if problem:
                lines.append(problem)
            lat = [float(r.latency_s) for r in recs if r.ok and r.latency_s is not None]
            if lat:
                lines.append(f"latency {fmt_s(statistics.median(lat))}")
            r0 = next((r for r in reversed(recs) if r.repeat == 0 and r.ok), None)
            for m in shown_metrics:
                v = r0.metric(m) if r0 is not None else None
                if v is not None:
                    lines.append(f"{_metric_short(m)} {fmt_num(v)}")
            if r0 is not None and (read := recognised_text(r0)) is not None:
                lines.append(read)
            if r0 is not None and r0.scored_output_resized:
                lines.append(resized_text(r0.scored_output_resized))
            label = col.variant + (" (baseline)" if col.is_baseline else "")
            if len(data.runs) > 1:
                label = f"{col.run.label} · {label}"
            outputs.append(Thumb(label, thumbs.uri(path), path, lines, "bad" if problem else ("base" if col.is_baseline else ""),
                                 title=str(path) if path else "no image"))
            if path is not None:
                shown.append(path)
        rows.append(GalleryRow(cid, case.category if case else data.categories.get(cid, "?"),
                               case.language if case else "", case.instruction if case else "(case set not found)",
                               reason, sources, outputs, case.expected_text if case else None))
    columns = ["source"] + [t.label for t in (rows[0].outputs if rows else [])]
    return Gallery(rows, omitted, order, columns, list(dict.fromkeys(shown)))

"""What a report reads: run directories, checked once, with everything the pages show derived here.

A `ReportData` holds one or more runs of the SAME case set (different case sets are refused:
their numbers answer different questions). Each run contributes one `Column` per variant; runs
on different hardware classes make the report a hardware comparison. Every figure shown comes
from the run's own files: `summary.json` for aggregates (exactly as the gate reads them),
`cases.jsonl` for raw latencies, per-step times, per-case metrics and images, and the variants'
build files for storage precisions (which the floors need).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import UserInputError
from ..metrics.registry import REGISTRY
from ..results import Measure, Record, RunDir, from_json_number, measure
from ..suite import parse_bytes, size_text
from ..variants.report import ComponentFormat, VariantReport
from . import floors as F
from .gpus import GPUS, Gpu, match_gpu

COMPONENTS = ("transformer", "text_encoder", "vae")

# Columns of the speed and memory table, by measure key: units, labels and directions come from
# the one measure table (qie_bench.results.measures). Energy and cost columns are shown when a run
# has them (a CPU run has no energy counter; cost needs the suite's prices), forwards when a
# variant counted them.
SPEED_TABLE = ("latency_p50_s", "latency_p95_s", "step_p50_s", "first_call_s", "load_s", "transformer_forwards",
               "energy_j", "mean_power_w", "edits_per_kwh", "cost_per_1000_edits_usd", "peak_vram_bytes",
               "peak_vram_process_bytes", "torch_peak_allocated_bytes", "torch_peak_reserved_bytes", "rss_peak_bytes",
               "oom_rate", "weights_bytes")
OPTIONAL_COLUMNS = frozenset({"energy_j", "mean_power_w", "edits_per_kwh", "cost_per_1000_edits_usd", "first_call_s",
                              "load_s", "transformer_forwards"})
MEASURES: tuple[Measure, ...] = tuple(m for m in (measure(k) for k in SPEED_TABLE) if m is not None)

def fidelity_preference() -> tuple[str, ...]:
    """Fidelity metrics in order of preference for sorting the gallery and the Pareto plot: as
    the metrics declare it (``fidelity_rank``)."""
    return REGISTRY.fidelity_order()


def metric_direction(name: str, descriptions: dict[str, Any]) -> str | None:
    """'higher' or 'lower' (is better): as the metric declared it in the run, else as its class
    declares it in the registry."""
    d = (descriptions.get(name) or {}).get("direction") if isinstance(descriptions.get(name), dict) else None
    if d in ("higher", "lower"):
        return d
    return REGISTRY.direction(name)


def num(value: Any) -> float | None:
    """A summary/record number (None, a float, or "inf"/"nan") as a float or None."""
    if value is None:
        return None
    try:
        return from_json_number(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    """One run directory as the report reads it: the results model's `RunDir` plus the case set
    (for source images, instructions and categories)."""

    rd: RunDir
    case_set: Any | None  # qie_bench.cases.CaseSet, or None when its folder was not found
    case_set_note: str | None
    label: str = ""

    @property
    def path(self) -> Path:
        return self.rd.path

    @property
    def run(self) -> dict[str, Any]:
        return self.rd.run

    @property
    def summary(self) -> dict[str, Any]:
        assert self.rd.summary_json is not None  # RunDir.load requires it
        return self.rd.summary_json

    @property
    def records(self) -> list[Record]:
        return self.rd.records

    @property
    def builds(self) -> dict[str, dict[str, Any]]:
        return self.rd.builds

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]

    @property
    def env(self) -> dict[str, Any]:
        return self.summary["fingerprint"]["environment"]

    @property
    def hardware_class(self) -> str:
        return self.env.get("hardware_class") or "unknown"

    @property
    def gpu(self) -> Gpu | None:
        if not self.hardware_class.startswith("gpu:"):
            return None
        return match_gpu(self.hardware_class)

    @property
    def hardware_name(self) -> str:
        g = self.gpu
        if g is not None:
            return g.name
        kind, _, rest = self.hardware_class.partition(":")
        return f"{kind.upper()} {rest}".strip() if rest else self.hardware_class

    @property
    def model_source(self) -> str:
        return self.summary["fingerprint"]["model"].get("source", "?")

    @property
    def random_model(self) -> bool:
        return self.model_source != "pretrained"

    @property
    def random_metrics(self) -> bool:
        return (self.summary.get("weights") or {}).get("metrics") in ("random", "mixed")

    @property
    def variants(self) -> list[str]:
        return list(self.summary["variants"])

    @property
    def memory_budget(self) -> int | None:
        """The emulated card size in bytes (`--vram-budget`), or None for the whole device.
        Runs before budgets were validated to integers recorded the text ('8GiB')."""
        budget = (self.summary.get("measurement") or {}).get("memory_budget")
        return parse_bytes(budget) if isinstance(budget, str) else budget

    @property
    def offload(self) -> str:
        return (self.summary.get("measurement") or {}).get("offload") or "none"

    @property
    def settings_label(self) -> str:
        """What a reader needs to tell apart runs of one GPU: budget and offload mode."""
        parts = [f"{size_text(self.memory_budget)} budget"] if self.memory_budget else []
        if self.offload != "none":
            parts.append(f"{self.offload} offload")
        return " · ".join(parts)

    @property
    def baseline_variant(self) -> str | None:
        b = self.summary.get("baseline_variant")
        return b if b in self.summary["variants"] else None

    def records_of(self, variant: str) -> list[Record]:
        # The last record of a key supersedes earlier ones (as the gate reads them).
        return self.rd.records_of(variant)

    def case(self, case_id: str) -> Any | None:
        if self.case_set is None:
            return None
        try:
            return self.case_set.get(case_id)
        except UserInputError:
            return None

    def output_image(self, variant: str, case_id: str) -> Path | None:
        return self.rd.output_image(variant, case_id)


def _candidate_case_dirs(run_dir: Path, run: dict[str, Any], name: str, extra: Sequence[Path]) -> list[Path]:
    out = list(extra)
    suite_path = Path(str((run.get("suite") or {}).get("path") or ""))
    if suite_path.name and suite_path.is_file():
        try:
            from ..suite import read_toml

            rel = ((read_toml(suite_path).get("cases") or {}).get("path"))
            if isinstance(rel, str):
                out.append((suite_path.parent / rel).resolve())
        except Exception:  # noqa: BLE001, S110 - an unreadable suite only means one fewer place to look
            pass
    repo = Path(__file__).resolve().parents[2]
    out += [Path.cwd() / "suites" / "cases" / name, repo / "suites" / "cases" / name]
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def find_case_set(run_dir: Path, run: dict[str, Any], summary: dict[str, Any], case_ids: list[str],
                  extra: Sequence[Path] = ()) -> tuple[Any | None, str | None]:
    """The case set the run used (for source images, instructions and categories), found by
    fingerprint: the suite's [cases] path, then suites/cases/<name>. (None, why) if not found."""
    from ..cases import load_case_set

    want = summary["fingerprint"]["case_set"].get("fingerprint")
    name = summary["fingerprint"]["case_set"].get("name") or ""
    tried = []
    for d in _candidate_case_dirs(run_dir, run, name, extra):
        if not (d / "cases.jsonl").is_file():
            continue
        tried.append(str(d))
        try:
            cs = load_case_set(d, check_images=False)
        except UserInputError:
            continue
        if cs.fingerprint == want:
            return cs, None
        try:
            sub = cs.select(case_ids)
        except UserInputError:
            continue
        if sub.fingerprint == want:
            return sub, None
    why = (f"case set '{name}' with fingerprint {str(want)[:19]}… not found"
           + (f" (looked in {', '.join(tried)}: different content)" if tried else "")
           + "; source images, instructions and categories are not shown (pass --cases DIR)")
    return None, why


def load_report_run(run_dir: Path, case_dirs: Sequence[Path] = ()) -> Run:
    """Read one run directory (read and checked once, by the results model)."""
    rd = RunDir.load(run_dir)
    assert rd.summary_json is not None
    case_set, note = find_case_set(run_dir, rd.run, rd.summary_json, rd.case_ids, case_dirs)
    return Run(rd, case_set, note)


# ---------------------------------------------------------------------------------------------
# Model size and weight formats


def model_size_for_run(run: Run) -> tuple[F.ModelSize, list[str]]:
    """Parameter counts and transformer shape of the model the run used, with notes on how they
    were obtained. Full-size sources use the shipped configs; `tiny` rebuilds its toy shape."""
    notes: list[str] = []
    ident = run.summary["fingerprint"]["model"]
    loaded: dict[str, int] = {}
    reports = {v: variant_report(b) for v, b in run.builds.items()}
    most_blocks = max((r.transformer_blocks or 0 for r in reports.values() if r is not None), default=0)
    for v, b in run.builds.items():
        report = reports[v]
        if report is None:
            continue
        for c, info in (b.get("components") or {}).items():
            fmt = report.formats.get(c)
            # Quantized layers count packed elements; a transformer with blocks removed or
            # narrowed is not the base model's.
            if fmt is None or fmt.quantization is not None or not (isinstance(info, dict) and info.get("params")):
                continue
            if c == "transformer" and (report.unmodelled_structure or (report.transformer_blocks or 0) < most_blocks):
                continue
            loaded[c] = max(loaded.get(c, 0), int(info["params"]))
    if ident.get("source") == "tiny":
        from ..models.tiny import TinySizes

        tiny = ident.get("tiny") or {}
        base = TinySizes()
        sizes = TinySizes(**{**base.__dict__, **{k: v for k, v in tiny.items() if k in base.__dict__}})
        shape = F.TransformerShape(num_layers=sizes.transformer_layers, num_attention_heads=sizes.attention_heads,
                                   attention_head_dim=sizes.attention_head_dim, joint_attention_dim=sizes.text_hidden,
                                   in_channels=sizes.vae_z_dim * 4, out_channels=sizes.vae_z_dim, patch_size=2)
        params = {"transformer": F.transformer_params(shape).total}
        for c in ("text_encoder", "vae"):
            params[c] = loaded.get(c, 0)
        if not loaded:
            notes.append("no dtype variant in the run: text-encoder and VAE parameter counts unknown (counted as 0)")
        size = F.ModelSize(shape, params)
    else:
        size = F.ModelSize.released()
    for c, n in loaded.items():
        if c in size.params and size.params[c] and n != size.params[c]:
            notes.append(f"{c}: the loaded model has {n:,} parameters, the configuration {size.params[c]:,}; floors use the configuration")
    return size, notes


def variant_report(build: dict[str, Any] | None) -> VariantReport | None:
    """The typed report of what a variant built (`variants/<v>.build.json` key "report"), or
    None without a build record. Build records written before reports were typed are migrated
    once, here (`_legacy_report`)."""
    if not build:
        return None
    if "report" in build:
        try:
            return VariantReport.model_validate(build["report"])
        except ValidationError as err:
            raise UserInputError(f"variants/{build.get('variant')}.build.json: report",
                                 f"is not a valid variant report ({err.errors()[0]['msg']})",
                                 "re-run the variant with this version of qie-bench") from None
    return _legacy_report(build)


def structure_change(build: dict[str, Any] | None, shape: F.TransformerShape) -> tuple[F.TransformerShape | None, str | None]:
    """The transformer shape after the variant: its recorded block count at the base's width, or
    (None, why) when the variant changed the architecture in a way the floor model does not
    follow (width pruning)."""
    report = variant_report(build)
    if report is None:
        return shape, None
    if report.unmodelled_structure:
        return None, report.unmodelled_structure
    if report.transformer_blocks and report.transformer_blocks != shape.num_layers:
        return F.TransformerShape(**{**shape.__dict__, "num_layers": report.transformer_blocks}), None
    return shape, None


def sized_for(size: F.ModelSize, shape: F.TransformerShape) -> F.ModelSize:
    """`size` with the transformer's parameter count for `shape` (after depth pruning)."""
    if shape == size.transformer:
        return size
    full = F.transformer_params(size.transformer)
    fewer = full.per_block * (size.transformer.num_layers - shape.num_layers)
    return F.ModelSize(shape, {**size.params, "transformer": size.params["transformer"] - fewer})


def weight_formats(build: dict[str, Any] | None, size: F.ModelSize) -> dict[str, F.WeightFormat] | None:
    """Each component's storage format, as the variant recorded it: the base dtype and, for
    quantized layers, their format, count and compute dtype. None without a build record (the
    format is then unknown and memory floors are not checked)."""
    report = variant_report(build)
    if report is None:
        return None
    out: dict[str, F.WeightFormat] = {}
    for c in COMPONENTS:
        fmt = report.formats.get(c)
        if fmt is None:
            out[c] = F.WeightFormat.of("bf16")
        elif fmt.quantization is None:
            out[c] = F.WeightFormat.of(fmt.base_dtype)
        else:
            compute = F.COMPUTE_RATES[fmt.compute_dtype] if fmt.compute_dtype else None
            out[c] = F.WeightFormat(F.precision(fmt.base_dtype), F.precision(fmt.quantization), fmt.quantized_params, compute)
    return out


def _legacy_report(build: dict[str, Any]) -> VariantReport:
    """A typed report for a build record written before reports were typed (the runs under
    benchmarks/data): read once from what each kind recorded in `changes` then."""
    kind, options, changes = str(build.get("kind") or ""), build.get("options") or {}, build.get("changes") or {}
    steps = [(kind, options, changes)]
    if kind == "compose" and isinstance(changes.get("steps"), list):
        opt_steps = options.get("steps") if isinstance(options.get("steps"), list) else []
        steps = [(str(st.get("kind") or ""), opt_steps[i] if i < len(opt_steps) and isinstance(opt_steps[i], dict) else {},
                  st.get("changes") or {}) for i, st in enumerate(changes["steps"]) if isinstance(st, dict)]
    dtypes: dict[str, Any] = {}
    blocks: int | None = None
    unmodelled: str | None = None
    for k, o, ch in steps:
        dtypes.update(ch.get("component_dtypes") or {})
        method = str(ch.get("method") or o.get("method") or "")
        if k == "pruned" and method == "depth" and ch.get("blocks_after"):
            blocks = int(ch["blocks_after"])
        elif k == "pruned":
            unmodelled = f"{method or 'pruned'} pruning changes layer widths, which the floor model does not follow"
        elif k == "distilled" and ch.get("student_layers"):
            blocks = int(ch["student_layers"])
    formats: dict[str, ComponentFormat] = {}
    for c in COMPONENTS:
        name = str(dtypes.get(c, "")).removeprefix("torch.")
        base = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name)
        if base is not None:
            formats[c] = ComponentFormat(base_dtype=base)
            continue
        comp = (build.get("components") or {}).get(c) or {}
        params = comp.get("params")
        prec = F.precision_from_bytes_per_param(comp["weights_bytes"] / params) if comp.get("weights_bytes") and params else None
        if prec is None or prec.name in ("fp32", "bf16", "fp16"):
            formats[c] = ComponentFormat(base_dtype=prec.name if prec else "bf16")
        else:
            formats[c] = ComponentFormat(base_dtype="bf16", quantization="4bit" if prec.name == "4-bit" else prec.name,
                                         quantized_params=None)
    for k, o, ch in steps:
        if k not in ("nf4", "int8"):
            continue
        comps = ch.get("components") if isinstance(ch.get("components"), dict) else {}
        compute = {"nf4": str(o.get("compute_dtype") or "bf16")}.get(k) or ("bf16" if str(o.get("backend")) == "torchao" else "int8")
        for c in COMPONENTS:
            info = comps.get(c)
            if info is None and c not in (o.get("components") or ("transformer",)):
                continue
            qp = (info or {}).get("quantized_params")
            base = formats[c].base_dtype if (c in dtypes and formats[c].quantization is None) else "bf16"
            formats[c] = ComponentFormat(base_dtype=base, quantization=k, quantized_params=int(qp) if qp is not None else None,
                                         compute_dtype=compute)
    offload = build.get("offload") if build.get("offload") in ("none", "model", "sequential", "group") else "none"
    overrides = {k: v for k, v in (build.get("generation_overrides") or {}).items() if k in ("steps", "true_cfg_scale")}
    return VariantReport(formats=formats, transformer_blocks=blocks, unmodelled_structure=unmodelled, offload=offload,
                         generation_overrides=overrides, changes=changes)


def rescale_formats(formats: dict[str, F.WeightFormat], from_size: F.ModelSize,
                    to_size: F.ModelSize) -> dict[str, F.WeightFormat]:
    """The same formats on another model size: quantized weight counts keep their share of each
    component (a tiny run's nf4 variant projected onto the released model)."""
    out = {}
    for c, f in formats.items():
        if f.quant is not None and f.quantized_params is not None and from_size.params.get(c) and to_size.params.get(c):
            share = min(1.0, f.quantized_params / from_size.params[c])
            f = F.WeightFormat(f.base, f.quant, round(share * to_size.params[c]), f.quant_compute)
        out[c] = f
    return out


# ---------------------------------------------------------------------------------------------
# Per-variant, per-run figures


@dataclass
class FloorRow:
    """A variant's measurements beside their floors on the run's hardware."""

    formats: dict[str, F.WeightFormat]
    edit_flops_p50: float | None  # transformer FLOPs of the median case's edit
    latency_floor_p50: float | None  # hard floor (spec peak), median over cases
    latency_floor_measured_peak_p50: float | None  # with the GPU's measured matmul peak
    latency_ratio_p50: float | None  # median of per-record measured / floor
    step_floor_p50: float | None
    step_ratio_p50: float | None
    memory_kind: str | None  # which measurement is compared with the memory floor
    memory_floor_max: float | None
    memory_ratio_min: float | None
    weights_floor: float | None
    weights_ratio: float | None
    bound: str | None
    flags: list[F.Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Column:
    """One variant of one run."""

    run: Run
    variant: str
    summary: dict[str, Any]
    build: dict[str, Any] | None
    records: list[Record]
    is_baseline: bool
    floors: FloorRow | None = None

    @property
    def key(self) -> str:
        return f"{self.run.label} · {self.variant}"

    @property
    def ok_records(self) -> list[Record]:
        return [r for r in self.records if r.ok]

    def value(self, key: str) -> float | None:
        return num(self.summary.get(key))

    def metric_mean(self, name: str) -> float | None:
        return num(((self.summary.get("metrics") or {}).get(name) or {}).get("mean"))

    def metric_by_case(self, name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.ok_records:
            if r.repeat == 0:
                v = r.metric(name)
                if v is not None:
                    out[r.case_id] = v
        return out

    @property
    def latencies(self) -> list[float]:
        return [float(r.latency_s) for r in self.ok_records if r.latency_s is not None]

    @property
    def status_line(self) -> str:
        c = self.summary.get("status_counts") or {}
        planned = self.summary.get("planned") or self.summary.get("records") or 0
        bad = ", ".join(f"{n} {s}" for s, n in c.items() if s != "OK" and n)
        return f"{c.get('OK', 0)}/{planned} OK" + (f" ({bad})" if bad else "")


def _input_sizes(run: Run, case_id: str) -> list[tuple[int, int]] | None:
    case = run.case(case_id)
    if case is None:
        return None
    from PIL import Image

    sizes = []
    for p in case.image_paths:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except OSError:
            return None
    return sizes


def record_workload(run: Run, record: Record, size_cache: dict[str, Any]) -> F.Workload | None:
    """The transformer workload of one record: its output size, the case's input images at the
    model's reference and condition areas, its steps and whether true CFG ran."""
    gen = run.summary.get("generation") or {}
    width = record.output_width or gen.get("width")
    height = record.output_height or gen.get("height")
    steps = record.steps or gen.get("steps")
    if not (width and height and steps):
        return None
    true_cfg = record.true_cfg
    if true_cfg is None:
        true_cfg = (gen.get("true_cfg_scale") or 1.0) > 1 and gen.get("negative_prompt") is not None
    tiny = run.summary["fingerprint"]["model"].get("tiny") or {}
    ref_area = int(tiny.get("reference_area") or F.VAE_IMAGE_AREA)
    cond_area = int(tiny.get("condition_area") or F.CONDITION_IMAGE_AREA)
    cid = record.case_id
    if cid not in size_cache:
        size_cache[cid] = _input_sizes(run, cid)
    sizes = size_cache[cid]
    if sizes is None:  # case set not found: one square reference image
        side = int(math.sqrt(ref_area))
        sizes = [(side, side)]
    return F.edit_workload((int(width), int(height)), sizes, int(steps), bool(true_cfg), ref_area, cond_area)


def _offload_mode(build: dict[str, Any] | None) -> str | None:
    """'model' when whole components move to the host between uses, 'sequential' when weights
    stream in pieces (sequential or group offload), None when the weights stay on the device."""
    report = variant_report(build)
    if report is None or report.offload == "none":
        return None
    return "model" if report.offload == "model" else "sequential"


def compute_floors(col: Column, size: F.ModelSize, size_notes: list[str]) -> FloorRow | None:
    run = col.run
    shape, why = structure_change(col.build, size.transformer)
    if shape is None:
        return FloorRow(formats={}, edit_flops_p50=None, latency_floor_p50=None, latency_floor_measured_peak_p50=None,
                        latency_ratio_p50=None, step_floor_p50=None, step_ratio_p50=None, memory_kind=None,
                        memory_floor_max=None, memory_ratio_min=None, weights_floor=None, weights_ratio=None, bound=None,
                        notes=[f"no floors: {why}"])
    size = sized_for(size, shape)
    known = weight_formats(col.build, size)
    # Without a build record the storage format is unknown: time floors take the fastest matmul
    # rate and 4-bit weights (still lower bounds); memory floors are not checked.
    formats = known or {c: F.WeightFormat(F.Precision("unknown", 0.5, "fastest")) for c in COMPONENTS}
    gpu = run.gpu
    device = ((col.build or {}).get("device") or (col.summary.get("build") or {}).get("device") or run.env.get("device"))
    on_gpu = str(device).startswith("cuda") if device else run.hardware_class.startswith("gpu:")
    notes = list(size_notes)
    if run.hardware_class.startswith("gpu:") and gpu is None:
        notes.append(f"{run.hardware_class[4:]} is not in the table of known GPUs: no time floor")
    elif not on_gpu:
        notes.append("no time floor on a CPU")
    flags = F.FloorFlags()
    cache: dict[str, Any] = {}
    edit_flops, lat_floor, lat_floor_m, lat_ratio, step_floor, step_ratio, mem_floor, mem_ratio = ([] for _ in range(8))
    bound = None
    mem_keys = (("torch_peak_allocated_bytes", "allocator allocated"), ("torch_peak_reserved_bytes", "allocator reserved"),
                ("peak_vram_process_bytes", "NVML process"), ("peak_vram_bytes", "NVML device")) if on_gpu else \
               (("rss_peak_bytes", "RSS"),)
    # The tightest measurement that the run has is shown (allocator allocated on a GPU); every
    # one of them is checked against the floor.
    shown_mem = next((label for key, label in mem_keys if any(r.value(key) is not None for r in col.ok_records)),
                     mem_keys[0][1])
    t_bytes = formats["transformer"].bytes(size.params["transformer"])
    offload = _offload_mode(col.build)
    if known is None:
        notes.append("no build record (variants/<v>.build.json): storage format unknown, memory floors not checked")
        offload = "sequential"
    elif offload:
        notes.append(f"the variant offloads weights ({offload}): the memory floor is "
                     + ("not checked (weights stream in pieces)" if offload == "sequential" else "the largest component"))
    for r in col.ok_records:
        w = record_workload(run, r, cache)
        if w is None:
            continue
        where = f"{r.case_id} repeat {r.repeat}"
        fl = F.edit_flops(size.transformer, w)
        edit_flops.append(fl)
        mem = F.memory_floor(size, formats, w.image_tokens + w.text_tokens)
        floor_bytes = {None: mem.resident_bytes, "model": mem.model_offload_bytes}.get(offload)
        for key, label in mem_keys if floor_bytes else ():
            ratio = F.check_against_floor(f"{label} peak", num(r.value(key)), floor_bytes, where)
            flags.add(ratio)
            if ratio is not None and label == shown_mem:
                mem_ratio.append(ratio.ratio)
        if floor_bytes:
            mem_floor.append(floor_bytes)
        if gpu is not None and on_gpu:
            per_fwd = F.forward_flops(size.transformer, w.image_tokens, w.text_tokens).total
            tf = F.forward_time_floor(per_fwd, t_bytes, gpu, formats["transformer"].computes, forwards=w.forwards)
            tfm = F.forward_time_floor(per_fwd, t_bytes, gpu, formats["transformer"].computes, forwards=w.forwards,
                                       use_measured=True)
            bound = tf.bound
            lat_floor.append(tf.total_s)
            lat_floor_m.append(tfm.total_s)
            ratio = F.check_against_floor("latency", r.latency_s, tf.total_s, where)
            flags.add(ratio)
            if ratio is not None:
                lat_ratio.append(ratio.ratio)
            sfloor = tf.forward_s * w.passes_per_step
            step_floor.append(sfloor)
            for i, s in enumerate(r.step_s or []):
                ratio = F.check_against_floor("step time", num(s), sfloor, f"{where} step {i}")
                flags.add(ratio)
                if ratio is not None:
                    step_ratio.append(ratio.ratio)
    w_floor = sum(formats[c].bytes(n) for c, n in size.params.items() if c in formats) if known else None
    w_ratio = F.check_against_floor("weights bytes", col.value("weights_bytes"), w_floor, "variant build")
    flags.add(w_ratio)

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    return FloorRow(formats=formats, edit_flops_p50=med(edit_flops), latency_floor_p50=med(lat_floor),
                    latency_floor_measured_peak_p50=med(lat_floor_m) if gpu and gpu.measured_bf16_tflops else None,
                    latency_ratio_p50=med(lat_ratio), step_floor_p50=med(step_floor), step_ratio_p50=med(step_ratio),
                    memory_kind=shown_mem if mem_floor else None, memory_floor_max=max(mem_floor) if mem_floor else None,
                    memory_ratio_min=min(mem_ratio) if mem_ratio else None, weights_floor=w_floor,
                    weights_ratio=w_ratio.ratio if w_ratio else None, bound=bound, flags=flags.flagged, notes=notes)


# ---------------------------------------------------------------------------------------------
# The whole report


@dataclass
class Projection:
    """What a variant (its weight formats on the released model) needs on one known GPU."""

    variant: str
    formats_label: str
    fits: list[F.Fit]
    workload: F.Workload


@dataclass
class ReportData:
    runs: list[Run]
    columns: list[Column]
    metrics: list[str]  # every quality metric, in a stable order
    metric_directions: dict[str, str | None]
    primary_metric: str | None  # the fidelity metric used to rank cases and for the Pareto plot
    categories: dict[str, str]  # case id -> category
    projections: list[Projection]
    notes: list[str]

    @property
    def hardware_comparison(self) -> bool:
        return len({r.hardware_class for r in self.runs}) > 1

    @property
    def random_runs(self) -> list[Run]:
        return [r for r in self.runs if r.random_model or r.random_metrics]

    @property
    def flags(self) -> list[tuple[Column, F.Ratio]]:
        return [(c, f) for c in self.columns if c.floors for f in c.floors.flags]

    def baseline_of(self, col: Column) -> Column | None:
        b = col.run.baseline_variant
        if b is None:
            return None
        for c in self.columns:
            if c.run is col.run and c.variant == b:
                return c
        return None


def output_size_label(gen: dict[str, Any]) -> str:
    """A run's output size as its suite set it: "512×512", "area 16384 px (source aspect)" or the
    pipeline's default."""
    if gen.get("area"):
        return f"area {gen['area']} px (source aspect)"
    if gen.get("width") is None and gen.get("height") is None:
        return "~1 MP (pipeline default)"
    return f"{gen.get('width')}×{gen.get('height')}"


def _output_size(run: Run) -> str:
    return output_size_label(run.summary.get("generation") or {})


def _label_runs(runs: list[Run]) -> None:
    """Name each run by its GPU; where one GPU ran several, by output size (where sizes differ),
    budget and offload mode too, and by run id only where even those are the same."""
    names = [r.hardware_name for r in runs]
    sizes_differ = len({_output_size(r) for r in runs}) > 1
    labelled = []
    for r, n in zip(runs, names):
        parts = ([_output_size(r)] if sizes_differ else []) + ([r.settings_label] if r.settings_label else [])
        labelled.append(n if names.count(n) == 1 or not parts else " · ".join([n, *parts]))
    names = labelled
    for r, n in zip(runs, names):
        r.label = n if names.count(n) == 1 else f"{n} ({r.run_id[:8]})"


def check_same_case_set(runs: list[Run]) -> None:
    first = runs[0]
    want = first.summary["fingerprint"]["case_set"]
    for r in runs[1:]:
        got = r.summary["fingerprint"]["case_set"]
        if got.get("fingerprint") != want.get("fingerprint"):
            raise UserInputError(
                str(r.path),
                f"ran case set '{got.get('name')}' {str(got.get('fingerprint'))[:19]}… ({got.get('cases')} cases), "
                f"but {first.path} ran '{want.get('name')}' {str(want.get('fingerprint'))[:19]}… ({want.get('cases')} cases)",
                "a report compares runs of the same case set; make one report per case set")


def projection_workload(run: Run) -> F.Workload:
    """The released model at the run's generation settings, each case's first image a square 1 MP
    reference (what the real pipeline would encode)."""
    gen = run.summary.get("generation") or {}
    side = math.isqrt(int(gen["area"])) if gen.get("area") else 1024  # area: a square source
    width, height = int(gen.get("width") or side), int(gen.get("height") or side)
    steps = int(gen.get("steps") or 40)
    true_cfg = (gen.get("true_cfg_scale") or 1.0) > 1 and gen.get("negative_prompt") is not None
    return F.edit_workload((width, height), [(1024, 1024)], steps, true_cfg)


def build_report_data(run_dirs: Sequence[Path], case_dirs: Sequence[Path] = ()) -> ReportData:
    if not run_dirs:
        raise UserInputError("report", "no run directory given", "pass at least one RUN_DIR")
    seen: dict[Path, Path] = {}
    for d in run_dirs:
        key = d.resolve()
        if key in seen:
            raise UserInputError(str(d), f"is given twice (also as {seen[key]})", "pass each run directory once")
        seen[key] = d
    runs = [load_report_run(Path(d), case_dirs) for d in run_dirs]
    check_same_case_set(runs)
    _label_runs(runs)
    notes: list[str] = []
    columns: list[Column] = []
    for run in runs:
        if run.case_set_note:
            notes.append(f"{run.label}: {run.case_set_note}")
        if not run.hardware_class.startswith("gpu:"):
            notes.append(f"{run.label}: a CPU run has no time floors (no peak rate is known for CPUs) and no VRAM; "
                         "memory floors are compared with the worker's RSS")
        if not run.summary.get("complete"):
            notes.append(f"{run.label}: the run is incomplete ({run.summary.get('recorded_items')} of "
                         f"{run.summary.get('planned_items')} items recorded)")
        size, size_notes = model_size_for_run(run)
        order = [run.baseline_variant] if run.baseline_variant else []
        order += [v for v in run.variants if v not in order]
        for v in order:
            col = Column(run, v, run.summary["variants"][v], run.builds.get(v), run.records_of(v),
                         is_baseline=(v == run.baseline_variant))
            col.floors = compute_floors(col, size, size_notes)
            columns.append(col)
    metrics: list[str] = []
    directions: dict[str, str | None] = {}
    for col in columns:
        desc = ((col.summary.get("build") or {}).get("metric_descriptions") or
                (col.build or {}).get("metric_descriptions") or {})
        names = list((col.summary.get("metrics") or {}).keys())
        for r in col.ok_records:
            names += [k for k in (r.metrics or {}) if k not in names]
        for name in names:
            if name not in metrics:
                metrics.append(name)
            if directions.get(name) is None:
                directions[name] = metric_direction(name, desc)
    preference = fidelity_preference()
    metrics.sort(key=lambda m: (preference.index(m) if m in preference else len(preference), m))
    primary = next((m for m in preference if m in metrics and directions.get(m)), None)
    if primary is None:
        primary = next((m for m in metrics if directions.get(m)), None)
    categories: dict[str, str] = {}
    for run in runs:
        if run.case_set is not None:
            for c in run.case_set.cases:
                categories.setdefault(c.id, c.category)
    projections: list[Projection] = []
    released = F.ModelSize.released()
    seen_formats: set[str] = set()
    sizes = {id(run): model_size_for_run(run)[0] for run in runs}
    for col in columns:
        run_size = sizes[id(col.run)]
        shape, _ = structure_change(col.build, run_size.transformer)
        found = weight_formats(col.build, run_size)
        if shape is None or found is None:
            continue
        target = sized_for(released, F.TransformerShape(**{**released.transformer.__dict__, "num_layers": round(
            released.transformer.num_layers * shape.num_layers / run_size.transformer.num_layers)}))
        formats = rescale_formats(found, sized_for(run_size, shape), target)
        label = ", ".join(f"{c.replace('_', ' ')} {formats[c].label}" for c in COMPONENTS if c in formats)
        w = projection_workload(col.run)
        key = label + repr(w)
        if key in seen_formats:
            continue
        seen_formats.add(key)
        if target.transformer.num_layers != released.transformer.num_layers:
            label += f"; {target.transformer.num_layers} of {released.transformer.num_layers} blocks"
        projections.append(Projection(col.variant, label, [F.fit_on_gpu(target, formats, w, g) for g in GPUS], w))
    return ReportData(runs, columns, metrics, directions, primary, categories, projections, notes)


def headline_metrics(data: ReportData) -> list[str]:
    """The run's metrics that declare themselves ``headline`` (did the edit happen: OCR, judge,
    locality), in the report's metric order: each gets a per-category plot and a gallery line."""
    return [m for m in data.metrics if m in REGISTRY and REGISTRY.get(m).headline]

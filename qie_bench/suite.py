"""Suite files: TOML in `suites/`, read once into frozen, typed configs.

A suite names the model, the case set, the variants to compare and how to generate and measure.
Everything is validated here, at the edge: an unknown key, a wrong type or a value out of range
is a one-line `UserInputError` naming the file and the key (with "did you mean …" for typos),
so nothing untyped travels into the runner.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import UserInputError, did_you_mean
from .validation import describe_validation_error
from .variants.options import OPTIONS, RuntimeOptions, VariantOptions

SUITE_SCHEMA_VERSION = 1

_BYTES_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_bytes(text: str) -> int:
    """'12GiB' -> 12884901888. Accepts B, KB/MB/GB (decimal) and KiB/MiB/GiB (binary)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*", text)
    if not m or m.group(2).upper() not in _BYTES_UNITS:
        raise ValueError(f"'{text}' is not a size; write e.g. '12GiB', '8GB' or '512MiB'")
    return int(float(m.group(1)) * _BYTES_UNITS[m.group(2).upper()])


def size_text(n: int) -> str:
    """12884901888 -> '12GiB': the shortest exact form parse_bytes reads back, else bytes."""
    exact = [(f, u) for u, f in (("GiB", 2**30), ("GB", 10**9), ("MiB", 2**20), ("MB", 10**6), ("KiB", 2**10), ("KB", 10**3))
             if n >= f and n % f == 0]
    if not exact:
        return f"{n}B"
    factor, unit = max(exact)
    return f"{n // factor}{unit}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyProfile(_Section):
    """Settings of the `tiny` model source that the real model never uses.

    diffusers 0.42 VAE-encodes every reference image at about 1 megapixel whatever the output
    size (`VAE_IMAGE_SIZE`) and gives the VL text encoder 384x384 condition images
    (`CONDITION_IMAGE_SIZE`). A toy VAE still costs tens of seconds per megapixel on a small CPU,
    so the tiny profile sets both areas; runs from real weights always use the pipeline's own.
    """

    reference_area: int = Field(128 * 128, ge=32 * 32, le=1024 * 1024, description="pixels each reference image is VAE-encoded at")
    condition_area: int = Field(56 * 56, ge=28 * 28, le=384 * 384, description="pixels of each image given to the VL text encoder")
    transformer_layers: int = Field(2, ge=1, le=8)
    vae_base_dim: int = Field(8, ge=4, le=96)


class ModelConfig(_Section):
    source: Literal["tiny", "random-full", "pretrained"] = "tiny"
    id: str | None = Field(None, description="Hugging Face id or local directory (source = 'pretrained')")
    revision: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_seed: int = Field(0, ge=0, description="seed of the random weights (tiny, random-full)")
    tiny: TinyProfile = TinyProfile()

    @model_validator(mode="after")
    def _source_needs(self) -> ModelConfig:
        if self.source == "pretrained" and not self.id:
            raise ValueError("source = 'pretrained' needs id = a Hugging Face id or a local directory")
        if self.source != "pretrained" and self.id:
            raise ValueError(f"id is only read when source = 'pretrained' (source is '{self.source}')")
        return self


class CasesConfig(_Section):
    path: str = Field(description="case-set folder, relative to the suite file")
    select: tuple[str, ...] = Field((), description="case ids or categories to keep (empty = all)")
    max_image_pixels: int = Field(4096 * 4096, ge=64 * 64)


def output_size(area: int, source_size: tuple[int, int]) -> tuple[int, int]:
    """The output (width, height) for about ``area`` pixels at the aspect ratio of ``source_size``
    (PIL's (width, height) of the case's first input image).

    diffusers' own rule (``calculate_dimensions``, which `QwenImageEditPlusPipeline` uses for its
    ~1 MP default): width = sqrt(area * ratio), height = width / ratio, each rounded to the nearest
    multiple, here of 16 (the pipeline's latent grid: VAE x8, 2x2 patches) where diffusers takes 32,
    and at least 16. Each side is within 8 px of the exact one, so the output's aspect ratio is the
    source's within one 16-px step. A square source at area 16384 gives 128x128.
    """
    width, height = source_size
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    return max(16, round(w / 16) * 16), max(16, round(h / 16) * 16)


class GenerationConfig(_Section):
    steps: int = Field(40, ge=1, le=500)
    true_cfg_scale: float = Field(4.0, ge=0.0, le=50.0)
    negative_prompt: str = " "
    width: int | None = Field(None, ge=16, le=4096, description="output width; unset = the pipeline's ~1 MP default")
    height: int | None = Field(None, ge=16, le=4096)
    area: int | None = Field(None, ge=16 * 16, le=4096 * 4096,
                             description="output pixels, at each case's source aspect ratio (`output_size`); "
                                         "instead of width/height")
    seed_policy: Literal["case-id", "fixed"] = "case-id"
    seed: int = Field(0, ge=0)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, v: int | None) -> int | None:
        # The pipeline silently rounds down to a multiple of 16 (VAE x8, 2x2 patches); refusing
        # keeps the recorded size equal to the generated one.
        if v is not None and v % 16:
            raise ValueError(f"must be a multiple of 16 (nearest: {v // 16 * 16} or {v // 16 * 16 + 16})")
        return v

    @field_validator("area")
    @classmethod
    def _area_or_size(cls, v: int | None, info: ValidationInfo) -> int | None:
        given = [k for k in ("width", "height") if info.data.get(k) is not None]
        if v is not None and given:
            raise ValueError(f"is given with {' and '.join(given)}: set either area (each case at its source's "
                             "aspect ratio) or width/height (one size for every case)")
        return v

    def for_source(self, source_size: tuple[int, int]) -> GenerationConfig:
        """These settings for one case whose first input image is ``source_size`` (width, height):
        with ``area``, the case's own width and height (`output_size`); otherwise unchanged."""
        if self.area is None:
            return self
        width, height = output_size(self.area, source_size)
        return self.model_copy(update={"area": None, "width": width, "height": height})

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The pipeline-call arguments these settings fix: steps, true CFG (with its negative
        prompt only when it is on) and the output size when set. With ``area``, call it on
        `for_source` (the size is the case's)."""
        if self.area is not None:
            raise ValueError("area sets each case's own size: call for_source(source size) first")
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps, "true_cfg_scale": self.true_cfg_scale}
        if self.true_cfg_scale > 1:
            kwargs["negative_prompt"] = self.negative_prompt
        if self.width is not None:
            kwargs["width"] = self.width
        if self.height is not None:
            kwargs["height"] = self.height
        return kwargs


class MeasurementConfig(_Section):
    warmup_runs: int = Field(1, ge=0, le=20, description="untimed edits before each case's timed repeats")
    warmup_steps: int | None = Field(None, ge=1, le=500, description="steps of each warm-up edit (default: the real count)")
    repeats: int = Field(3, ge=1, le=100)
    nvml_period_s: float = Field(0.01, gt=0.0, le=1.0)
    case_timeout_s: float = Field(900.0, gt=0.0)
    build_timeout_s: float = Field(3600.0, gt=0.0)
    memory_budget: int | None = Field(None, ge=1, description="emulate a smaller device: bytes (TOML: '12GiB', '8GB' or an integer)")
    max_child_restarts: int = Field(3, ge=0, le=100)
    offload: Literal["none", "model", "sequential", "group"] = Field(
        "none", description="diffusers CPU offload: model (whole components), sequential (every submodule), group (transformer blocks)"
    )

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        # Written as a size in TOML ('12GiB'); held as an integer number of bytes from here on.
        if isinstance(v, str):
            return parse_bytes(v)
        return v


class GenerationOverrides(_Section):
    """Generation settings one variant changes, e.g. a step-distilled setting: 4 steps, no CFG."""

    steps: int | None = Field(None, ge=1, le=500)
    true_cfg_scale: float | None = Field(None, ge=0.0, le=50.0)
    negative_prompt: str | None = None

    def as_update(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class VariantEntry(_Section):
    """One `[[variants]]` table. `kind` picks the registered class whose own config reads `options`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=64)
    kind: str
    generation: GenerationOverrides | None = None
    # How the variant runs (compile, attention backend, step cache), whatever its kind.
    runtime: RuntimeOptions | None = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CostConfig(_Section):
    """Prices for the cost per 1,000 edits in the summary and the report (no defaults: prices are the
    user's). Policy, not measurement: not part of the suite fingerprint."""

    usd_per_kwh: float | None = Field(None, ge=0.0, description="electricity price, $ per kWh")
    usd_per_gpu_hour: float | None = Field(None, ge=0.0, description="GPU rental price, $ per GPU-hour")


class Suite(BaseModel):
    """A whole suite file. `path` is where it was read from (not part of the TOML)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    baseline_variant: str | None = Field(None, description="variant whose outputs are the fidelity reference")
    model: ModelConfig = ModelConfig()
    cases: CasesConfig
    generation: GenerationConfig = GenerationConfig()
    measurement: MeasurementConfig = MeasurementConfig()
    variants: tuple[VariantEntry, ...] = Field(min_length=1)
    metrics: Any = None
    gates: dict[str, Any] = {}
    cost: CostConfig = CostConfig()

    path: Path | None = None
    # Command-line overrides (e.g. --vram-budget); the worker re-reads the suite file and
    # applies them again, so they travel with the run.
    cli_overrides: dict[str, Any] = {}

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> Suite:
        """A suite from its validated JSON form (`model_dump(mode="json")`, as run.json keeps it and
        the worker receives it)."""
        from .metrics.config import MetricsConfig

        metrics = data.get("metrics")
        suite = cls.model_validate({**data, "metrics": None})
        return suite.model_copy(update={"metrics": MetricsConfig.model_validate(metrics) if metrics else None})

    def case_set_dir(self) -> Path:
        base = self.path.parent if self.path else Path.cwd()
        return (base / self.cases.path).resolve()

    def variant(self, name: str) -> VariantEntry:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def fingerprint(self) -> str:
        """sha256 of what changes measurements: model, cases, generation, measurement, variants and
        metrics (not the path or formatting, and not `[gates]` or `[cost]`: thresholds and prices are
        policy, so a team that moves "+10%" to "+15%" keeps its baselines comparable)."""
        data = self.model_dump(mode="json", exclude={"path", "cli_overrides", "gates", "cost", "description"})
        # Keys added after suites were first fingerprinted stay out while unset, so those suites keep
        # their fingerprints (and baselines): each variant's runtime options, the generation's area.
        for section, key in [*((entry, "runtime") for entry in data["variants"]), (data["generation"], "area")]:
            if section.get(key) is None:
                section.pop(key, None)
        blob = json.dumps(data, sort_keys=True, ensure_ascii=False)
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(str(path), "suite file not found", "check the path; suites live in suites/") from None
    except IsADirectoryError:
        raise UserInputError(str(path), "is a directory, not a suite file", "pass a .toml file") from None
    except OSError as err:
        raise UserInputError(str(path), f"cannot read: {err.strerror}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserInputError(str(path), "is not UTF-8 text", "save the suite as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(str(path), f"malformed TOML: {err}", "fix the syntax at that line") from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file, including each variant's own options. Raises UserInputError."""
    path = Path(path)
    raw = read_toml(path)
    for internal in ("path", "cli_overrides"):
        if internal in raw:
            raise UserInputError(f"{path}: {internal}", "unknown key", "this key is set by qie-bench, not in suite files")
    from .metrics.config import MetricsConfig as metrics_cls  # the metrics package owns its section

    if not isinstance(raw.get("metrics", {}), dict):
        raise UserInputError(f"{path}: metrics", "must be a table", "write [metrics] with keys under it")
    for model, data, prefix in ((Suite, {**raw, "path": None}, ""), (metrics_cls, raw.get("metrics", {}), "metrics.")):
        try:
            validated = model.model_validate(data)
        except ValidationError as err:
            errors = err.errors()
            key, problem, fix = describe_validation_error(errors[0], model, raw)
            more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
            raise UserInputError(f"{path}: {prefix}{key}", problem + more, fix) from None
        if model is Suite:
            suite = validated
        else:
            metrics = validated
    suite = suite.model_copy(update={"path": path.resolve(), "metrics": metrics})
    return check_suite(suite, str(path))


def check_suite(suite: Suite, where: str = "suite") -> Suite:
    """What a suite needs beyond its sections' own types: each variant's options checked by its
    kind, an existing baseline variant, and a valid [gates] table. `load_suite` calls it for a file;
    `qie_bench.run` for a suite built in code. Returns the suite; raises UserInputError."""
    _check_variants(suite, where)
    from .gate.thresholds import check_gate_variants, parse_gates

    # Thresholds are checked here, once, so a bad gate fails when the suite is read, not at
    # the end of a long run. The raw table stays on the suite (summary.json records it as written).
    gates = parse_gates(suite.gates, where=f"{where}: gates")
    check_gate_variants(gates, [v.name for v in suite.variants], f"{where}: gates")
    return suite


def _check_variants(suite: Suite, path: str) -> None:
    names = [v.name for v in suite.variants]
    for i, entry in enumerate(suite.variants):
        where = f"{path}: variants[{i}] ('{entry.name}')"
        if entry.name in names[:i]:
            raise UserInputError(where + ".name", f"duplicate variant name '{entry.name}'", "give each variant its own name")
        check_runnable(OPTIONS.validate_entry(entry, where), suite.model.device, suite.measurement.offload, where)
        if entry.runtime is not None:
            check_runnable(entry.runtime, suite.model.device, suite.measurement.offload, where + ".runtime")
    if suite.baseline_variant is not None and suite.baseline_variant not in names:
        raise UserInputError(
            f"{path}: baseline_variant",
            f"no variant named '{suite.baseline_variant}'",
            did_you_mean(suite.baseline_variant, names) or f"variants are: {', '.join(names)}",
        )


def check_runnable(options: VariantOptions | RuntimeOptions, device: str, offload: str, where: str) -> None:
    """Refuse options that cannot run on the suite's device or with its offload mode (e.g. FP8
    kernels on a CPU, torchao with group offload) before anything is loaded."""
    found = options.refusal(device, offload)
    if found is not None:
        key, problem, fix = found
        raise UserInputError(f"{where}.{key}", problem, fix)

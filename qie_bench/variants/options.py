"""What each variant kind accepts: its options, typed and validated with no torch import.

A suite is validated against these classes (`OPTIONS`), so reading a suite never imports torch,
diffusers or any variant's build code. Each kind's build code (``dtype.py``, ``quantize.py``,
``prune.py``, ``distill.py``, ``compose.py``, ``fp8.py``, ``gguf.py``) declares the same options
class as its ``Options`` and is registered in the heavy registry (``registry.py``), which only
the worker imports.

To add a kind: an options class here with ``@OPTIONS.register("kind")``, and a ``Variant``
subclass in its own module with ``Options = ThatOptions`` and ``@VARIANTS.register``, imported
by ``registry.py``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..components import WEIGHT_COMPONENTS
from ..distill.config import TrainingConfig
from ..errors import UserInputError, did_you_mean
from ..validation import describe_validation_error

DTYPE_NAMES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")


class VariantOptions(BaseModel):
    """Base of every variant's options; unknown keys are errors. `kind` is set by registration."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str] = ""

    def refusal(self, device: str, offload: str) -> tuple[str, str, str] | None:
        """(option, problem, fix) when these options cannot run with the suite's `model.device`
        ('auto', 'cpu' or 'cuda') and `measurement.offload`, known without touching a device;
        None when they can (or when only the device itself can tell: the worker checks that
        before loading)."""
        return None


def option_conflict(cls: type, key: str, message: str, value: Any) -> ValidationError:
    """A validation error located at option `key` (e.g. one only read by another `method`), so
    the suite error names that option."""
    return ValidationError.from_exception_data(
        cls.__name__, [{"type": PydanticCustomError("option_conflict", "{message}", {"message": message}),
                        "loc": (key,), "input": value}])


class OptionsRegistry:
    """kind -> options class. Rejects duplicate kinds; suggests close names for typos."""

    def __init__(self) -> None:
        self._classes: dict[str, type[VariantOptions]] = {}

    def register(self, kind: str) -> Any:
        def add(cls: type[VariantOptions]) -> type[VariantOptions]:
            if kind in self._classes:
                raise ValueError(f"variant kind '{kind}' is registered twice")
            cls.kind = kind
            self._classes[kind] = cls
            return cls

        return add

    def kinds(self) -> list[str]:
        return sorted(self._classes)

    def get(self, kind: str, where: str = "variants") -> type[VariantOptions]:
        try:
            return self._classes[kind]
        except KeyError:
            hint = did_you_mean(kind, self._classes)
            raise UserInputError(
                f"{where}.kind", f"unknown variant kind '{kind}'", (hint + " " if hint else "") + f"known kinds: {', '.join(self.kinds())}"
            ) from None

    def validate_entry(self, entry: Any, where: str) -> VariantOptions:
        """A suite's `[[variants]]` entry -> its kind's validated options. Raises UserInputError."""
        cls = self.get(entry.kind, where)
        try:
            return cls.model_validate(entry.options)
        except ValidationError as err:
            key, problem, fix = describe_validation_error(err.errors()[0], cls)
            if problem == "unknown key":
                problem = f"unknown option for kind '{entry.kind}'"
            raise UserInputError(f"{where}.{key}", problem, fix) from None


OPTIONS = OptionsRegistry()


# --------------------------------------------------------------------------------------------
# dtype

@OPTIONS.register("dtype")
class DtypeOptions(VariantOptions):
    dtype: Literal["fp32", "float32", "bf16", "bfloat16", "fp16", "float16"]
    components: tuple[Literal["transformer", "text_encoder", "vae"], ...] = Field(
        WEIGHT_COMPONENTS, min_length=1, description="components loaded in `dtype`"
    )
    others: Literal["fp32", "bf16", "fp16"] = Field("bf16", description="dtype of the components not listed")


# --------------------------------------------------------------------------------------------
# int8, nf4 (and the layer selection fp8 and gguf share)

Component = Literal["transformer", "text_encoder", "vae"]

# Modules nf4 keeps in 16-bit by default (names inside the transformer / text encoder).
# Kept in 16-bit by default: the input/output projections and the time-text embedding (small,
# and fully 4-bit edit models are reported to show tiled artefacts). The modulation layers
# (`*img_mod*`, `*txt_mod*`: 120 x Linear(3072, 18432) = 6.8B of the 20.4B weights) are
# quantized by default — keeping them in bf16 costs +9.4 GiB at full size (NF4 transformer
# 19.3 GiB instead of 9.9 GiB). Add them to `keep_modules` to measure that trade-off.
NF4_KEEP = ("img_in", "txt_in", "proj_out", "norm_out*", "time_text_embed*", "lm_head")
NF4_KEEP_MODULATION = ("*img_mod*", "*txt_mod*")
INT8_KEEP = ("lm_head",)
NF4_BLOCKSIZE = 64


class QuantOptions(VariantOptions):
    """Options shared by the quantization kinds."""

    # Declared before `components`, whose validator reads it.
    allow_vae: bool = Field(False, description="allow 'vae' in components (refused by default)")
    components: tuple[Component, ...] = Field(("transformer",), description="components whose Linear layers are quantized")
    keep_modules: tuple[str, ...] = Field(NF4_KEEP, description="fnmatch patterns of module names kept in 16-bit")

    @field_validator("components")
    @classmethod
    def _components(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not v:
            raise ValueError("is empty: list at least one of 'transformer', 'text_encoder'")
        dup = [c for c, n in Counter(v).items() if n > 1]
        if dup:
            raise ValueError(f"lists '{dup[0]}' twice")
        if "vae" in v and not info.data.get("allow_vae", False):
            raise ValueError("quantizing the VAE is refused (it decodes every output pixel); set allow_vae = true to force it")
        return v

    @field_validator("keep_modules")
    @classmethod
    def _keep(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not p.strip():
                raise ValueError("has an empty pattern; write module-name patterns such as '*img_mod*'")
        return v


@OPTIONS.register("int8")
class Int8Options(QuantOptions):
    backend: Literal["bnb", "torchao"] = Field(description="'bnb' = bitsandbytes LLM.int8; 'torchao' = int8 weight-only")
    threshold: float = Field(6.0, ge=0.0, le=1000.0, description="LLM.int8 outlier threshold (backend 'bnb' only)")
    keep_modules: tuple[str, ...] = Field(INT8_KEEP, description="fnmatch patterns of module names kept in 16-bit")

    @field_validator("threshold")
    @classmethod
    def _threshold_bnb_only(cls, v: float, info: ValidationInfo) -> float:
        # Runs only when the suite sets `threshold` (defaults are not validated).
        backend = info.data.get("backend")
        if backend is not None and backend != "bnb":
            raise ValueError(f"applies to backend 'bnb' only (backend is '{backend}'); remove it")
        return v


@OPTIONS.register("nf4")
class NF4Options(QuantOptions):
    double_quant: bool = Field(True, description="also quantize the per-block absmax values (bnb 'compress_statistics')")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="dtype the 4-bit matmuls compute in")


# --------------------------------------------------------------------------------------------
# pruned

_DEPTH_ONLY = ("blocks", "blocks_to_remove", "importance", "calibration_cases", "calibration_steps")
_WIDTH_ONLY = ("pruning_ratio", "mlps", "round_to")


@OPTIONS.register("pruned")
class PruneOptions(VariantOptions):
    method: Literal["depth", "width"] = Field("depth", description="remove whole blocks, or MLP hidden channels")
    # depth
    blocks: int | None = Field(None, ge=1, description="number of transformer blocks to remove (depth)")
    blocks_to_remove: tuple[int, ...] | None = Field(None, min_length=1, description="explicit block indices to remove (depth)")
    importance: Literal["score", "uniform"] = Field("score", description="how `blocks` are chosen (depth)")
    calibration_cases: int = Field(4, ge=1, le=1000, description="first cases of the suite used for the score (depth)")
    calibration_steps: int | None = Field(None, ge=1, le=500, description="denoising steps of calibration runs (default: the suite's)")
    # width
    pruning_ratio: float | None = Field(None, gt=0.0, le=0.4, description="share of each MLP's hidden channels removed (width)")
    mlps: tuple[Literal["img", "txt"], ...] = Field(("img", "txt"), min_length=1, description="which MLPs of each block (width)")
    round_to: int | None = Field(None, ge=1, description="keep a multiple of this many channels (width)")
    # both
    dtype: Literal["fp32", "bf16", "fp16"] = Field("bf16", description="dtype the pipeline is loaded in")
    recovery_steps: int = Field(0, ge=0, le=1_000_000, description="distillation steps from the unpruned model after pruning")
    recovery: TrainingConfig = Field(TrainingConfig(), description="recovery hyper-parameters (steps: use recovery_steps)")

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> PruneOptions:  # type: ignore[override]
        opts = super().model_validate(obj, *args, **kwargs)
        given = opts.model_fields_set
        if opts.method == "depth":
            for key in _WIDTH_ONLY:
                if key in given:
                    raise option_conflict(cls, key, "is only read when method = 'width'", getattr(opts, key))
            if opts.blocks is None and opts.blocks_to_remove is None:
                raise option_conflict(cls, "blocks", "method = 'depth' needs blocks = K (how many to remove) or "
                                "blocks_to_remove = [...]", None)
            if opts.blocks is not None and opts.blocks_to_remove is not None:
                raise option_conflict(cls, "blocks_to_remove", "give blocks or blocks_to_remove, not both", opts.blocks_to_remove)
            if opts.blocks_to_remove is not None:
                if "importance" in given:
                    raise option_conflict(cls, "importance", "is not read when blocks_to_remove names the blocks", opts.importance)
                if any(i < 0 for i in opts.blocks_to_remove):
                    raise option_conflict(cls, "blocks_to_remove", "block indices start at 0", opts.blocks_to_remove)
                if len(set(opts.blocks_to_remove)) != len(opts.blocks_to_remove):
                    raise option_conflict(cls, "blocks_to_remove", "lists a block twice", opts.blocks_to_remove)
        else:
            for key in _DEPTH_ONLY:
                if key in given:
                    raise option_conflict(cls, key, "is only read when method = 'depth'", getattr(opts, key))
            if opts.pruning_ratio is None:
                raise option_conflict(cls, "pruning_ratio", "method = 'width' needs pruning_ratio (0 < ratio <= 0.4)", None)
            if len(set(opts.mlps)) != len(opts.mlps):
                raise option_conflict(cls, "mlps", "lists an MLP twice", opts.mlps)
        if "steps" in opts.recovery.model_fields_set:
            raise option_conflict(cls, "recovery", "set the number of steps with recovery_steps, not recovery.steps",
                            opts.recovery.steps)
        if opts.recovery.model_fields_set and opts.recovery_steps == 0:
            raise option_conflict(cls, "recovery", "is only read when recovery_steps > 0", opts.recovery.model_dump())
        return opts


# --------------------------------------------------------------------------------------------
# distilled

_LORA_ONLY = ("lora", "fuse", "lora_scale", "scheduler_preset", "scheduler")
_STUDENT_ONLY = ("checkpoint", "train_if_missing", "student_layers", "init", "training")


class SchedulerOverrides(BaseModel):
    """Single `FlowMatchEulerDiscreteScheduler` settings, applied after the preset (unset = keep)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_train_timesteps: int | None = Field(None, ge=1)
    shift: float | None = Field(None, gt=0.0)
    use_dynamic_shifting: bool | None = None
    base_shift: float | None = None
    max_shift: float | None = None
    base_image_seq_len: int | None = Field(None, ge=1)
    max_image_seq_len: int | None = Field(None, ge=1)
    invert_sigmas: bool | None = None
    shift_terminal: float | None = Field(None, gt=0.0, lt=1.0)
    use_karras_sigmas: bool | None = None
    use_exponential_sigmas: bool | None = None
    use_beta_sigmas: bool | None = None
    time_shift_type: Literal["exponential", "linear"] | None = None
    stochastic_sampling: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


@OPTIONS.register("distilled")
class DistillOptions(VariantOptions):
    method: Literal["lora", "student"]
    # lora
    lora: str | None = Field(None, description="LoRA .safetensors file (or a folder holding pytorch_lora_weights.safetensors)")
    fuse: bool = Field(True, description="merge the LoRA into the weights")
    lora_scale: float = Field(1.0, ge=0.0, le=10.0)
    scheduler_preset: Literal["lightning", "keep"] = Field("lightning", description="scheduler settings the LoRA was distilled with")
    scheduler: SchedulerOverrides = Field(SchedulerOverrides(), description="single scheduler settings over the preset")
    # student
    checkpoint: str | None = Field(None, description="student checkpoint folder (qie-bench distill --out)")
    train_if_missing: bool = Field(False, description="train the student while building if there is no checkpoint")
    student_layers: int | None = Field(None, ge=1, description="blocks of a student trained here")
    init: Literal["uniform", "score"] = Field("uniform", description="which teacher blocks the student starts from")
    training: TrainingConfig = Field(TrainingConfig(), description="student training hyper-parameters")
    # both
    steps: int | None = Field(None, ge=1, le=500, description="denoising steps (required for a LoRA)")
    true_cfg_scale: float | None = Field(None, ge=0.0, le=50.0, description="default 1.0 for a LoRA, the suite's for a student")
    dtype: Literal["fp32", "bf16", "fp16"] = Field("bf16", description="dtype the pipeline is loaded in")

    @field_validator("lora")
    @classmethod
    def _lora_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        path = Path(v).expanduser()
        if path.is_dir():
            if not (path / "pytorch_lora_weights.safetensors").is_file():
                raise ValueError(f"folder '{v}' has no pytorch_lora_weights.safetensors; name the .safetensors file")
        elif not path.is_file():
            raise ValueError(f"LoRA file '{v}' not found (relative paths are read from {Path.cwd()})")
        return v

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> DistillOptions:  # type: ignore[override]
        o = super().model_validate(obj, *args, **kwargs)
        given = o.model_fields_set
        if o.method == "lora":
            for key in _STUDENT_ONLY:
                if key in given:
                    raise option_conflict(cls, key, "is only read when method = 'student'", getattr(o, key))
            if o.lora is None:
                raise option_conflict(cls, "lora", "method = 'lora' needs lora = the LoRA's .safetensors file", None)
            if o.steps is None:
                raise option_conflict(cls, "steps", "method = 'lora' needs steps = the LoRA's step count (e.g. 4 or 8)", None)
        else:
            for key in _LORA_ONLY:
                if key in given:
                    raise option_conflict(cls, key, "is only read when method = 'lora'", getattr(o, key))
            if not o.train_if_missing:
                for key in ("student_layers", "init", "training"):
                    if key in given:
                        raise option_conflict(cls, key, "is only read when train_if_missing = true", getattr(o, key))
                if o.checkpoint is None:
                    raise option_conflict(cls, "checkpoint", "method = 'student' needs checkpoint = DIR (from `qie-bench "
                                    "distill`), or train_if_missing = true with student_layers", None)
                if not Path(o.checkpoint).expanduser().is_dir():
                    raise option_conflict(cls, "checkpoint", f"student checkpoint folder '{o.checkpoint}' not found "
                                    f"(relative paths are read from {Path.cwd()}); make it with `qie-bench distill`, "
                                    "or set train_if_missing = true", o.checkpoint)
            elif o.student_layers is None:
                raise option_conflict(cls, "student_layers", "train_if_missing = true needs student_layers = K "
                                "(fewer than the model's blocks)", None)
        return o


# --------------------------------------------------------------------------------------------
# compose

class _Problem(Exception):
    def __init__(self, loc: tuple[Any, ...], message: str, value: Any) -> None:
        super().__init__(message)
        self.loc, self.message, self.value = loc, message, value


def _check_step(i: int, step: Any) -> tuple[str, VariantOptions]:
    """Validate one step with its kind's own options class. Raises _Problem with its location."""
    if not isinstance(step, dict):
        raise _Problem(("steps", i), "must be a table such as { kind = \"nf4\" }", step)
    if "kind" not in step:
        raise _Problem(("steps", i, "kind"), "missing required key", step)
    kind = step["kind"]
    if not isinstance(kind, str):
        raise _Problem(("steps", i, "kind"), "must be a string naming a variant kind", kind)
    if kind == ComposeOptions.kind:
        raise _Problem(("steps", i, "kind"), "a step cannot itself be 'compose' (list its steps here instead)", kind)
    try:
        cls = OPTIONS.get(kind, "steps")
    except UserInputError as err:
        raise _Problem(("steps", i, "kind"), err.problem + (f" ({err.fix})" if err.fix else ""), kind) from None
    options = {k: v for k, v in step.items() if k != "kind"}
    try:
        return kind, cls.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        _key, problem, fix = describe_validation_error(first, cls)
        if problem == "unknown key":
            problem = f"unknown option for kind '{kind}'"
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        raise _Problem(("steps", i, *loc), problem + (f" ({fix})" if fix else ""), first.get("input")) from None


@OPTIONS.register("compose")
class ComposeOptions(VariantOptions):
    steps: tuple[dict[str, Any], ...] = Field(min_length=1, description="the variants to apply, in order: tables with kind and that kind's options")

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> ComposeOptions:  # type: ignore[override]
        # Validate each step first, so that an error carries its full location
        # (steps[1].compute_dtype), which a field validator's ValueError cannot.
        if isinstance(obj, dict) and isinstance(obj.get("steps"), (list, tuple)):
            for i, step in enumerate(obj["steps"]):
                try:
                    _check_step(i, step)
                except _Problem as p:
                    raise ValidationError.from_exception_data(
                        cls.__name__,
                        [{"type": PydanticCustomError("compose_step", "{message}", {"message": p.message}), "loc": p.loc,
                          "input": p.value}],
                    ) from None
        return super().model_validate(obj, *args, **kwargs)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        # The same checks for options built directly (ComposeOptions(steps=...)).
        for i, step in enumerate(v):
            try:
                _check_step(i, step)
            except _Problem as p:
                where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in p.loc[1:])
                raise ValueError(f"{where}: {p.message}") from None
        return v


    def step_options(self) -> list[VariantOptions]:
        """Each step's own validated options, in order."""
        return [_check_step(i, step)[1] for i, step in enumerate(self.steps)]

    def refusal(self, device: str, offload: str) -> tuple[str, str, str] | None:
        for i, options in enumerate(self.step_options()):
            found = options.refusal(device, offload)
            if found is not None:
                return (f"steps[{i}].{found[0]}", *found[1:])
        return None


# --------------------------------------------------------------------------------------------
# fp8

_TORCHAO_FP8 = ("weight-only", "dynamic")
# torchao 0.18 asserts this for the dynamic config only; weight-only FP8 dequantizes into a 16-bit
# matmul and runs anywhere (the CPU included), slower than bf16 where no FP8 kernel is used.
FP8_NEEDS = "FP8 x FP8 matmuls (torchao's dynamic FP8) need a CUDA GPU with compute capability 8.9 or higher (Ada, Hopper)"


@OPTIONS.register("fp8")
class Fp8Options(QuantOptions):
    """FP8 weights, three ways: diffusers layerwise casting (FP8 storage, each layer upcast to
    `compute_dtype` for its forward; runs anywhere), torchao weight-only (FP8 weights, bf16
    matmuls) or torchao dynamic (FP8 weights and per-row FP8 activations, FP8 matmuls)."""

    method: Literal["layerwise", "weight-only", "dynamic"] = Field(
        description="'layerwise' = diffusers FP8 storage; 'weight-only' / 'dynamic' = torchao ('dynamic': CUDA, capability >= 8.9)")
    storage: Literal["e4m3", "e5m2"] = Field("e4m3", description="FP8 storage format (method 'layerwise')")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="dtype each layer computes in (method 'layerwise')")
    keep_modules: tuple[str, ...] = Field(INT8_KEEP, description="fnmatch patterns of Linear layers kept in 16-bit (torchao methods)")

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Fp8Options:  # type: ignore[override]
        o = super().model_validate(obj, *args, **kwargs)
        given = o.model_fields_set
        if o.method == "layerwise":
            if "keep_modules" in given:
                raise option_conflict(cls, "keep_modules", "is only read by the torchao methods; layerwise casting skips "
                                      "the model's own patterns (positional embedding, norms)", o.keep_modules)
        else:
            for key in ("storage", "compute_dtype"):
                if key in given:
                    raise option_conflict(cls, key, "is only read when method = 'layerwise'", getattr(o, key))
        return o

    def refusal(self, device: str, offload: str) -> tuple[str, str, str] | None:
        if self.method not in _TORCHAO_FP8:
            return None
        if device == "cpu" and self.method == "dynamic":
            return ("method", f"method = '{self.method}' cannot run on the CPU: {FP8_NEEDS}",
                    "use method = 'weight-only' or 'layerwise' (both run on a CPU), or model.device = 'cuda'")
        if offload == "group":
            return ("method", f"method = '{self.method}' (torchao) and measurement.offload = 'group' do not mix "
                    "(diffusers' group offload cannot move torchao tensor subclasses)",
                    "use offload = 'model' or 'none', or method = 'layerwise'")
        return None


# --------------------------------------------------------------------------------------------
# gguf

# The types the `gguf` package can write (gguf.quants.quantize; the K-quants are read-only there)
# and diffusers' GGUF loader can read.
GGUF_WRITABLE = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
GGUF_BLOCK = 32  # weights per block of every writable type: rows must be a multiple


@OPTIONS.register("gguf")
class GGUFOptions(VariantOptions):
    """The transformer's weights in a GGUF block format, loaded through diffusers'
    `GGUFQuantizationConfig` (`from_single_file`): quantized here from the loaded base weights
    (`quant_type`), or read from a user's `.gguf` file (`file`)."""

    quant_type: Literal["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"] | None = Field(
        None, description="write the base weights in this type (the gguf package writes these)")
    file: str | None = Field(None, description="a local .gguf file of the transformer (e.g. a published Q4_K_M)")
    components: tuple[Literal["transformer"], ...] = Field(
        ("transformer",), min_length=1, max_length=1,
        description="only the transformer: diffusers' GGUF loader reads diffusers models, not the Qwen2.5-VL text encoder")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="dtype the dequantized matmuls compute in")
    keep_modules: tuple[str, ...] = Field((), description="fnmatch patterns of Linear layers kept in 16-bit (quant_type)")

    @field_validator("file")
    @classmethod
    def _file_exists(cls, v: str | None) -> str | None:
        if v is not None:
            path = Path(v).expanduser()
            if not path.is_file():
                raise ValueError(f"GGUF file '{v}' not found (relative paths are read from {Path.cwd()})")
            if path.suffix.lower() != ".gguf":
                raise ValueError(f"'{v}' is not a .gguf file")
        return v

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> GGUFOptions:  # type: ignore[override]
        o = super().model_validate(obj, *args, **kwargs)
        if (o.quant_type is None) == (o.file is None):
            raise option_conflict(cls, "quant_type", "give quant_type (quantize the base weights, one of "
                                  f"{', '.join(GGUF_WRITABLE)}) or file (a .gguf of the transformer), not both or neither",
                                  o.quant_type)
        if o.file is not None and "keep_modules" in o.model_fields_set:
            raise option_conflict(cls, "keep_modules", "is only read with quant_type (a file says itself what it quantized)",
                                  o.keep_modules)
        return o


# --------------------------------------------------------------------------------------------
# runtime options: how any variant runs (compile, attention backend, step cache), not what it is

# diffusers 0.42 attention backends (`AttentionBackendName`) a run may ask for, and what each
# needs: a CUDA device, and the Python package diffusers imports for it. The `*_hub` backends
# are left out: they download kernels from the Hub at run time, which a measured run never does.
ATTENTION_BACKENDS: dict[str, tuple[bool, str | None]] = {
    "native": (False, None),  # torch scaled_dot_product_attention, torch picks the kernel (the default)
    "_native_math": (False, None),  # SDPA's math kernel
    "_native_flash": (True, None),  # SDPA's flash kernel
    "_native_efficient": (True, None),  # SDPA's memory-efficient kernel
    "_native_cudnn": (True, None),  # SDPA's cuDNN kernel
    "flash": (True, "flash_attn"),  # flash-attn 2
    "_flash_3": (True, "flash_attn_interface"),  # flash-attn 3 (Hopper), built from source
    "sage": (True, "sageattention"),
    "xformers": (True, "xformers"),
}
AttentionBackend = Literal["native", "_native_math", "_native_flash", "_native_efficient", "_native_cudnn", "flash",
                           "_flash_3", "sage", "xformers"]


class _RuntimeSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FirstBlockCacheOptions(_RuntimeSection):
    """diffusers' FirstBlockCache: the first block always runs; when its output residual changed by
    less than `threshold` (relative mean absolute difference) since the last full forward, the
    other blocks are skipped and their cached residual is added instead."""

    kind: Literal["first-block"]
    threshold: float = Field(0.05, gt=0.0, le=10.0, description="relative change of the first block's residual "
                             "below which the remaining blocks are skipped (higher = more skips)")


class TaylorSeerCacheOptions(_RuntimeSection):
    """diffusers' TaylorSeer cache: the attention outputs (or, `lite`, the whole blocks) are
    predicted by a Taylor expansion between full forwards every `cache_interval` steps."""

    kind: Literal["taylorseer"]
    cache_interval: int = Field(5, ge=1, le=100, description="steps between full forwards once caching starts")
    disable_cache_before_step: int = Field(3, ge=1, le=500, description="first steps always computed in full")
    disable_cache_after_step: int | None = Field(None, ge=1, le=500, description="steps from here on computed in full")
    max_order: int = Field(1, ge=0, le=4, description="order of the Taylor expansion")
    factors_dtype: Literal["bf16", "fp32"] = Field("bf16", description="dtype the Taylor factors are held in")
    lite: bool = Field(False, description="skip whole blocks and predict the output projection (less memory)")


StepCacheOptions = Annotated[FirstBlockCacheOptions | TaylorSeerCacheOptions, Field(discriminator="kind")]


class RuntimeOptions(_RuntimeSection):
    """How a variant runs, whatever it is: a `runtime` table on any `[[variants]]` entry, e.g.
    ``runtime = { compile = "regional", attention = "_native_cudnn" }`` or
    ``runtime = { cache = { kind = "first-block", threshold = 0.05 } }``. Applied by the worker
    after the variant is built (``variants/runtime.py``) and recorded in its report."""

    compile: Literal["none", "regional"] = Field(
        "none", description="'regional' = torch.compile of each transformer block (compile_repeated_blocks(fullgraph=True))")
    attention: AttentionBackend | None = Field(None, description="diffusers attention backend of the transformer "
                                               "(unset = the model's default, torch SDPA)")
    cache: StepCacheOptions | None = Field(None, description="a step cache: { kind = 'first-block', threshold } or "
                                           "{ kind = 'taylorseer', cache_interval, ... }")

    @model_validator(mode="after")
    def _compatible(self) -> RuntimeOptions:
        if self.compile != "none" and self.cache is not None:
            # Both caches decide per call in Python (`torch.compiler.disable`d functions holding a
            # .item()), which a fullgraph compile of the blocks they hook cannot trace.
            raise ValueError(f"compile = '{self.compile}' and a step cache do not mix (the cache's per-step decision "
                             "breaks the blocks' fullgraph compile); use one of them per variant")
        return self

    @property
    def applied(self) -> bool:
        """Whether these options change anything."""
        return self.compile != "none" or self.attention is not None or self.cache is not None

    def refusal(self, device: str, offload: str) -> tuple[str, str, str] | None:
        """(option, problem, fix) when these options cannot run with the suite's device and offload
        mode, known from the settings alone (the worker checks the device and packages)."""
        if self.attention is not None and ATTENTION_BACKENDS[self.attention][0] and device == "cpu":
            return ("attention", f"attention = '{self.attention}' needs a CUDA GPU (model.device is 'cpu')",
                    "use attention = 'native' or '_native_math' on a CPU, or model.device = 'cuda'")
        if self.compile != "none" and offload in ("sequential", "group"):
            problem = (f"compile = '{self.compile}' and measurement.offload = '{offload}' do not mix (the offload "
                       "hooks on every block break the blocks' fullgraph compile)")
            return ("compile", problem, "use offload = 'model' or 'none' with compile")
        return None

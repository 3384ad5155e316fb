"""Weight-quantization variants: ``int8`` and ``nf4``, and the helpers they share.

- ``int8``, ``backend = "bnb"``: bitsandbytes LLM.int8 (``Linear8bitLt``, int8 weights with one
  fp32 scale per output row, outlier columns above ``threshold`` computed in 16-bit).
- ``int8``, ``backend = "torchao"``: torchao int8 weight-only (``Int8WeightOnlyConfig``: int8
  weights, one scale per output row, dequantized in the matmul).
- ``nf4``: bitsandbytes 4-bit NormalFloat (``Linear4bit``, blocks of 64 weights with one absmax
  each; ``double_quant`` quantizes the absmax values too), computing in ``compute_dtype``.

What is quantized: every ``torch.nn.Linear`` of the listed ``components`` whose name does not
match one of ``keep_modules``. Patterns are fnmatch patterns matched against the module's name
inside its component (``transformer_blocks.3.img_mod.1``) and against the name prefixed by the
component (``text_encoder.lm_head``), so ``text_encoder.*`` targets one component only. Kept
modules stay exactly as loaded. nf4 keeps by default the modulation layers, the input/output
projections and the time-text embedding (fully 4-bit edit models are reported to show tiled
artefacts); both kinds keep the text encoder's ``lm_head`` (as transformers does by default).
Convolutions, embeddings and norms are never quantized; the VAE is refused unless
``allow_vae = true`` (and the released VAE has no Linear layers).

What the default keep list costs at full size (random-full on an H200, ``module_weight_bytes``
of the transformer; bf16 = 38.05 GiB): the modulation layers are 120 Linear(3072, 18432), 6.8B of
the 20.4B weights, so nf4 with the defaults holds 19.27 GiB — as much as int8 (bnb 19.05 GiB,
torchao 19.06 GiB). Keeping only ``img_in``, ``txt_in``, ``proj_out``, ``norm_out*`` and
``time_text_embed*`` gives 9.88 GiB, quantizing everything 9.82 GiB. The quantized layers
themselves hold 0.258 of their bf16 bytes with nf4 and 0.501 with int8.

How it is built, identically for the three model sources:

- ``pretrained``: quantized while loading, as users do, through diffusers'
  ``PipelineQuantizationConfig`` (``load_plan().pretrained_kwargs``; a ``quant_mapping`` with one
  config per component, because diffusers' and transformers' configs differ in their skip-list
  syntax and their torchao signatures). The skip list is the exact module names that
  ``keep_modules`` selects in the released architecture, enumerated on the meta device.
  diffusers 0.42's bitsandbytes loader refuses to run without a GPU ("No GPU found"), although
  bitsandbytes itself quantizes on CPU; without CUDA the bnb kinds therefore load 16-bit weights
  and convert in place (same library call on the same 16-bit weights, so the same quantized
  values; only the load-time peak differs). ``apply`` then checks the loaded modules against the
  selection, quantizes in place whatever the loader left (so these variants also work as a later
  step of a ``compose``) and reports.
- ``tiny`` and ``random-full``: built in bf16, then ``apply`` replaces the selected Linear layers
  in place with the same libraries' layers (bitsandbytes' ``quantize_4bit`` /
  ``int8_vectorwise_quant`` then ``Params4bit`` / ``Int8Params``; torchao's ``quantize_``).

bitsandbytes 0.50 and torchao 0.18 both quantize and run these layers on CPU, so every path here
runs on a CPU; only diffusers' quantize-while-loading for bnb needs a GPU (see above).

Not cached: converting the full-size transformer in place takes 0.2–0.6 s on an H200 (0.9 s
with the text encoder) — less than hashing and reading back the 10–20 GiB a
cache entry would hold — and bitsandbytes/torchao states do not round-trip through plain
safetensors without library-specific code. They are rebuilt each time; ``cache.py`` serves the
variants that are expensive to build (pruning with importance scores, distilled students).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from ..models import LoadPlan, module_weight_bytes
from .base import DTYPES, VARIANTS, ComponentFormat, Variant, VariantReport, built_report
from .options import INT8_KEEP, NF4_BLOCKSIZE, NF4_KEEP, NF4_KEEP_MODULATION, Int8Options, NF4Options, QuantOptions  # noqa: F401

# Name lists longer than this are recorded as patterns (digits replaced by *) with counts.
MAX_LISTED = 40


def _library_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------------------------
# Shared helpers


def is_quantized_layer(module: torch.nn.Module) -> bool:
    """A Linear-like layer whose weight is already quantized (bitsandbytes or torchao)."""
    try:
        import bitsandbytes as bnb

        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            return True
    except ImportError:
        pass
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    weight = getattr(module, "weight", None)
    return isinstance(module, torch.nn.Linear) and weight is not None and is_traceable_wrapper_subclass(weight)


def quantization_of(module: torch.nn.Module) -> str | None:
    """A short name of how a layer's weight is held: 'nf4', 'fp4', 'int8-bnb', 'int8-torchao'
    (or the torchao tensor class), or None for a plain 16/32-bit layer."""
    try:
        import bitsandbytes as bnb

        if isinstance(module, bnb.nn.Linear4bit):
            return getattr(module.weight, "quant_type", "4bit")
        if isinstance(module, bnb.nn.Linear8bitLt):
            return "int8-bnb"
    except ImportError:
        pass
    if is_quantized_layer(module):
        cls = type(module.weight).__name__
        return "int8-torchao" if cls == "Int8Tensor" else f"torchao:{cls}"
    return None


def matches(component: str, name: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern matching `name` (inside `component`) or `component.name`, else None."""
    for p in patterns:
        if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(f"{component}.{name}", p):
            return p
    return None


def summarize_names(names: list[str]) -> list[str] | dict[str, int]:
    """The names themselves when few; else each shape of name (indices as *) with its count."""
    if len(names) <= MAX_LISTED:
        return list(names)
    return dict(Counter(re.sub(r"(?<=\.)\d+(?=\.|$)", "*", n) for n in names))


@dataclass
class Selection:
    """Which Linear layers of one component a variant quantizes and which it keeps."""

    component: str
    quantize: list[str] = field(default_factory=list)  # plain Linear layers to convert
    done: list[str] = field(default_factory=list)  # selected and already quantized (by the loader)
    kept: list[str] = field(default_factory=list)  # matched keep_modules, plain
    kept_quantized: list[str] = field(default_factory=list)  # matched keep_modules but quantized already
    selected: list[str] = field(default_factory=list)  # quantize + done, in module order
    pattern_hits: Counter = field(default_factory=Counter)


def select_layers(component: str, module: torch.nn.Module, keep: tuple[str, ...]) -> Selection:
    sel = Selection(component)
    for name, child in module.named_modules():
        if not isinstance(child, torch.nn.Linear) or not name:
            continue
        hit = matches(component, name, keep)
        quantized = is_quantized_layer(child)
        if hit:
            sel.pattern_hits[hit] += 1
            (sel.kept_quantized if quantized else sel.kept).append(name)
        else:
            (sel.done if quantized else sel.quantize).append(name)
            sel.selected.append(name)
    return sel


def released_layer_names(component: str) -> list[str]:
    """Names of the Linear layers of one component of the released architecture (meta device,
    no memory): what a skip list for quantize-while-loading must name."""
    from ..models import full_size_config

    with torch.device("meta"):
        if component == "transformer":
            from diffusers import QwenImageTransformer2DModel

            model = QwenImageTransformer2DModel(**full_size_config("transformer"))
        elif component == "text_encoder":
            from transformers import (
                Qwen2_5_VLConfig,
                Qwen2_5_VLForConditionalGeneration,
            )

            model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**full_size_config("text_encoder")))
        else:
            from diffusers import AutoencoderKLQwenImage

            model = AutoencoderKLQwenImage(**full_size_config("vae"))
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n]


def kept_names_for_loader(component: str, keep: tuple[str, ...]) -> list[str]:
    return [n for n in released_layer_names(component) if matches(component, n, keep)]


def replace_submodule(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _bias_param(old: torch.nn.Linear) -> torch.nn.Parameter | None:
    if old.bias is None:
        return None
    return torch.nn.Parameter(old.bias.data, requires_grad=False)


def to_nf4(old: torch.nn.Linear, compute_dtype: torch.dtype, double_quant: bool) -> torch.nn.Module:
    """A bitsandbytes Linear4bit (NF4) holding `old`'s weight, on `old`'s device."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    w = old.weight.data
    packed, state = bnbf.quantize_4bit(
        w.contiguous(), blocksize=NF4_BLOCKSIZE, compress_statistics=double_quant, quant_type="nf4", quant_storage=torch.uint8
    )
    new = bnb.nn.Linear4bit(
        old.in_features, old.out_features, bias=old.bias is not None, compute_dtype=compute_dtype,
        compress_statistics=double_quant, quant_type="nf4", quant_storage=torch.uint8, device="meta",
    )
    new.weight = bnb.nn.Params4bit(
        packed, requires_grad=False, quant_state=state, blocksize=NF4_BLOCKSIZE, compress_statistics=double_quant,
        quant_type="nf4", quant_storage=torch.uint8, module=new, bnb_quantized=True,
    )
    new.quant_state = state
    new.bias = _bias_param(old)
    guard_cpu_packing(new)
    return new.eval().requires_grad_(False)


def guard_cpu_packing(layer: Any) -> None:
    """bitsandbytes (>= 0.48) repacks a 4-bit weight for its AVX512-BF16 CPU kernel on the first
    CPU forward, and that repacking needs out_features % 32 == 0 and in_features % blocksize == 0;
    narrower layers (the tiny model's, and a few odd-shaped ones) fail with "shape '[288, 0]' is
    invalid". Such layers keep the generic kernel; the result is the same NF4 arithmetic."""
    blocksize = getattr(getattr(layer.weight, "quant_state", None), "blocksize", NF4_BLOCKSIZE) or NF4_BLOCKSIZE
    if getattr(layer, "support_avx512bf16_for_cpu", False) and (
            layer.out_features % 32 or layer.in_features % blocksize):
        layer.support_avx512bf16_for_cpu = False


class _OncePerMessage(logging.Filter):
    """Lets each distinct log message through once. bitsandbytes logs "MatMul8bitLt: inputs will
    be cast from torch.bfloat16 to float16" on every int8 matmul call (hundreds per edit)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self._seen:
            return False
        self._seen.add(text)
        return True


def _quiet_bnb_int8_log() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OncePerMessage) for f in logger.filters):
        logger.addFilter(_OncePerMessage())


def to_int8_bnb(old: torch.nn.Linear, threshold: float) -> torch.nn.Module:
    """A bitsandbytes Linear8bitLt (LLM.int8) holding `old`'s weight, on `old`'s device.

    Quantized with `int8_vectorwise_quant` directly: `Int8Params.to()` quantizes only weights
    that start on the CPU, so a weight already on the GPU would silently stay 16-bit.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    # bitsandbytes quantizes from fp16, as Int8Params does.
    cb, scb, _ = bnbf.int8_vectorwise_quant(old.weight.data.contiguous().to(torch.float16))
    new = bnb.nn.Linear8bitLt(
        old.in_features, old.out_features, bias=old.bias is not None, has_fp16_weights=False, threshold=threshold, device="meta"
    )
    new.weight = bnb.nn.Int8Params(cb, requires_grad=False, has_fp16_weights=False, CB=cb, SCB=scb)
    new.bias = _bias_param(old)
    return new.eval().requires_grad_(False)


def _weight_count(module: torch.nn.Module) -> int:
    return module_weight_bytes(module)[1]


def quantize_component(
    module: torch.nn.Module, sel: Selection, convert: Any = None, torchao_config: Any = None
) -> dict[str, int]:
    """Convert `sel.quantize` layers of `module` in place (bitsandbytes: `convert(old) -> new`,
    one layer at a time so at most one layer is held twice; torchao: one `quantize_` call).
    Returns measured bytes of the converted layers before and after, and their parameter count."""
    before = sum(module_weight_bytes(module.get_submodule(n))[0] for n in sel.quantize)
    params = sum(_weight_count(module.get_submodule(n)) for n in sel.quantize)
    if torchao_config is not None:
        from torchao.quantization import quantize_

        wanted = set(sel.quantize)
        if wanted:
            quantize_(module, torchao_config, filter_fn=lambda m, fqn: fqn in wanted and isinstance(m, torch.nn.Linear))
    else:
        for n in sel.quantize:
            replace_submodule(module, n, convert(module.get_submodule(n)))
    after = sum(module_weight_bytes(module.get_submodule(n))[0] for n in sel.quantize)
    return {"bytes_before": before, "bytes_after": after, "params": params}


class QuantVariant(Variant):
    """Shared machinery of int8 and nf4: layer selection, in-place conversion, reporting."""

    options: QuantOptions

    # -- what each kind provides
    def _library(self) -> str:
        raise NotImplementedError

    def _uses_bnb(self) -> bool:
        return True

    def _converter(self) -> tuple[Any, Any]:
        """(convert(old) -> new, None) for bitsandbytes, or (None, torchao config)."""
        raise NotImplementedError

    def _loader_configs(self) -> Any:
        """The PipelineQuantizationConfig for quantize-while-loading."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {}

    def _format(self) -> tuple[str, str]:
        """(storage format, compute dtype) of the layers this kind quantizes, as the typed
        report names them (report/floors.py PRECISIONS)."""
        raise NotImplementedError

    # -- shared
    def load_plan(self, source: str) -> LoadPlan:
        if source != "pretrained":
            return LoadPlan(dtype=torch.bfloat16)
        if self._uses_bnb() and not torch.cuda.is_available():
            # diffusers 0.42's bitsandbytes quantizer raises "No GPU found" without CUDA; the
            # same conversion then happens in `apply`, from the same 16-bit weights.
            return LoadPlan(dtype=torch.bfloat16)
        return LoadPlan(dtype=torch.bfloat16, pretrained_kwargs={"quantization_config": self._loader_configs()})

    def apply(self, loaded: Any) -> VariantReport:
        t0 = time.perf_counter()
        keep = self.options.keep_modules
        components: dict[str, Any] = {}
        hits: Counter = Counter()
        converted_any = False
        for comp in self.options.components:
            module = getattr(loaded.pipe, comp)
            sel = select_layers(comp, module, keep)
            hits.update(sel.pattern_hits)
            quantized_names = sel.selected
            if not quantized_names and not sel.kept:
                components[comp] = {"quantized": 0, "kept": 0, "note": "no Linear layers"}
                continue
            # Bytes of the layers that the loader quantized: 16-bit size estimated from the logical
            # weight count at the dtype the rest of the component is in.
            loader_bytes_after = sum(module_weight_bytes(module.get_submodule(n))[0] for n in sel.done)
            loader_params = sum(_weight_count(module.get_submodule(n)) for n in sel.done)
            measured = {"bytes_before": 0, "bytes_after": 0, "params": 0}
            if sel.quantize:
                convert, ao_config = self._converter()
                measured = quantize_component(module, sel, convert, ao_config)
                converted_any = True
            kept_bytes = sum(module_weight_bytes(module.get_submodule(n))[0] for n in sel.kept)
            kept_params = sum(_weight_count(module.get_submodule(n)) for n in sel.kept)
            itemsize = torch.tensor([], dtype=_float_dtype(module)).element_size()
            bytes_before = measured["bytes_before"] + _estimated_16bit_bytes(module, sel.done, itemsize)
            bytes_after = measured["bytes_after"] + loader_bytes_after
            info: dict[str, Any] = {
                "quantized": len(quantized_names),
                "kept": len(sel.kept),
                "quantized_modules": summarize_names(quantized_names),
                "kept_modules": summarize_names(sel.kept),
                "quantized_params": measured["params"] + loader_params,
                "bytes_before": bytes_before,
                "bytes_after": bytes_after,
                "bytes_ratio": round(bytes_after / bytes_before, 4) if bytes_before else None,
                "kept_params": kept_params,
                "kept_bytes": kept_bytes,
                "quantized_in_place": len(sel.quantize),
                "quantized_by_loader": len(sel.done),
            }
            if sel.done:
                info["bytes_before_estimated"] = True
                types = Counter(quantization_of(module.get_submodule(n)) for n in sel.done)
                info["loader_quantization"] = dict(types)
            if sel.kept_quantized:
                info["kept_but_already_quantized"] = summarize_names(sel.kept_quantized)
            components[comp] = info
        by_loader = any(c.get("quantized_by_loader") for c in components.values())
        if by_loader and converted_any:
            method = "partly quantized while loading (diffusers PipelineQuantizationConfig), the rest converted in place"
        elif by_loader:
            method = "quantized while loading (diffusers PipelineQuantizationConfig)"
        else:
            method = "converted in place after loading"
        changes: dict[str, Any] = {
            "method": method,
            "library": self._library(),
            **self._settings(),
            "components": components,
            "keep_modules": {p: hits.get(p, 0) for p in keep},
            "quantized": sum(c.get("quantized", 0) for c in components.values()),
            "quantized_params": sum(c.get("quantized_params", 0) for c in components.values()),
            "quantize_s": round(time.perf_counter() - t0, 4),
        }
        unmatched = [p for p in keep if not hits.get(p)]
        if unmatched:
            changes["keep_modules_unmatched"] = unmatched
        storage, compute = self._format()
        quantized = {c: ComponentFormat(base_dtype="bf16", quantization=storage, quantized_params=info["quantized_params"],
                                        compute_dtype=compute)
                     for c, info in components.items() if info.get("quantized_params")}
        for comp in self.options.components:  # layers the loader quantized (real weights) too
            for layer in getattr(loaded.pipe, comp).modules():
                if quantization_of(layer) in ("nf4", "fp4"):
                    guard_cpu_packing(layer)
        return built_report(loaded.pipe, changes, quantized=quantized)


def _float_dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.bfloat16


def _estimated_16bit_bytes(module: torch.nn.Module, names: list[str], itemsize: int) -> int:
    """What quantized-while-loading layers would hold unquantized: logical weights at `itemsize`
    bytes each, plus their (never quantized) bias as held."""
    total = 0
    for n in names:
        layer = module.get_submodule(n)
        bias = layer.bias.numel() if layer.bias is not None else 0
        total += (_weight_count(layer) - bias) * itemsize + (bias * layer.bias.element_size() if bias else 0)
    return total


# --------------------------------------------------------------------------------------------
# int8


@VARIANTS.register
class Int8Variant(QuantVariant):
    kind = "int8"
    Options = Int8Options
    description = "int8 weights: bitsandbytes LLM.int8 or torchao int8 weight-only"
    options: Int8Options

    def _uses_bnb(self) -> bool:
        return self.options.backend == "bnb"

    def apply(self, loaded: Any) -> VariantReport:
        if self._uses_bnb():
            _quiet_bnb_int8_log()
        return super().apply(loaded)

    def _library(self) -> str:
        return f"bitsandbytes {_library_version('bitsandbytes')}" if self._uses_bnb() else f"torchao {_library_version('torchao')}"

    def _settings(self) -> dict[str, Any]:
        if self._uses_bnb():
            return {"backend": "bnb", "scheme": "LLM.int8 (Linear8bitLt)", "threshold": self.options.threshold,
                    "activations": "cast to fp16 for the int8 matmul (bitsandbytes)"}
        return {"backend": "torchao", "scheme": "int8 weight-only (Int8WeightOnlyConfig, per-row scales)"}

    def _format(self) -> tuple[str, str]:
        # LLM.int8 multiplies in int8; torchao's weight-only int8 dequantizes into a bf16 matmul.
        return ("int8", "int8") if self._uses_bnb() else ("int8", "bf16")

    def _converter(self) -> tuple[Any, Any]:
        if self._uses_bnb():
            threshold = self.options.threshold
            return (lambda old: to_int8_bnb(old, threshold)), None
        from torchao.quantization import Int8WeightOnlyConfig

        return None, Int8WeightOnlyConfig()

    def _loader_configs(self) -> Any:
        from diffusers.quantizers import PipelineQuantizationConfig

        mapping: dict[str, Any] = {}
        for comp in self.options.components:
            skip = kept_names_for_loader(comp, self.options.keep_modules)
            diffusers_side = comp != "text_encoder"
            if self._uses_bnb():
                cls = _bnb_config_class(diffusers_side)
                mapping[comp] = cls(load_in_8bit=True, llm_int8_threshold=self.options.threshold,
                                    llm_int8_skip_modules=_skip_list(skip, diffusers_side))
            else:
                from torchao.quantization import Int8WeightOnlyConfig

                cls = _torchao_config_class(diffusers_side)
                mapping[comp] = cls(Int8WeightOnlyConfig(), modules_to_not_convert=_skip_list(skip, diffusers_side))
        return PipelineQuantizationConfig(quant_mapping=mapping)


# --------------------------------------------------------------------------------------------
# nf4


@VARIANTS.register
class NF4Variant(QuantVariant):
    kind = "nf4"
    Options = NF4Options
    description = "bitsandbytes 4-bit NormalFloat weights; modulation and in/out projections kept in 16-bit"
    options: NF4Options

    def _library(self) -> str:
        return f"bitsandbytes {_library_version('bitsandbytes')}"

    def _settings(self) -> dict[str, Any]:
        return {"quant_type": "nf4", "double_quant": self.options.double_quant, "compute_dtype": self.options.compute_dtype,
                "blocksize": NF4_BLOCKSIZE}

    def _format(self) -> tuple[str, str]:
        return "nf4", self.options.compute_dtype

    def _converter(self) -> tuple[Any, Any]:
        dtype, dq = DTYPES[self.options.compute_dtype], self.options.double_quant
        return (lambda old: to_nf4(old, dtype, dq)), None

    def _loader_configs(self) -> Any:
        from diffusers.quantizers import PipelineQuantizationConfig

        mapping: dict[str, Any] = {}
        for comp in self.options.components:
            diffusers_side = comp != "text_encoder"
            skip = kept_names_for_loader(comp, self.options.keep_modules)
            mapping[comp] = _bnb_config_class(diffusers_side)(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=self.options.double_quant,
                bnb_4bit_compute_dtype=DTYPES[self.options.compute_dtype],
                llm_int8_skip_modules=_skip_list(skip, diffusers_side),
            )
        return PipelineQuantizationConfig(quant_mapping=mapping)


def _bnb_config_class(diffusers_side: bool) -> Any:
    if diffusers_side:
        from diffusers import BitsAndBytesConfig
    else:
        from transformers import BitsAndBytesConfig
    return BitsAndBytesConfig


def _torchao_config_class(diffusers_side: bool) -> Any:
    if diffusers_side:
        from diffusers import TorchAoConfig
    else:
        from transformers import TorchAoConfig
    return TorchAoConfig


def _skip_list(names: list[str], diffusers_side: bool) -> list[str]:
    """Exact module names in each library's skip syntax: diffusers matches a name or a dotted
    prefix by plain substring; transformers treats each entry as a regular expression."""
    return list(names) if diffusers_side else [re.escape(n) for n in names]


__all__ = [
    "INT8_KEEP", "NF4_KEEP", "Int8Options", "Int8Variant", "NF4Options", "NF4Variant", "QuantOptions", "QuantVariant",
    "Selection", "is_quantized_layer", "matches", "quantization_of", "select_layers", "summarize_names",
    "to_int8_bnb", "to_nf4",
]

"""The variant contract: one small class per compression family, one registry.

A variant turns the loaded base pipeline into the compressed model, in two steps:
``load_plan()`` says how the base must be loaded (dtype; quantization config for real weights),
then ``apply()`` transforms the loaded pipeline in place and says what it changed. Its options
are a typed, frozen pydantic model validated when the suite is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from .options import OPTIONS, WEIGHT_COMPONENTS, VariantOptions, option_conflict
from .report import ComponentFormat, GenerationChange, VariantReport

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "bf16")


def base_dtype(module: torch.nn.Module) -> str:
    """The dtype holding most of a module's plain floating-point weights (quantized layers' packed
    weights are not floating point, or are tensor subclasses, and do not count)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    counts: dict[torch.dtype, int] = {}
    for p in module.parameters():
        if p.dtype in (torch.float32, torch.bfloat16, torch.float16) and not is_traceable_wrapper_subclass(p.data):
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return _dtype_name(max(counts, key=counts.__getitem__)) if counts else "bf16"


def built_report(pipe: Any, changes: dict[str, Any], *, quantized: dict[str, ComponentFormat] | None = None,
                 unmodelled_structure: str | None = None, generation: GenerationChange | None = None) -> VariantReport:
    """The typed report of a built pipeline: each component's base dtype and transformer blocks as
    they are now; `quantized` (component -> format with quantization, count and compute dtype)
    from the kind that quantized them."""
    formats: dict[str, ComponentFormat] = {}
    for c in WEIGHT_COMPONENTS:
        module = getattr(pipe, c, None)
        if module is None:
            continue
        q = (quantized or {}).get(c)
        base = base_dtype(module)
        formats[c] = q.model_copy(update={"base_dtype": base}) if q is not None else ComponentFormat(base_dtype=base)
    blocks = getattr(getattr(pipe, "transformer", None), "transformer_blocks", None)
    return VariantReport(formats=formats, transformer_blocks=len(blocks) if blocks is not None else None,
                         unmodelled_structure=unmodelled_structure, generation_overrides=generation or GenerationChange(),
                         changes=changes)


class Variant(ABC):
    kind: ClassVar[str]
    Options: ClassVar[type[VariantOptions]]
    description: ClassVar[str] = ""

    def __init__(self, name: str, options: VariantOptions) -> None:
        self.name = name
        self.options = options

    @abstractmethod
    def load_plan(self, source: str) -> Any:
        """A `qie_bench.models.LoadPlan` for this variant on this model source."""

    def apply(self, loaded: Any) -> VariantReport:
        """Transform `loaded.pipe` in place and say what it built (`built_report`). The default
        changes nothing."""
        return built_report(loaded.pipe, {})

    def check_device(self, device: torch.device, offload: str) -> None:
        """Raise UserInputError when this variant cannot run on `device` (e.g. FP8 kernels below
        compute capability 8.9). Called by the worker before the model is loaded."""


class VariantRegistry:
    """kind -> Variant class (the build side). Each kind's options class is registered in
    `options.OPTIONS`, which validates suites without torch; this registry adds the build code."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Variant]] = {}

    def register(self, cls: type[Variant]) -> type[Variant]:
        if cls.kind in self._classes:
            raise ValueError(f"variant kind '{cls.kind}' is registered twice")
        if OPTIONS.get(cls.kind) is not cls.Options:
            raise ValueError(f"variant kind '{cls.kind}': Options must be the class registered in options.OPTIONS")
        self._classes[cls.kind] = cls
        return cls

    def kinds(self) -> list[str]:
        return sorted(self._classes)

    def get(self, kind: str, where: str = "variants") -> type[Variant]:
        OPTIONS.get(kind, where)  # an unknown kind: the same error as when the suite was read
        return self._classes[kind]

    def validate_entry(self, entry: Any, where: str) -> Variant:
        """A suite's `[[variants]]` entry -> the variant, ready to build."""
        options = OPTIONS.validate_entry(entry, where)
        return self.get(entry.kind, where)(entry.name, options)


VARIANTS = VariantRegistry()

__all__ = ["DTYPES", "VARIANTS", "ComponentFormat", "GenerationChange", "Variant", "VariantOptions", "VariantRegistry",
           "VariantReport", "base_dtype", "built_report", "option_conflict"]

"""The variant contract: one small class per compression family, one registry.

A variant turns the loaded base pipeline into the compressed model, in two steps:
``load_plan()`` says how the base must be loaded (dtype; quantization config for real weights),
then ``apply()`` transforms the loaded pipeline in place and says what it changed. Its options
are a typed, frozen pydantic model validated when the suite is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from .options import OPTIONS, VariantOptions, option_conflict

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclass
class VariantReport:
    """What applying a variant did, recorded in results."""

    changes: dict[str, Any] = field(default_factory=dict)
    generation_overrides: dict[str, Any] = field(default_factory=dict)


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
        """Transform `loaded.pipe` in place. The default changes nothing."""
        return VariantReport()


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

__all__ = ["DTYPES", "VARIANTS", "Variant", "VariantOptions", "VariantRegistry", "VariantReport", "option_conflict"]

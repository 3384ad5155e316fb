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
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import UserInputError, did_you_mean
from ..validation import describe_validation_error

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


class VariantOptions(BaseModel):
    """Base of every variant's options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def option_conflict(cls: type, key: str, message: str, value: Any) -> ValidationError:
    """A validation error located at option `key` (e.g. one only read by another `method`), so
    the suite error names that option."""
    return ValidationError.from_exception_data(
        cls.__name__, [{"type": PydanticCustomError("option_conflict", "{message}", {"message": message}),
                        "loc": (key,), "input": value}])


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
    """kind -> Variant class. Rejects duplicate kinds; suggests close names for typos."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Variant]] = {}

    def register(self, cls: type[Variant]) -> type[Variant]:
        if cls.kind in self._classes:
            raise ValueError(f"variant kind '{cls.kind}' is registered twice")
        self._classes[cls.kind] = cls
        return cls

    def kinds(self) -> list[str]:
        return sorted(self._classes)

    def get(self, kind: str, where: str = "variants") -> type[Variant]:
        try:
            return self._classes[kind]
        except KeyError:
            hint = did_you_mean(kind, self._classes)
            raise UserInputError(
                f"{where}.kind", f"unknown variant kind '{kind}'", (hint + " " if hint else "") + f"known kinds: {', '.join(self.kinds())}"
            ) from None

    def validate_entry(self, entry: Any, where: str) -> Variant:
        cls = self.get(entry.kind, where)
        try:
            options = cls.Options.model_validate(entry.options)
        except ValidationError as err:
            key, problem, fix = describe_validation_error(err.errors()[0], cls.Options)
            if problem == "unknown key":
                problem = f"unknown option for kind '{entry.kind}'"
            raise UserInputError(f"{where}.{key}", problem, fix) from None
        return cls(entry.name, options)


VARIANTS = VariantRegistry()

"""Compositions: several registered variants applied one after another, as one variant.

```toml
[[variants]]
name = "pruned-nf4"
kind = "compose"
steps = [ { kind = "pruned", blocks = 40 }, { kind = "nf4" } ]
```

Each step is any registered kind with that kind's own options, validated by that kind's class
when the suite is read (an error names the step: ``variants[2] ('pruned-nf4').steps[1].compute_dtype``).

How it is built:

- ``load_plan`` is the FIRST step's plan: the base is loaded once, as the first step needs it
  (its dtype; for real weights, its quantize-while-loading config). Later steps' plans are not
  used, so put steps that act through their plan (``dtype``) first. A later step whose plan asks
  for different dtypes is recorded in ``changes["unused_load_plans"]``. The quantization kinds
  convert in place whatever the loader left unquantized, so they work as a later step.
- ``apply`` runs each step's ``apply`` in order on the same pipeline; ``changes`` lists each
  step's own changes (with its time), and generation overrides are merged in order, a later
  step winning (conflicts are recorded).

A step cannot itself be ``compose``: list its steps here instead.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ..errors import UserInputError
from ..validation import describe_validation_error
from .base import VARIANTS, Variant, VariantOptions, VariantReport


class _Problem(Exception):
    def __init__(self, loc: tuple[Any, ...], message: str, value: Any) -> None:
        super().__init__(message)
        self.loc, self.message, self.value = loc, message, value


def _check_step(i: int, step: Any) -> tuple[type[Variant], VariantOptions]:
    """Validate one step with its kind's own options class. Raises _Problem with its location."""
    if not isinstance(step, dict):
        raise _Problem(("steps", i), "must be a table such as { kind = \"nf4\" }", step)
    if "kind" not in step:
        raise _Problem(("steps", i, "kind"), "missing required key", step)
    kind = step["kind"]
    if not isinstance(kind, str):
        raise _Problem(("steps", i, "kind"), "must be a string naming a variant kind", kind)
    if kind == ComposeVariant.kind:
        raise _Problem(("steps", i, "kind"), "a step cannot itself be 'compose' (list its steps here instead)", kind)
    try:
        cls = VARIANTS.get(kind, "steps")
    except UserInputError as err:
        raise _Problem(("steps", i, "kind"), err.problem + (f" ({err.fix})" if err.fix else ""), kind) from None
    options = {k: v for k, v in step.items() if k != "kind"}
    try:
        return cls, cls.Options.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        _key, problem, fix = describe_validation_error(first, cls.Options)
        if problem == "unknown key":
            problem = f"unknown option for kind '{kind}'"
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        raise _Problem(("steps", i, *loc), problem + (f" ({fix})" if fix else ""), first.get("input")) from None


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


@VARIANTS.register
class ComposeVariant(Variant):
    kind = "compose"
    Options = ComposeOptions
    description = "several variants applied in order (e.g. pruned then nf4)"
    options: ComposeOptions

    def __init__(self, name: str, options: VariantOptions) -> None:
        super().__init__(name, options)
        self.steps: list[Variant] = []
        for i, step in enumerate(self.options.steps):
            cls, step_options = _check_step(i, step)
            self.steps.append(cls(f"{name}.steps[{i}]", step_options))

    def load_plan(self, source: str) -> Any:
        """The first step's plan (see the module docstring)."""
        return self.steps[0].load_plan(source)

    def apply(self, loaded: Any) -> VariantReport:
        first = self.load_plan(loaded.source)
        steps: list[dict[str, Any]] = []
        overrides: dict[str, Any] = {}
        conflicts: list[dict[str, Any]] = []
        unused: list[dict[str, Any]] = []
        for i, step in enumerate(self.steps):
            if i:
                plan = step.load_plan(loaded.source)
                if _dtypes(plan) != _dtypes(first):
                    unused.append({"step": i, "kind": step.kind, "asked": _dtypes(plan), "loaded": _dtypes(first)})
            t0 = time.perf_counter()
            report = step.apply(loaded)
            steps.append({"kind": step.kind, "changes": report.changes, "apply_s": round(time.perf_counter() - t0, 4)})
            for key, value in report.generation_overrides.items():
                if key in overrides and overrides[key] != value:
                    conflicts.append({"key": key, "was": overrides[key], "now": value, "step": i})
                overrides[key] = value
        changes: dict[str, Any] = {"steps": steps}
        if unused:
            changes["unused_load_plans"] = unused
        if conflicts:
            changes["generation_override_conflicts"] = conflicts
        return VariantReport(changes=changes, generation_overrides=overrides)


def _dtypes(plan: Any) -> dict[str, str]:
    from ..models import WEIGHT_COMPONENTS

    return {c: str(plan.dtype_of(c)).removeprefix("torch.") for c in WEIGHT_COMPONENTS}

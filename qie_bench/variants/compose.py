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

from .base import VARIANTS, ComponentFormat, GenerationChange, Variant, VariantOptions, VariantReport, built_report
from .options import ComposeOptions


@VARIANTS.register
class ComposeVariant(Variant):
    kind = "compose"
    Options = ComposeOptions
    description = "several variants applied in order (e.g. pruned then nf4)"
    options: ComposeOptions

    def __init__(self, name: str, options: VariantOptions) -> None:
        super().__init__(name, options)
        self.steps: list[Variant] = []
        for i, step_options in enumerate(self.options.step_options()):
            self.steps.append(VARIANTS.get(step_options.kind)(f"{name}.steps[{i}]", step_options))

    def load_plan(self, source: str) -> Any:
        """The first step's plan (see the module docstring)."""
        return self.steps[0].load_plan(source)

    def apply(self, loaded: Any) -> VariantReport:
        first = self.load_plan(loaded.source)
        steps: list[dict[str, Any]] = []
        overrides: dict[str, Any] = {}
        conflicts: list[dict[str, Any]] = []
        unused: list[dict[str, Any]] = []
        quantized: dict[str, ComponentFormat] = {}
        unmodelled: str | None = None
        for i, step in enumerate(self.steps):
            if i:
                plan = step.load_plan(loaded.source)
                if _dtypes(plan) != _dtypes(first):
                    unused.append({"step": i, "kind": step.kind, "asked": _dtypes(plan), "loaded": _dtypes(first)})
            t0 = time.perf_counter()
            report = step.apply(loaded)
            steps.append({"kind": step.kind, "changes": report.changes, "apply_s": round(time.perf_counter() - t0, 4)})
            # A later step's quantization of a component replaces an earlier one's.
            quantized.update({c: f for c, f in report.formats.items() if f.quantization is not None})
            unmodelled = unmodelled or report.unmodelled_structure
            for key, value in report.generation_overrides.as_update().items():
                if key in overrides and overrides[key] != value:
                    conflicts.append({"key": key, "was": overrides[key], "now": value, "step": i})
                overrides[key] = value
        changes: dict[str, Any] = {"steps": steps}
        if unused:
            changes["unused_load_plans"] = unused
        if conflicts:
            changes["generation_override_conflicts"] = conflicts
        return built_report(loaded.pipe, changes, quantized=quantized, unmodelled_structure=unmodelled,
                            generation=GenerationChange(**overrides))


def _dtypes(plan: Any) -> dict[str, str]:
    from ..models import WEIGHT_COMPONENTS

    return {c: str(plan.dtype_of(c)).removeprefix("torch.") for c in WEIGHT_COMPONENTS}

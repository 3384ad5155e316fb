"""Dtype variants: the whole pipeline (or chosen components) in fp32, bf16 or fp16.

fp16 is known to overflow in this model family (black or NaN images). It is not special-cased:
the runner checks every output for non-finite and constant images and records them per case.
"""

from __future__ import annotations

from ..models import WEIGHT_COMPONENTS, LoadPlan
from .base import DTYPES, VARIANTS, Variant, VariantReport, built_report
from .options import DtypeOptions


@VARIANTS.register
class DtypeVariant(Variant):
    kind = "dtype"
    Options = DtypeOptions
    description = "the pipeline loaded directly in one floating-point dtype"

    def load_plan(self, source: str) -> LoadPlan:
        target = DTYPES[self.options.dtype]
        return LoadPlan(dtype=DTYPES[self.options.others], component_dtypes={c: target for c in self.options.components})

    def apply(self, loaded) -> VariantReport:
        dtypes = {c: str(next(getattr(loaded.pipe, c).parameters()).dtype).removeprefix("torch.") for c in WEIGHT_COMPONENTS}
        return built_report(loaded.pipe, {"component_dtypes": dtypes})

"""What building a variant produced, as typed fields every kind fills (no torch import).

The worker records it in ``variants/<name>.build.json`` under ``"report"``; the report's floor
code validates it back (``VariantReport.model_validate``) and reads these fields instead of
decoding option names. ``changes`` stays as free detail for people.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Component = Literal["transformer", "text_encoder", "vae"]
# The rate a quantized layer's matmul can use: its compute dtype, or the quantized format itself
# ('fp8' for FP8 x FP8 kernels, 'int8' for LLM.int8's int8 matmul).
ComputeDtype = Literal["fp32", "bf16", "fp16", "fp8", "int8"]


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentFormat(_Typed):
    """How one component's weights are held after the build."""

    base_dtype: Literal["fp32", "bf16", "fp16"] = Field(description="dtype of the weights that are not quantized")
    quantization: str | None = Field(None, description="storage format of the quantized weights: 'int8', 'nf4', "
                                     "'fp8', 'q8_0', 'q4_0', ... (a name in report/floors.py PRECISIONS); None = none")
    quantized_params: int | None = Field(0, ge=0, description="weights held in `quantization` (logical count, "
                                         "not bytes); None: every weight of the component")
    compute_dtype: ComputeDtype | None = Field(None, description="what the quantized matmuls compute in")


class GenerationChange(_Typed):
    """Generation settings a variant needs (a step-distilled LoRA: 4 steps, no CFG)."""

    steps: int | None = Field(None, ge=1, le=500)
    true_cfg_scale: float | None = Field(None, ge=0.0, le=50.0)

    def as_update(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class RuntimeApplied(_Typed):
    """The runtime options the worker applied after building (``variants/runtime.py``)."""

    compile: Literal["none", "regional"] = "none"
    compiled_blocks: int = Field(0, ge=0, description="transformer blocks handed to torch.compile (compiled on first call)")
    attention: str | None = Field(None, description="diffusers attention backend set on the transformer; None = its default")
    cache: dict[str, Any] | None = Field(None, description="the step cache and its settings (kind, threshold, ...)")


class VariantReport(_Typed):
    """What a variant built. `formats`, `transformer_blocks` and `unmodelled_structure` are
    filled by the build (``base.built_report``); `offload` and `runtime` by the worker."""

    formats: dict[Component, ComponentFormat] = {}
    transformer_blocks: int | None = Field(None, ge=1, description="transformer blocks after the variant")
    unmodelled_structure: str | None = Field(None, description="why the floor model cannot follow the built "
                                             "architecture (e.g. width pruning); None when it can")
    offload: Literal["none", "model", "sequential", "group"] = "none"
    generation_overrides: GenerationChange = GenerationChange()
    runtime: RuntimeApplied = Field(RuntimeApplied(), description="runtime options applied after the build (worker)")
    changes: dict[str, Any] = {}


__all__ = ["ComponentFormat", "ComputeDtype", "GenerationChange", "RuntimeApplied", "VariantReport"]

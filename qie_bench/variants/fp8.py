"""FP8 variants: the transformer's (or the text encoder's) weights in 8-bit floating point.

- ``method = "layerwise"``: diffusers layerwise casting (``enable_layerwise_casting``; for the
  transformers text encoder ``hooks.apply_layerwise_casting``): weights stored in
  ``float8_e4m3fn`` (or e5m2) and upcast, one layer at a time, to ``compute_dtype`` for its
  forward. The model's own skip patterns (positional embedding, norms) stay 16-bit. Runs on any
  device, the CPU included.
- ``method = "weight-only"``: torchao ``Float8WeightOnlyConfig`` (FP8 weights, bf16 matmuls).
- ``method = "dynamic"``: torchao ``Float8DynamicActivationFloat8WeightConfig`` with per-row
  scales (``PerRow``): FP8 weights and activations, FP8 matmuls.

``dynamic`` needs a CUDA GPU of compute capability 8.9 or higher (Ada, Hopper; torchao 0.18
asserts it), and neither torchao method mixes with group offload; both are refused before
anything is loaded (when the suite is read if it names the device, else by the worker).
``weight-only`` dequantizes into a 16-bit matmul and runs anywhere, the CPU included. Layer selection and quantize-while-loading for real
weights are those of the int8/nf4 kinds (``quantize.py``).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..errors import UserInputError
from ..models import LoadPlan, module_weight_bytes
from .base import DTYPES, VARIANTS, ComponentFormat, VariantReport, built_report
from .options import FP8_NEEDS, Fp8Options
from .quantize import QuantVariant, _library_version, _skip_list, _torchao_config_class, kept_names_for_loader

_STORAGE = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


@VARIANTS.register
class Fp8Variant(QuantVariant):
    kind = "fp8"
    Options = Fp8Options
    description = "FP8 weights: diffusers layerwise casting (any device) or torchao weight-only / dynamic per-row"
    options: Fp8Options

    @property
    def _torchao(self) -> bool:
        return self.options.method != "layerwise"

    def check_device(self, device: torch.device, offload: str) -> None:
        if self.options.method != "dynamic":
            return
        where = f"variants ('{self.name}').method"
        if device.type != "cuda":
            raise UserInputError(where, f"method = '{self.options.method}' cannot run on {device.type}: {FP8_NEEDS}",
                                 "use method = 'weight-only' or 'layerwise'")
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            raise UserInputError(where, f"method = '{self.options.method}' cannot run on {torch.cuda.get_device_name(device)} "
                                 f"(compute capability {major}.{minor}): {FP8_NEEDS}", "use method = 'weight-only' or 'layerwise'")

    def load_plan(self, source: str) -> LoadPlan:
        if not self._torchao:
            # Layerwise casting upcasts weights, not inputs: the pipeline runs in compute_dtype.
            return LoadPlan(dtype=DTYPES[self.options.compute_dtype])
        return super().load_plan(source)

    # -- the torchao methods: QuantVariant's selection, conversion and reporting
    def _uses_bnb(self) -> bool:
        return False

    def _library(self) -> str:
        return f"torchao {_library_version('torchao')}"

    def _settings(self) -> dict[str, Any]:
        scheme = {"weight-only": "FP8 e4m3 weights, bf16 matmuls (Float8WeightOnlyConfig)",
                  "dynamic": "FP8 e4m3 weights and dynamic per-row FP8 activations "
                             "(Float8DynamicActivationFloat8WeightConfig, PerRow)"}[self.options.method]
        return {"method": self.options.method, "scheme": scheme}

    def _format(self) -> tuple[str, str]:
        return "fp8", ("fp8" if self.options.method == "dynamic" else "bf16")

    def _ao_config(self) -> Any:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig, PerRow

        if self.options.method == "dynamic":
            return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
        return Float8WeightOnlyConfig()

    def _converter(self) -> tuple[Any, Any]:
        return None, self._ao_config()

    def _loader_configs(self) -> Any:
        from diffusers.quantizers import PipelineQuantizationConfig

        mapping: dict[str, Any] = {}
        for comp in self.options.components:
            diffusers_side = comp != "text_encoder"
            skip = kept_names_for_loader(comp, self.options.keep_modules)
            mapping[comp] = _torchao_config_class(diffusers_side)(self._ao_config(),
                                                                  modules_to_not_convert=_skip_list(skip, diffusers_side))
        return PipelineQuantizationConfig(quant_mapping=mapping)

    # -- layerwise casting
    def apply(self, loaded: Any) -> VariantReport:
        if self._torchao:
            return super().apply(loaded)
        from diffusers.hooks import apply_layerwise_casting

        t0 = time.perf_counter()
        o = self.options
        storage, compute = _STORAGE[o.storage], DTYPES[o.compute_dtype]
        components: dict[str, Any] = {}
        quantized: dict[str, ComponentFormat] = {}
        for comp in o.components:
            module = getattr(loaded.pipe, comp)
            before = module_weight_bytes(module)[0]
            if hasattr(module, "enable_layerwise_casting"):  # a diffusers model: its own skip patterns
                module.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
            else:
                apply_layerwise_casting(module, storage_dtype=storage, compute_dtype=compute, skip_modules_pattern="auto")
            params = sum(p.numel() for p in module.parameters() if p.dtype == storage)
            after = module_weight_bytes(module)[0]
            components[comp] = {"fp8_params": params, "bytes_before": before, "bytes_after": after,
                                "bytes_ratio": round(after / before, 4) if before else None}
            quantized[comp] = ComponentFormat(base_dtype="bf16", quantization="fp8", quantized_params=params,
                                              compute_dtype=o.compute_dtype)
        changes = {"method": "layerwise", "library": f"diffusers {_library_version('diffusers')}",
                   "scheme": f"float8_{o.storage} storage, upcast to {o.compute_dtype} per layer (layerwise casting)",
                   "components": components, "quantize_s": round(time.perf_counter() - t0, 4)}
        return built_report(loaded.pipe, changes, quantized=quantized)

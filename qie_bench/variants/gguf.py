"""GGUF variants: the transformer's Linear weights in a ggml block format, loaded as users load
GGUF files, through diffusers' ``GGUFQuantizationConfig`` and ``from_single_file``.

- ``quant_type``: the loaded base transformer is written to a temporary ``.gguf`` file with the
  ``gguf`` package (``gguf.quants.quantize``; it writes Q8_0, Q5_1, Q5_0, Q4_1 and Q4_0 — the
  K-quants such as Q4_K_M are read-only there), then loaded back from that file with the model's
  own config. Every Linear weight whose rows are a multiple of the 32-weight block is quantized,
  except ``keep_modules``; everything else is written as F32 and loaded in ``compute_dtype``.
- ``file``: a user's ``.gguf`` of the transformer (e.g. a published Q4_K_M), loaded with the
  config of the suite's model; the file says what it quantized.

Block formats (ggml): 32 weights per block with one fp16 scale — Q8_0 34 bytes (1.0625 bytes per
weight, 0.531 of bf16), Q4_0 18 bytes (0.5625, 0.281 of bf16); Q4_1/Q5_1 add an fp16 minimum,
Q5_0/Q5_1 keep the fifth bits in 4 more bytes. diffusers dequantizes each layer's weight to
``compute_dtype`` in its forward (``GGUFLinear``), so matmuls run at the 16-bit rate.

Only the transformer: diffusers' GGUF loader reads diffusers models; the text encoder is a
transformers model (Qwen2.5-VL), whose GGUF loader does not cover this architecture.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from ..models import LoadPlan, module_weight_bytes
from .base import DTYPES, VARIANTS, ComponentFormat, Variant, VariantReport, built_report
from .options import GGUF_BLOCK, GGUFOptions
from .quantize import _library_version, matches, summarize_names


def quantize_rows(array: np.ndarray, qtype: Any, workers: int | None = None) -> np.ndarray:
    """`gguf.quants.quantize(array, qtype)`, with the rows split over threads for a large tensor.

    GGUF blocks run along the last axis, so rows quantize independently and the concatenated
    result is byte-for-byte the single call's; numpy releases the GIL inside its ufuncs, so the
    threads run in parallel (a 20B-parameter transformer: minutes single-threaded)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import gguf

    workers = workers or min(16, os.cpu_count() or 1)
    rows = array.reshape(-1, array.shape[-1])
    if workers <= 1 or rows.shape[0] < 2 * workers or rows.size < (1 << 22):
        return gguf.quants.quantize(array, qtype)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda chunk: gguf.quants.quantize(chunk, qtype), np.array_split(rows, workers, axis=0)))
    out = np.concatenate(parts, axis=0)
    return out.reshape(*array.shape[:-1], out.shape[-1])


def write_gguf(module: torch.nn.Module, quant_type: str, keep: tuple[str, ...], path: Path) -> dict[str, Any]:
    """Write `module`'s state dict to `path`: selected Linear weights in `quant_type`, every other
    tensor as F32. Returns which layers were quantized and kept, and why."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant_type]
    quantized, kept, not_blockable = [], [], []
    linear_weights: dict[str, str] = {}
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Linear) and name:
            linear_weights[f"{name}.weight"] = name
    writer = gguf.GGUFWriter(str(path), arch="qwen_image")
    for key, tensor in module.state_dict().items():
        array = tensor.detach().to("cpu", torch.float32).numpy()
        layer = linear_weights.get(key)
        if layer is not None and matches("transformer", layer, keep):
            kept.append(layer)
        elif layer is not None and array.shape[-1] % GGUF_BLOCK:
            not_blockable.append(layer)
        elif layer is not None:
            writer.add_tensor(key, quantize_rows(array, qtype), raw_dtype=qtype)
            quantized.append(layer)
            continue
        writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"quantized_modules": summarize_names(quantized), "kept_modules": summarize_names(kept),
            "kept_row_not_multiple_of_32": summarize_names(not_blockable), "quantized": len(quantized)}


def gguf_layers(module: torch.nn.Module) -> tuple[dict[str, int], int]:
    """(count of GGUF layers per quant type name, their logical weight count)."""
    types: dict[str, int] = {}
    params = 0
    for _name, child in module.named_modules():
        w = getattr(child, "weight", None)
        if w is not None and hasattr(w, "quant_type") and hasattr(w, "quant_shape"):
            t = getattr(w.quant_type, "name", str(w.quant_type))
            types[t] = types.get(t, 0) + 1
            params += int(np.prod(w.quant_shape))
    return types, params


@VARIANTS.register
class GGUFVariant(Variant):
    kind = "gguf"
    Options = GGUFOptions
    description = "the transformer in a GGUF block format (Q8_0, Q4_0, ... or a user's .gguf), loaded by diffusers"
    options: GGUFOptions

    def load_plan(self, source: str) -> LoadPlan:
        # The rest of the pipeline runs in the dtype the GGUF layers compute in.
        return LoadPlan(dtype=DTYPES[self.options.compute_dtype])

    def apply(self, loaded: Any) -> VariantReport:
        from diffusers import GGUFQuantizationConfig

        o, where = self.options, f"variants ('{self.name}')"
        t0 = time.perf_counter()
        pipe = loaded.pipe
        old = pipe.transformer
        dtype = DTYPES[o.compute_dtype]
        before = module_weight_bytes(old)
        changes: dict[str, Any] = {"library": f"gguf {_library_version('gguf')}, diffusers {_library_version('diffusers')}",
                                   "compute_dtype": o.compute_dtype}
        with tempfile.TemporaryDirectory(prefix="qie-gguf-") as tmp:
            config_dir = Path(tmp) / "config"
            old.save_config(str(config_dir))
            if o.file is not None:
                path = Path(o.file).expanduser()
                changes.update(source="file", file=str(path))
            else:
                path = Path(tmp) / "transformer.gguf"
                changes.update(source="quantized from the loaded weights", quant_type=o.quant_type,
                               **write_gguf(old, o.quant_type, o.keep_modules, path))
                changes["file_bytes"] = path.stat().st_size
            changes["write_s"] = round(time.perf_counter() - t0, 3)
            try:
                new = type(old).from_single_file(str(path), config=str(config_dir), torch_dtype=dtype,
                                                 quantization_config=GGUFQuantizationConfig(compute_dtype=dtype))
            except (ValueError, KeyError, RuntimeError, OSError) as err:
                raise UserInputError(f"{where}.file" if o.file else f"{where}.quant_type",
                                     f"diffusers cannot load the GGUF transformer: {str(err).splitlines()[0][:300]}") from None
        pipe.transformer = new.to(loaded.device).eval().requires_grad_(False)
        del old
        gc.collect()
        if loaded.device.type == "cuda":
            torch.cuda.empty_cache()
        types, params = gguf_layers(pipe.transformer)
        if not types:
            raise UserInputError(f"{where}.quant_type", "no layer of the transformer was quantized (every row length "
                                 "is not a multiple of 32, or every layer matched keep_modules)")
        after = module_weight_bytes(pipe.transformer)
        changes.update(gguf_layers=types, quantized_params=params, transformer_before={"weights_bytes": before[0]},
                       transformer_after={"weights_bytes": after[0]}, build_s=round(time.perf_counter() - t0, 3))
        quant = max(types, key=types.__getitem__).lower()
        if len(types) > 1:  # a mixed file (Q4_K_M holds Q4_K and Q6_K): the floor table takes the commonest
            changes["note"] = f"mixed quant types {types}; the typed report names the commonest"
        fmt = ComponentFormat(base_dtype="bf16", quantization=quant, quantized_params=params, compute_dtype=o.compute_dtype)
        return built_report(pipe, changes, quantized={"transformer": fmt})

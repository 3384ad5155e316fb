"""Emulating a smaller GPU on a larger one, and CPU offload modes.

A memory budget caps this process's torch allocator with
`torch.cuda.set_per_process_memory_fraction`. The CUDA context and libraries' own memory are
outside the allocator but count on a real card, so the cap is the budget minus the context
measured through NVML right after CUDA starts: an 8 GiB budget then means 8 GiB of NVML process
memory, as on an 8 GiB card (less whatever the driver keeps there). The NVML figures recorded
per case check it.

Where NVML has no per-process figure (inside many containers), the context is the device's used
memory after CUDA started minus before (`measure_context`); where neither can be had the budget
is refused, never applied with a context of 0.

The driver's own reservation is not in the budget: NVML's device figure runs a constant ~480 MiB
above process memory on an H100 (nvidia-smi's memory.reserved; measured over 49 records, 489 MiB
in every one without offload). A real 8 GiB card loses a few hundred MiB the same way, so to
emulate one conservatively give the budget as the card size minus that (e.g. 7.5GiB).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from .memory import Nvml

OFFLOAD_MODES = ("none", "model", "sequential", "group")
LAZY_KERNEL_ALLOWANCE_BYTES = 256 * 2**20


def start_cuda(device: torch.device) -> None:
    torch.ones(1, device=device)
    torch.cuda.synchronize(device)


class ContextUnmeasurable(RuntimeError):
    """The CUDA context's size cannot be known, so a budget cannot be applied honestly."""


def measure_context(device: torch.device, nvml: Nvml) -> tuple[int, str]:
    """The memory this process holds on the GPU outside the torch allocator (CUDA context,
    libraries' own memory), and how it was measured:

    - "nvml-process": NVML's per-process figure minus what the allocator reserved;
    - "nvml-device-delta": where NVML has no per-process figure (common in containers), the
      device's used memory now minus before this process created its context, minus reserved
      (another process changing its memory in between would move it: the GPU state records
      other processes).

    Raises ContextUnmeasurable where neither can be had: never 0 for unknown."""
    reserved = torch.cuda.memory_reserved(device)
    used = nvml.process_used(os.getpid())
    if used is not None:
        return used - reserved, "nvml-process"
    now = nvml.device_used()
    if now is not None and nvml.used_before_context is not None:
        return now - nvml.used_before_context - reserved, "nvml-device-delta"
    why = ("NVML is unavailable" if not nvml.available else
           "NVML gives no per-process figure and the CUDA context existed before the device baseline")
    raise ContextUnmeasurable(
        f"measurement.memory_budget: cannot measure the CUDA context ({why}), so the budget cannot "
        "be applied; run without memory_budget, or where NVML reports per-process memory")


def apply_memory_budget(device: torch.device, budget_bytes: int, nvml: Nvml) -> dict[str, Any]:
    """Cap the allocator so context + allocator stay within `budget_bytes`. Call before the
    model is built (so loading itself is capped, as on a small card)."""
    if device.type != "cuda":
        raise RuntimeError("measurement.memory_budget needs a CUDA device (it caps the torch allocator)")
    start_cuda(device)
    total = torch.cuda.get_device_properties(device).total_memory
    reserved = torch.cuda.memory_reserved(device)
    context, measured_by = measure_context(device, nvml)
    # The allocator may hold at most budget - context (what is already reserved counts), less
    # an allowance for kernels CUDA loads lazily later (measured: the context grows by ~60 MiB
    # over the first full-size edit), which on a real card would come out of the same memory.
    cap = max(0, budget_bytes - context - LAZY_KERNEL_ALLOWANCE_BYTES)
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    return {"memory_budget_bytes": budget_bytes, "device_total_bytes": total, "context_at_cap_bytes": context,
            "context_measured_by": measured_by, "allocator_cap_bytes": cap, "reserved_at_cap_bytes": reserved}


def apply_offload(pipe: Any, mode: str, device: torch.device) -> dict[str, Any]:
    """Enable one of diffusers' offload modes on a built pipeline. Weights leave the GPU and are
    moved in as needed; the measured latency then includes the transfers."""
    if mode == "none":
        return {"offload": "none"}
    if device.type != "cuda":
        raise RuntimeError(f"offload = '{mode}' needs a CUDA device")
    index = device.index or 0
    info: dict[str, Any] = {"offload": mode}
    if mode == "model":
        # Whole components move to the GPU when used: text encoder, then transformer, then VAE.
        pipe.enable_model_cpu_offload(gpu_id=index)
    elif mode == "sequential":
        # Every submodule moves in for its own forward: the smallest footprint, the slowest.
        pipe.enable_sequential_cpu_offload(gpu_id=index)
    elif mode == "group":
        info.update(_apply_group_offload(pipe, device))
    else:  # validated in the suite; kept for a clear failure if called directly
        raise ValueError(f"unknown offload mode '{mode}'")
    torch.cuda.empty_cache()
    return info


# What streams block by block. diffusers' block-level group offloading looks for ModuleLists
# among a module's direct children only and moves everything else as one "unmatched" group;
# Qwen2.5-VL's layers sit two levels down, so the language model and the vision tower are
# offloaded each on its own (naming them as nested `block_modules` instead registers diffusers'
# stream-prefetch hook twice and fails). What is left of the encoder (lm_head) stays resident.
def _group_offload_roots(pipe: Any) -> dict[str, torch.nn.Module]:
    encoder = pipe.text_encoder
    inner = getattr(encoder, "model", None)
    roots = {"transformer": pipe.transformer}
    if inner is not None and hasattr(inner, "language_model") and hasattr(inner, "visual"):
        roots.update({"text_encoder.model.language_model": inner.language_model,
                      "text_encoder.model.visual": inner.visual})
    else:  # another encoder class: its own block lists, if any
        roots["text_encoder"] = encoder
    return roots


# Children that their parent's caller uses directly, outside the parent's forward, so the group
# hook (which moves them in when the parent's forward starts) would be too late: Qwen2.5-VL looks
# up `language_model.embed_tokens` itself, to splice in the image features, before it calls the
# language model. They are hidden from diffusers while it installs its hooks, and stay resident.
_CALLED_FROM_OUTSIDE = ("embed_tokens",)


@contextlib.contextmanager
def _detached(module: torch.nn.Module, names: tuple[str, ...]) -> Iterator[None]:
    order = list(module._modules)
    held = {n: module._modules.pop(n) for n in names if n in module._modules}
    try:
        yield
    finally:
        module._modules.update(held)
        module._modules = {n: module._modules[n] for n in order}  # back in their place


def _apply_group_offload(pipe: Any, device: torch.device) -> dict[str, Any]:
    """Transformer blocks and text-encoder layers move in one at a time, the next one's transfer
    overlapped with compute on a side stream; the small VAE and the encoder's remainder stay."""
    from diffusers.hooks import apply_group_offloading

    roots = _group_offload_roots(pipe)
    refuse_bitsandbytes(roots)
    pipe.to("cpu")
    offloaded: set[int] = set()
    for module in roots.values():
        with _detached(module, _CALLED_FROM_OUTSIDE):
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1, use_stream=True)
            offloaded |= {id(p) for p in module.parameters()}
    resident = 0
    for module in pipe.text_encoder.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(id(p) in offloaded for p in own):
            if not list(module.children()):
                module.to(device)  # the layer's own .to(), so a quantized layer's state moves too
            else:
                for param in own:
                    param.data = param.data.to(device)
            resident += sum(p.numel() * p.element_size() for p in own)
    pipe.vae.to(device)
    return {"group_offload": {"blocks_per_group": 1, "use_stream": True, "streamed": list(roots),
                              "resident_text_encoder_bytes": resident}}


def refuse_bitsandbytes(roots: dict[str, torch.nn.Module]) -> None:
    """bitsandbytes layers do not survive diffusers 0.42's group offloading; say so up front.

    Measured on an H100 (random-full nf4-all, 8 GiB budget): the hooks move `param.data` only,
    and a bnb weight's quantization state is not a parameter. Kept on the GPU by hand, the
    first text-encoder pass ran and the second failed inside a bnb kernel with "invalid argument
    to getCurrentStream" (a CPU tensor where a CUDA one was expected); the tiny model aborted.
    A clear refusal at build time beats a crash in the middle of a case.
    """
    for name, module in roots.items():
        for sub in module.modules():
            if type(sub).__module__.startswith("bitsandbytes"):
                raise RuntimeError(
                    f"offload = 'group' cannot stream bitsandbytes layers ({name} has {type(sub).__name__}): "
                    "diffusers' group offloading moves parameters, not their quantization state; use "
                    "offload = 'model', or a torchao or unquantized variant with group offload")

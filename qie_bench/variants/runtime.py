"""Runtime options, applied to any built variant: regional compile, attention backend, step cache.

The options (``options.RuntimeOptions``, no torch) are a suite's ``runtime`` table on a
``[[variants]]`` entry. The worker calls ``check_runtime`` before loading (an option this device
or this install cannot run is a one-line error before any GPU time) and ``apply_runtime`` after
the variant is built. What was applied goes into the variant's report (``RuntimeApplied``).

- ``compile = "regional"``: diffusers' ``compile_repeated_blocks(fullgraph=True)``: each
  ``QwenImageTransformerBlock`` is compiled on its first call, so the compile cost lands in the
  worker's first edit (recorded as ``first_call_s``), not in the timed edits after warm-up.
- ``attention``: ``transformer.set_attention_backend(name)``.
- ``cache``: ``transformer.enable_cache(FirstBlockCacheConfig | TaylorSeerCacheConfig)``. Each
  cache class also counts its cache hits (transformer calls in which it replaced computation by
  its cache), which the timed edit records beside the transformer's calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import UserInputError
from .options import (
    ATTENTION_BACKENDS,
    FirstBlockCacheOptions,
    RuntimeOptions,
    TaylorSeerCacheOptions,
)
from .report import RuntimeApplied


class StepCache(ABC):
    """One step-cache kind: installs diffusers' cache on the transformer and counts its hits.

    `hits` counts transformer calls in which the cache replaced computation (since `reset`)."""

    Options: ClassVar[type]

    def __init__(self, options: Any) -> None:
        self.options = options
        self.hits = 0

    @abstractmethod
    def install(self, transformer: torch.nn.Module) -> None:
        """Enable the cache on `transformer` and hook its per-call decision to count hits."""

    def reset(self, transformer: torch.nn.Module) -> None:
        """Before an edit: a fresh cache state (the pipeline resets it at the end of a call, but a
        failed call ends early) and a zero hit count."""
        transformer._reset_stateful_cache()
        self.hits = 0

    def describe(self) -> dict[str, Any]:
        return self.options.model_dump(mode="json")


def _registry(module: torch.nn.Module) -> Any:
    return getattr(module, "_diffusers_hook", None)


class FirstBlockCache(StepCache):
    """FirstBlockCache: one decision per transformer call, by the first block's hook; a call in
    which it decides not to compute the remaining blocks is a hit."""

    Options = FirstBlockCacheOptions

    def install(self, transformer: torch.nn.Module) -> None:
        from diffusers.hooks import FirstBlockCacheConfig
        from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK

        blocks = getattr(transformer, "transformer_blocks", ())
        if len(blocks) < 2:
            raise UserInputError("runtime.cache", f"kind = 'first-block' needs at least 2 transformer blocks (this "
                                 f"variant has {len(blocks)})", "use another cache, or keep more blocks")
        transformer.enable_cache(FirstBlockCacheConfig(threshold=self.options.threshold))
        hook = _registry(blocks[0]).get_hook(_FBC_LEADER_BLOCK_HOOK)
        decide = hook._should_compute_remaining_blocks

        def counted(residual: torch.Tensor) -> bool:
            compute = decide(residual)
            if not compute:
                self.hits += 1
            return compute

        hook._should_compute_remaining_blocks = counted


class TaylorSeerCache(StepCache):
    """TaylorSeer: every hooked module (attention, or whole blocks in lite mode) follows the same
    step schedule, so one module's decision stands for the call; a call in which it predicts
    instead of computing is a hit."""

    Options = TaylorSeerCacheOptions

    def install(self, transformer: torch.nn.Module) -> None:
        from diffusers.hooks import TaylorSeerCacheConfig
        from diffusers.hooks.taylorseer_cache import _TAYLORSEER_CACHE_HOOK

        o = self.options
        transformer.enable_cache(TaylorSeerCacheConfig(
            cache_interval=o.cache_interval, disable_cache_before_step=o.disable_cache_before_step,
            disable_cache_after_step=o.disable_cache_after_step, max_order=o.max_order,
            taylor_factors_dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[o.factors_dtype],
            use_lite_mode=o.lite))
        hooked = [m for m in transformer.modules()
                  if _registry(m) is not None and _registry(m).get_hook(_TAYLORSEER_CACHE_HOOK) is not None]
        if not hooked:
            raise UserInputError("runtime.cache", "kind = 'taylorseer' found no module to cache in this transformer",
                                 "use kind = 'first-block'")
        hook = _registry(hooked[-1]).get_hook(_TAYLORSEER_CACHE_HOOK)
        measure = hook._measure_should_compute

        def counted() -> tuple[bool, Any]:
            compute, state = measure()
            if not compute:
                self.hits += 1
            return compute, state

        hook._measure_should_compute = counted


# options class -> cache class
STEP_CACHES: dict[type, type[StepCache]] = {c.Options: c for c in (FirstBlockCache, TaylorSeerCache)}


@dataclass
class AppliedRuntime:
    """What `apply_runtime` did: the report's record of it, and the step cache whose hits each
    timed edit reads (None without a cache)."""

    report: RuntimeApplied
    cache: StepCache | None = None


def check_runtime(options: RuntimeOptions | None, device: torch.device, where: str) -> None:
    """Raise UserInputError when these options cannot run on `device` with what is installed: an
    attention backend that needs CUDA or a missing package, compile on CUDA without Triton. Called
    by the worker before the model is loaded."""
    if options is None:
        return
    if options.attention is not None:
        needs_cuda, package = ATTENTION_BACKENDS[options.attention]
        if needs_cuda and device.type != "cuda":
            raise UserInputError(f"{where}.runtime.attention", f"attention = '{options.attention}' needs a CUDA GPU "
                                 f"(this run is on {device.type})", "use attention = 'native' or '_native_math'")
        from diffusers.models.attention_dispatch import (
            AttentionBackendName,
            _check_attention_backend_requirements,
        )

        try:
            _check_attention_backend_requirements(AttentionBackendName(options.attention))
        except (RuntimeError, ImportError) as err:
            raise UserInputError(f"{where}.runtime.attention", f"attention = '{options.attention}' cannot run here: "
                                 f"{str(err).splitlines()[0]}", f"install {package}" if package else
                                 "use attention = 'native'") from None
    if options.compile != "none" and device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise UserInputError(f"{where}.runtime.compile", f"compile = '{options.compile}' on a CUDA GPU needs Triton, "
                                 "which is not installed or does not support this GPU", "pip install triton, or "
                                 "remove compile")


def apply_runtime(pipe: Any, options: RuntimeOptions | None, where: str = "variants") -> AppliedRuntime:
    """Apply `options` to the built pipeline's transformer (compile last: it compiles what the
    others set up, lazily, on the first call). A cache the built transformer cannot take (e.g.
    first-block on a variant pruned to one block) is a UserInputError located at `where`."""
    if options is None or not options.applied:
        return AppliedRuntime(RuntimeApplied())
    transformer = pipe.transformer
    cache: StepCache | None = None
    if options.attention is not None:
        transformer.set_attention_backend(options.attention)
    if options.cache is not None:
        cache = STEP_CACHES[type(options.cache)](options.cache)
        try:
            cache.install(transformer)
        except UserInputError as err:
            raise UserInputError(f"{where}.{err.where}", err.problem, err.fix) from None
    compiled = 0
    if options.compile == "regional":
        repeated = tuple(getattr(transformer, "_repeated_blocks", ()) or ())
        compiled = sum(1 for m in transformer.modules() if type(m).__name__ in repeated)
        transformer.compile_repeated_blocks(fullgraph=True)
    report = RuntimeApplied(compile=options.compile, compiled_blocks=compiled, attention=options.attention,
                            cache=cache.describe() if cache is not None else None)
    return AppliedRuntime(report, cache)


__all__ = ["STEP_CACHES", "AppliedRuntime", "FirstBlockCache", "StepCache", "TaylorSeerCache", "apply_runtime",
           "check_runtime"]

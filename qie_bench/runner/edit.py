"""One timed edit: the pipeline's real `__call__`, with device-synchronised wall time, per-step
times from the step callback, memory peaks, and checks of the output (finite, not constant)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from ..models import LoadedModel
from ..suite import GenerationConfig
from .energy import EnergyWindow
from .gpu_state import GpuActivity
from .memory import MemoryPeaks, MemorySampler, Nvml

# What counts as running out of memory. torch raises OutOfMemoryError for the CUDA caching
# allocator; CUDA itself (a kernel's or a library's own allocation) and its libraries report it
# in a RuntimeError's message; the CPU allocator raises a RuntimeError with one of its phrases,
# or Python a MemoryError.
_OOM_PHRASES = (
    "CUDA error: out of memory",  # cudaErrorMemoryAllocation raised through C10_CUDA_CHECK
    "CUDA out of memory",  # older torch's allocator message, kept where it comes as a RuntimeError
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS could not allocate its workspace or handle
    "CUDNN_STATUS_ALLOC_FAILED",
    "can't allocate memory",
    "not enough memory",
    "DefaultCPUAllocator",
)


def oom_evidence(err: BaseException) -> str | None:
    """Why `err` counts as running out of memory (the type, or the phrase its message holds,
    also in the exceptions it was raised from), or None when it does not."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (torch.OutOfMemoryError, MemoryError)):
            return f"exception type {type(current).__name__}"
        if isinstance(current, RuntimeError):
            text = str(current)
            phrase = next((p for p in _OOM_PHRASES if p in text), None)
            if phrase is not None:
                return f"{type(current).__name__} message contains '{phrase}'"
        current = current.__cause__ or current.__context__
    return None


def is_oom(err: BaseException) -> bool:
    return oom_evidence(err) is not None


@dataclass
class EditProgress:
    """Where an edit got to. The caller keeps it, so that a failed edit's record can say in which
    stage it failed (an OOM in the VAE decode calls for tiling, one in the text encoder for
    offloading it) and what memory it had reached by then."""

    # "start", then "text-encode", "vae-encode", "denoise", "vae-decode": set by forward
    # pre-hooks on the components, so it follows the pipeline's own order of work.
    phase: str = "start"
    steps_done: int = 0
    warmup: bool = False  # the failure came in an untimed warm-up edit
    memory: MemoryPeaks | None = None

    def as_record(self) -> dict[str, Any]:
        peaks = self.memory.as_record() if self.memory is not None else {}
        return {"phase": self.phase, "steps_done": self.steps_done, "warmup": self.warmup, **peaks}


class CacheHits(Protocol):
    """A step cache's hit counter (``variants.runtime.StepCache``): `reset` before an edit, then
    `hits` = transformer calls in which the cache replaced computation."""

    hits: int

    def reset(self, transformer: Any) -> None: ...


@dataclass(frozen=True)
class ForwardCount:
    """The transformer's work in one edit: `calls` (forward calls: steps x 2 with true CFG) and
    `cache_hits` (calls a step cache served from its cache; None without a cache)."""

    calls: int
    cache_hits: int | None

    @property
    def full(self) -> int:
        """Forwards that computed every block (calls the cache did not serve)."""
        return self.calls - (self.cache_hits or 0)

    def as_record(self) -> dict[str, Any]:
        return {"transformer_calls": self.calls, "transformer_forwards": self.full, "cache_hits": self.cache_hits}


@dataclass
class EditResult:
    image: Image.Image
    latency_s: float
    encode_s: float | None
    denoise_s: float | None
    decode_s: float | None
    step_s: list[float]
    memory: MemoryPeaks
    output_finite: bool
    output_constant: bool
    width: int
    height: int
    energy: EnergyWindow
    activity: GpuActivity
    forwards: ForwardCount
    extra: dict[str, Any] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_pil(array: np.ndarray) -> Image.Image:
    """float HxWx3 in [0, 1] -> 8-bit RGB, as diffusers' numpy_to_pil does (round, not floor)."""
    clean = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    return Image.fromarray((clean * 255).round().clip(0, 255).astype("uint8"))


def run_edit(
    loaded: LoadedModel,
    images: list[Image.Image],
    instruction: str,
    gen: GenerationConfig,
    seed: int,
    nvml: Nvml,
    nvml_period_s: float,
    on_step: Any = None,
    progress: EditProgress | None = None,
    cache: CacheHits | None = None,
) -> EditResult:
    """Run one edit and measure it. Raises what the pipeline raises (the caller classifies OOM
    and reads `progress` for where it happened). `cache`: the variant's step cache, whose hits
    the result's `forwards` reports."""
    pipe, device = loaded.pipe, loaded.device
    progress = progress if progress is not None else EditProgress()
    step_ends: list[float] = []
    denoise_start: list[float] = []
    calls = [0]
    if cache is not None:
        cache.reset(pipe.transformer)

    def first_forward(_module: Any, _args: Any) -> None:
        calls[0] += 1
        if not denoise_start:
            _sync(device)
            denoise_start.append(time.perf_counter())
        progress.phase = "denoise"

    def step_callback(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        _sync(device)
        step_ends.append(time.perf_counter())
        progress.steps_done = step + 1
        if on_step is not None:
            on_step(step)
        return kwargs

    def entering(phase: str) -> Any:
        def pre_hook(_module: Any, _args: Any) -> None:
            progress.phase = phase
        return pre_hook

    generator = torch.Generator(device="cpu").manual_seed(seed)
    hooks = [pipe.transformer.register_forward_pre_hook(first_forward)]
    hooks += [module.register_forward_pre_hook(entering(phase)) for module, phase in (
        (pipe.text_encoder, "text-encode"), (pipe.vae.encoder, "vae-encode"), (pipe.vae.decoder, "vae-decode"))]
    kwargs: dict[str, Any] = dict(
        **gen.pipeline_kwargs(),
        image=images if len(images) > 1 else images[0],
        prompt=instruction,
        generator=generator,
        output_type="np",
        callback_on_step_end=step_callback,
    )
    # The sampler resets the peak counters: the edit's peaks are what it allocated on top of what
    # the cache holds. The worker releases the cache before each case's first edit (so a case's
    # peaks never include an earlier case's cache); releasing before every edit would make each
    # edit allocate its working memory again inside the timed window (+23 % on the tiny model on an
    # H200, measured) and cost a gc pass between edits.
    try:
        with MemorySampler(nvml, device, nvml_period_s) as sampler, loaded.call_context(), torch.inference_mode():
            progress.memory = sampler.peaks
            _sync(device)
            # The energy counter is read beside the timer, outside the window it times.
            e0 = nvml.energy_mj()
            t0 = time.perf_counter()
            out = pipe(**kwargs).images
            _sync(device)
            t1 = time.perf_counter()
            e1 = nvml.energy_mj()
    finally:
        for hook in hooks:
            hook.remove()
    array = np.asarray(out[0], dtype=np.float32)
    finite = bool(np.isfinite(array).all())
    constant = bool(finite and float(array.std()) == 0.0)
    steps = [b - a for a, b in zip([denoise_start[0], *step_ends[:-1]], step_ends)] if denoise_start and step_ends else []
    image = to_pil(array)
    return EditResult(
        image=image,
        latency_s=t1 - t0,
        encode_s=(denoise_start[0] - t0) if denoise_start else None,
        denoise_s=(step_ends[-1] - denoise_start[0]) if denoise_start and step_ends else None,
        decode_s=(t1 - step_ends[-1]) if step_ends else None,
        step_s=steps,
        memory=sampler.peaks,
        output_finite=finite,
        output_constant=constant,
        width=image.width,
        height=image.height,
        energy=EnergyWindow(e0, e1, t0, t1, nvml.energy_unavailable),
        activity=sampler.activity,
        forwards=ForwardCount(calls[0], cache.hits if cache is not None else None),
    )


def release_cache(device: torch.device) -> None:
    """Before each edit: drop unreferenced tensors and return the allocator's cached blocks, so
    that the edit's reserved and NVML peaks do not carry what earlier (larger) edits cached.
    cuBLAS workspaces stay: they are allocated memory, held alike in every edit after the first
    matrix product (warm-up), and freeing them would put their allocation inside the timed edit."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def release_memory(device: torch.device) -> None:
    """After building a variant or an OOM: drop what is no longer referenced, so that the next
    edit's peaks are its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        _clear_cublas_workspaces()


def _clear_cublas_workspaces() -> None:
    """cuBLAS keeps a workspace per thread and stream (32 MiB on Hopper) in allocated memory that
    empty_cache() does not free. Measured on an H200: the tiny distilled variant's allocator peak
    was 82.6 MB after training its student in the worker and 48.5 MB when the student came from
    the cache (autograd's thread had kept its workspace). Builds therefore run backward on the
    calling thread (worker.py), and this drops what workspaces can be reached: all threads' with
    the public call of newer torch, the calling thread's with the private one torch 2.11 has.
    The measuring thread's workspace is allocated again by its first matrix product (warm-up)."""
    for public in ("clear_cublas_workspaces", "_clear_cublas_workspaces"):
        fn = getattr(torch.cuda, public, None)
        if callable(fn):
            fn()
            return
    fn = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if callable(fn):
        fn()


def device_usable(device: torch.device) -> bool:
    """Can this process still allocate and compute on its device after a failure?"""
    try:
        x = torch.ones(1024, device=device)
        float((x * 2).sum())
        return True
    except Exception:
        return False

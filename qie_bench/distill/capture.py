"""Run the real edit pipeline over cases and record what its transformer sees.

Two recordings, from the same pipeline calls (text encoder, reference-image VAE encode, the
scheduler's own timesteps; the final VAE decode is skipped with ``output_type="latent"``):

- every transformer call's inputs (noisy + reference latents, text embeddings and mask, timestep,
  image shapes), the samples that distillation trains on;
- per block, how much the block changes its input: the mean cosine similarity of each token's
  hidden state before and after the block ("block influence" = 1 - cosine, as in ShortGPT).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

# The transformer keyword arguments a recorded call keeps (the rest are set per use).
_INPUT_KEYS = ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask", "timestep", "img_shapes",
               "guidance", "attention_kwargs", "additional_t_cond")


@dataclass
class TransformerCall:
    """One transformer call of the denoising loop, ready to replay on a teacher or a student."""

    case_id: str
    source: str  # "cond" / "uncond" (a step of the real loop) or "sampled" (a drawn timestep)
    step: int  # denoising step index; -1 for a sampled timestep
    sigma: float  # noise level (the pipeline passes timestep = sigma)
    n_noisy: int  # leading image tokens that are the noisy latents; the rest are reference latents
    inputs: dict[str, Any]

    def replay_inputs(self, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
            out[k] = v
        return out


@dataclass
class BlockInfluence:
    """Per block, 1 - mean cosine(block input, block output) over tokens and calls.

    `image` is measured on the image stream (the stream the model's output is read from and, in
    the real model, nearly all tokens); `text` on the text stream, for information (the last
    block's text output is discarded by the model, so its text figure does not matter).
    """

    image: list[float]
    text: list[float]
    calls: int
    cases: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        return {"image": [round(x, 6) for x in self.image], "text": [round(x, 6) for x in self.text],
                "calls": self.calls, "cases": self.cases,
                "definition": "1 - mean token cosine(block input, block output), image stream ranks"}


def case_seed_for(case: Any, gen: Any) -> int:
    return case.seed(gen.seed) if gen.seed_policy == "case-id" else gen.seed


def _pipeline_kwargs(case: Any, gen: Any, steps: int | None) -> dict[str, Any]:
    images = case.load_images()
    kwargs: dict[str, Any] = {
        **gen.for_source(case.source_size()).pipeline_kwargs(),  # a suite's area: the case's own size
        "image": images if len(images) > 1 else images[0],
        "prompt": case.instruction,
        "generator": torch.Generator(device="cpu").manual_seed(case_seed_for(case, gen)),
        "output_type": "latent",
    }
    if steps:
        kwargs["num_inference_steps"] = steps
    return kwargs


def _keep(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, list):
        return [_keep(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_keep(x) for x in v)
    if isinstance(v, dict):
        return {k: _keep(x) for k, x in v.items()}
    return v


def _noisy_tokens(img_shapes: Any) -> int:
    first = img_shapes[0][0]  # (frames, h/2, w/2) of the output latents of the first sample
    return int(math.prod(first))


def run_cases(
    loaded: Any,
    cases: Sequence[Any],
    gen: Any,
    *,
    record_calls: bool = False,
    influence: bool = False,
    steps: int | None = None,
    sampled_timesteps: int = 0,
    seed: int = 0,
    on_case: Callable[[int, Any], None] | None = None,
) -> tuple[list[TransformerCall], BlockInfluence | None]:
    """Run the pipeline once per case (the suite's generation settings, the case's own seed).

    With `record_calls`, returns every transformer call of the denoising loop (both CFG branches)
    plus `sampled_timesteps` extra calls per case at noise levels sigma ~ U(0.02, 1): the case's
    final latent x0 mixed with fresh noise as flow matching trains it, x = (1 - sigma) x0 +
    sigma * noise, with the case's own text embeddings and reference latents. With `influence`,
    also the per-block influence score. `steps` overrides the suite's step count.
    """
    pipe = loaded.pipe
    transformer = pipe.transformer
    blocks = transformer.transformer_blocks
    n_blocks = len(blocks)
    calls: list[TransformerCall] = []
    cos_img = torch.zeros(n_blocks, dtype=torch.float64)
    cos_txt = torch.zeros(n_blocks, dtype=torch.float64)
    n_obs = 0
    cfg = gen.true_cfg_scale > 1
    state: dict[str, Any] = {"case": None, "count": 0}
    rng = torch.Generator(device="cpu").manual_seed(seed)

    def on_transformer(_m: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        i = state["count"]
        state["count"] += 1
        if not record_calls:
            return
        inputs = {k: _keep(kwargs[k]) for k in _INPUT_KEYS if k in kwargs}
        inputs.setdefault("attention_kwargs", {})
        sigma = float(inputs["timestep"].float().flatten()[0])
        source = ("cond" if i % 2 == 0 else "uncond") if cfg else "cond"
        calls.append(TransformerCall(state["case"], source, i // 2 if cfg else i, sigma,
                                     _noisy_tokens(inputs["img_shapes"]), inputs))

    def on_block(index: int) -> Callable[..., None]:
        def hook(_m: Any, _args: Any, kwargs: dict[str, Any], output: Any) -> None:
            nonlocal n_obs
            enc_out, hid_out = output
            cos_img[index] += float(F.cosine_similarity(kwargs["hidden_states"].float(), hid_out.float(), dim=-1).mean())
            cos_txt[index] += float(
                F.cosine_similarity(kwargs["encoder_hidden_states"].float(), enc_out.float(), dim=-1).mean())
            if index == 0:
                n_obs += 1
        return hook

    handles = [transformer.register_forward_pre_hook(on_transformer, with_kwargs=True)]
    if influence:
        handles += [b.register_forward_hook(on_block(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        for ci, case in enumerate(cases):
            state.update(case=case.id, count=0)
            first = len(calls)
            with loaded.call_context(), torch.no_grad():
                x0 = pipe(**_pipeline_kwargs(case, gen, steps)).images
            if record_calls and sampled_timesteps:
                cond = next(c for c in calls[first:] if c.source == "cond")
                for _ in range(sampled_timesteps):
                    sigma = 0.02 + 0.98 * float(torch.rand((), generator=rng))
                    noise = torch.randn(x0.shape, generator=rng, dtype=torch.float32).to(x0.device, x0.dtype)
                    noisy = (1.0 - sigma) * x0 + sigma * noise
                    inputs = dict(cond.inputs)
                    hidden = cond.inputs["hidden_states"].clone()
                    hidden[:, : cond.n_noisy] = noisy.to(hidden.dtype)
                    inputs["hidden_states"] = hidden
                    inputs["timestep"] = torch.full_like(cond.inputs["timestep"], sigma)
                    calls.append(TransformerCall(case.id, "sampled", -1, sigma, cond.n_noisy, inputs))
            if on_case is not None:
                on_case(ci, case)
    finally:
        for h in handles:
            h.remove()
    scores = None
    if influence:
        n = max(n_obs, 1)
        scores = BlockInfluence(image=[1.0 - float(c) / n for c in cos_img], text=[1.0 - float(c) / n for c in cos_txt],
                                calls=n_obs, cases=[c.id for c in cases])
    return calls, scores


def block_influence(loaded: Any, cases: Sequence[Any], gen: Any, steps: int | None = None) -> BlockInfluence:
    """The per-block influence score over `cases` (see `run_cases`)."""
    _, scores = run_cases(loaded, cases, gen, influence=True, steps=steps)
    assert scores is not None
    return scores

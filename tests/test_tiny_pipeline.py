"""The tiny model source runs the real pipeline classes, deterministically, with no download."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qie_bench.cases import load_case_set
from qie_bench.models import LoadPlan, load_model, pipeline_weight_bytes
from qie_bench.models.tiny import build_tokenizer
from qie_bench.runner.edit import run_edit
from qie_bench.runner.memory import Nvml
from qie_bench.suite import GenerationConfig, ModelConfig

from pathlib import Path

CASES = Path(__file__).resolve().parent.parent / "suites" / "cases" / "edit-v1"


@pytest.fixture(scope="module")
def tiny():
    import torch

    return load_model(ModelConfig(source="tiny", device="cpu"), LoadPlan(dtype=torch.float32))


@pytest.fixture(scope="module")
def case():
    return load_case_set(CASES).get("rm-watermark-bottle")


GEN = GenerationConfig(steps=2, true_cfg_scale=4.0, width=64, height=64)


def _edit(tiny, case, seed: int) -> np.ndarray:
    result = run_edit(tiny, case.load_images(), case.instruction, GEN, seed, Nvml(enabled=False), 0.01)
    assert result.output_finite and not result.output_constant
    return np.asarray(result.image)


def test_real_classes(tiny) -> None:
    from diffusers import AutoencoderKLQwenImage, QwenImageEditPlusPipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer, Qwen2VLProcessor

    pipe = tiny.pipe
    assert isinstance(pipe, QwenImageEditPlusPipeline)
    assert isinstance(pipe.transformer, QwenImageTransformer2DModel)
    assert isinstance(pipe.vae, AutoencoderKLQwenImage)
    assert isinstance(pipe.text_encoder, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(pipe.tokenizer, Qwen2Tokenizer)
    assert isinstance(pipe.processor, Qwen2VLProcessor)
    sizes = pipeline_weight_bytes(pipe)
    assert set(sizes) == {"transformer", "text_encoder", "vae"}
    # fp32: 4 bytes per parameter (plus a few buffers)
    assert sizes["transformer"]["weights_bytes"] >= 4 * sizes["transformer"]["params"]


def test_same_seed_same_image_other_seed_other_image(tiny, case) -> None:
    a = _edit(tiny, case, 1234)
    b = _edit(tiny, case, 1234)
    c = _edit(tiny, case, 1235)
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_step_times_and_phases(tiny, case) -> None:
    import time

    r = run_edit(tiny, case.load_images(), case.instruction, GEN, 7, Nvml(enabled=False), 0.01)
    assert len(r.step_s) == GEN.steps
    assert all(s > 0 for s in r.step_s)
    assert r.memory.peak_vram_bytes is None and r.memory.rss_peak_bytes > 0
    # Each phase is charged with its own time: make the text encoder and the VAE decoder slower by
    # known sleeps (forward pre-hooks, counted) and the extra time must land in encode and decode,
    # not in denoise. (Phases adding up to the call is true by construction and proves nothing.)
    calls = {"text": 0, "decode": 0}

    def sleeper(kind: str, seconds: float):
        def hook(_module, _args) -> None:
            calls[kind] += 1
            time.sleep(seconds)
        return hook

    hooks = [tiny.pipe.text_encoder.register_forward_pre_hook(sleeper("text", 0.3)),
             tiny.pipe.vae.decoder.register_forward_pre_hook(sleeper("decode", 0.5))]
    try:
        slow = run_edit(tiny, case.load_images(), case.instruction, GEN, 7, Nvml(enabled=False), 0.01)
    finally:
        for h in hooks:
            h.remove()
    assert calls["text"] >= 1 and calls["decode"] >= 1
    extra_encode, extra_decode = 0.3 * calls["text"], 0.5 * calls["decode"]
    # a shared 2-core CPU: allow 0.15 s of scheduling noise per phase
    assert slow.encode_s - r.encode_s == pytest.approx(extra_encode, abs=0.15)
    assert slow.decode_s - r.decode_s == pytest.approx(extra_decode, abs=0.15)
    assert abs(slow.denoise_s - r.denoise_s) < 0.15
    assert slow.latency_s - r.latency_s == pytest.approx(extra_encode + extra_decode, abs=0.25)


def test_reference_area_is_a_tiny_profile_setting(tiny, case) -> None:
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as edit_plus

    real = edit_plus.VAE_IMAGE_SIZE
    seen = []
    original = tiny.pipe._encode_vae_image

    def spy(image, generator):
        seen.append(tuple(image.shape[-2:]))
        return original(image, generator)

    tiny.pipe._encode_vae_image = spy
    try:
        _edit(tiny, case, 1)
    finally:
        tiny.pipe._encode_vae_image = original
    # 128x128 area from ModelConfig's default tiny profile, and the module constant restored
    h, w = seen[0]
    assert abs(h * w - tiny.reference_area) <= 0.15 * tiny.reference_area
    assert edit_plus.VAE_IMAGE_SIZE == real == 1024 * 1024


def test_offline_tokenizer_encodes_both_languages() -> None:
    tok = build_tokenizer()
    for text in ("replace the background with a beach", "把背景换成海滩"):
        ids = tok(text).input_ids
        assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|image_pad|>") != tok.unk_token_id
    assert len(tok("<|vision_start|><|image_pad|><|vision_end|>").input_ids) == 3


def test_nonfinite_output_detected(tiny, case) -> None:

    # Poison the transformer's output projection: the pipeline then produces NaN latents,
    # which the VAE turns into a NaN image; the runner must see it, not save a black PNG as OK.
    proj = tiny.pipe.transformer.proj_out
    saved = proj.weight.data.clone()
    proj.weight.data.fill_(float("nan"))
    try:
        r = run_edit(tiny, case.load_images(), case.instruction, GEN, 3, Nvml(enabled=False), 0.01)
    finally:
        proj.weight.data.copy_(saved)
    assert r.output_finite is False
    assert isinstance(r.image, Image.Image)

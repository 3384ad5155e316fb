"""The `tiny` model source: the real Qwen-Image-Edit-2509 pipeline classes at toy size.

Every component is the class the released pipeline uses (QwenImageTransformer2DModel,
AutoencoderKLQwenImage, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer, Qwen2VLProcessor,
FlowMatchEulerDiscreteScheduler), randomly initialised from a fixed seed, so the pipeline's own
``__call__`` runs end to end — text encoder, reference-image VAE encode, denoising loop, VAE
decode — on a CPU in seconds and with no download. Quality numbers from it mean nothing;
it exists so every code path runs anywhere.

The tokenizer is built offline: a byte-level vocabulary (the 256 GPT-2 byte symbols, no merges)
plus the Qwen chat and vision special tokens, so Chinese and English instructions both encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Qwen's special tokens, in the order the released tokenizer gives them ids (after the vocab).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


@dataclass(frozen=True)
class TinySizes:
    """Toy sizes of each component; the suite's `[model.tiny]` table can override them."""

    transformer_layers: int = 2
    attention_head_dim: int = 16
    attention_heads: int = 3
    text_hidden: int = 16
    text_layers: int = 2
    vae_base_dim: int = 8
    vae_z_dim: int = 16


def build_tokenizer():
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte -> unicode table
    from transformers.tokenization_utils_base import AddedToken

    vocab = {sym: i for i, sym in enumerate(bytes_to_unicode().values())}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>")
    tok.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS[1:]]}
    )
    tok.add_tokens([AddedToken(QWEN_SPECIAL_TOKENS[0], special=True, normalized=False)], special_tokens=True)
    return tok


def build_processor(tokenizer, condition_area: int):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    # min/max pixels bound what the VL image processor resizes condition images to; the real
    # processor allows up to 12.8 MP, the toy one keeps condition images at `condition_area`.
    image_processor = Qwen2VLImageProcessor(
        min_pixels=28 * 28, max_pixels=max(condition_area, 28 * 28 * 4), patch_size=14, merge_size=2, temporal_patch_size=2
    )
    # The pipeline never passes video, but the processor class requires a video processor.
    video_processor = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor)


def text_encoder_config(sizes: TinySizes, tokenizer: Any) -> Any:
    """The toy Qwen2.5-VL config (text encoder of the tiny pipeline; the VLM judge's random stand-in)."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = 2
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": sizes.text_hidden,
            "intermediate_size": sizes.text_hidden * 2,
            "num_hidden_layers": sizes.text_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "vocab_size": len(tokenizer),
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={
            "depth": 2,
            "hidden_size": sizes.text_hidden,
            "intermediate_size": sizes.text_hidden,
            "num_heads": heads,
            "out_hidden_size": sizes.text_hidden,
        },
        hidden_size=sizes.text_hidden,
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    return config


def build_components(sizes: TinySizes, seed: int, condition_area: int) -> dict[str, Any]:
    """Build every pipeline component at toy size, each from ``seed`` so the set is reproducible."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    inner = sizes.attention_head_dim * sizes.attention_heads
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=sizes.vae_z_dim * 4,
        out_channels=sizes.vae_z_dim,
        num_layers=sizes.transformer_layers,
        attention_head_dim=sizes.attention_head_dim,
        num_attention_heads=sizes.attention_heads,
        joint_attention_dim=sizes.text_hidden,
        guidance_embeds=False,
        axes_dims_rope=(sizes.attention_head_dim // 2, sizes.attention_head_dim // 4, sizes.attention_head_dim // 4),
    )
    assert inner % 2 == 0
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=sizes.vae_base_dim,
        z_dim=sizes.vae_z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * sizes.vae_z_dim,
        latents_std=[1.0] * sizes.vae_z_dim,
    )
    torch.manual_seed(seed)
    config = text_encoder_config(sizes, tokenizer)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "processor": build_processor(tokenizer, condition_area),
    }

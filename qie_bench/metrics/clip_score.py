"""CLIP-Score of the output against the case's target caption (transformers CLIP, torchmetrics' formula).

CLIPScore(I, C) = max(100 * cos(E_I, E_C), 0), in [0, 100], higher is better, with openai
``clip-vit-large-patch14`` (torchmetrics' default CLIP-Score model). Preprocessing is the
model's own ``CLIPProcessor``: 224 px shortest-edge bicubic resize, 224 centre crop, CLIP
mean/std.

Why not ``torchmetrics.multimodal.CLIPScore`` itself: torchmetrics 1.9 calls
``model.get_image_features(...)`` and treats the result as a tensor, but transformers 5 returns a
``BaseModelOutputWithPooling`` whose ``pooler_output`` holds the projected embedding, so
torchmetrics' CLIPScore fails with ``AttributeError: ... has no attribute 'norm'``. We compute the
same thing — same processor calls, same features, same formula — reading ``pooler_output`` when
present (and accepting a plain tensor from transformers 4). The tests check equality with
torchmetrics' ``CLIPScore`` given the same model behind a small adapter.

A caption in Chinese (or Japanese/Korean script) is not scored: CLIP's text encoder was trained
on English, so its score would be noise. Such a case gives ``None`` with the reason "target
caption is not English"; a case set may still carry one (a team's own set).

One deliberate difference: a caption longer than the model's 77 tokens is truncated by the
tokenizer (``truncation=True``), which keeps the end-of-text token the text tower pools at.
torchmetrics instead cuts ``input_ids`` after tokenizing, dropping that token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from .base import Metric, Prepared, Reference
from .registry import register_metric
from .weights import CLIP_SCORE_MODEL

MAX_BATCH = 16
# CJK ideographs, kana and hangul: a caption with any of them is not English.
_NOT_ENGLISH = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def embedding(output: Any) -> torch.Tensor:
    """The projected embedding from ``get_image_features``/``get_text_features`` (transformers 4 or 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def clip_score_from_features(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """``max(100 * cos(image, text), 0)`` row by row, ``(B,)`` (torchmetrics' CLIPScore formula)."""
    image_features = image_features / image_features.norm(p=2, dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(p=2, dim=-1, keepdim=True)
    return (100 * (image_features * text_features).sum(dim=-1)).clamp(min=0)


def clip_score(images: Sequence[Image.Image], captions: Sequence[str], model: Any, processor: Any) -> torch.Tensor:
    """CLIP-Score per (image, caption) pair, ``(B,)``."""
    device = next(model.parameters()).device
    pixels = processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"].to(device)
    max_length = model.config.text_config.max_position_embeddings
    tokens = processor.tokenizer(list(captions), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    image_features = embedding(model.get_image_features(pixel_values=pixels))
    text_features = embedding(
        model.get_text_features(input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device))
    )
    return clip_score_from_features(image_features, text_features)


@register_metric
class CLIPScore(Metric):
    """Agreement of the output with the case's target caption."""

    name = "clip_score"
    direction = "higher"
    range = (0.0, 100.0)
    reference = Reference.TEXT
    library = "transformers"
    function = "transformers CLIPModel.get_image_features/get_text_features + torchmetrics CLIPScore formula"
    model_key = CLIP_SCORE_MODEL
    settings = {"formula": "max(100 * cos(E_image, E_text), 0)", "caption_tokens": "truncated to 77, EOS kept"}

    def unavailable(self, item: Prepared) -> str | None:
        if _NOT_ENGLISH.search(item.inputs.caption or ""):
            return "target caption is not English (CLIP's text encoder reads English only)"
        return super().unavailable(item)

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        model, processor = self.model.model
        values: list[float] = []
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            scores = clip_score([item.output for item in chunk], [item.inputs.caption or "" for item in chunk], model, processor)
            values += scores.tolist()
        return values

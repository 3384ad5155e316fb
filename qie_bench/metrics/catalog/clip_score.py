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

Model ``clip_vit_l14``: real weights are ``openai/clip-vit-large-patch14`` as a
``from_pretrained`` folder at ``<weights_dir>/clip-vit-large-patch14`` or
``<weights_dir>/openai/clip-vit-large-patch14``, or a snapshot in a Hugging Face hub cache:
``<weights_dir>`` used as one, then the default (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``); loaded with
``local_files_only=True``. The random stand-in is a tiny ``transformers.CLIPModel`` with the
real CLIP BPE tokenizer and processor.
"""

from __future__ import annotations

import re

import gzip
import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import Metric, Reference
from ..registry import register_metric
from ..weights import (
    ModelSpec,
    WeightsNotFound,
    deduplicated,
    hf_cache_snapshots,
    hf_hub_cache_dir,
    seeded,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..prepared import Prepared

MAX_BATCH = 16
# CJK ideographs, kana and hangul: a caption with any of them is not English.
_NOT_ENGLISH = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")

CLIP_SCORE_REPO = "openai/clip-vit-large-patch14"

# Tiny random stand-in. Vocabulary and context length are the real ones, so the real BPE
# CLIPTokenizer produces valid ids for it.
TINY_HF_CLIP_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 2, "max_position_embeddings": 77,
}
TINY_HF_CLIP_VISION: dict[str, Any] = {
    "image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 2,
}
TINY_HF_CLIP_PROJECTION = 32


def _hf_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a loadable CLIPModel + CLIPProcessor folder, or None if it is."""
    def has(*names: str) -> bool:
        return any((folder / n).is_file() for n in names)

    missing = []
    if not has("config.json"):
        missing.append("config.json")
    if not has("model.safetensors", "pytorch_model.bin"):
        missing.append("model.safetensors")
    if not has("preprocessor_config.json", "processor_config.json"):  # hub repos / transformers>=5 save_pretrained
        missing.append("preprocessor_config.json")
    if not (has("tokenizer.json") or (has("vocab.json") and has("merges.txt"))):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    return f"{folder} is incomplete (missing {', '.join(missing)})" if missing else None


def locate_hf_clip(weights_dir: Path | None, repo_id: str = CLIP_SCORE_REPO) -> Path:
    """A ``from_pretrained`` folder of ``repo_id`` (CLIP-Score); see the module docstring."""
    short = repo_id.split("/")[-1]
    folders: list[Path] = []
    caches: list[Path] = []
    if weights_dir is not None:
        folders += [weights_dir / short, weights_dir / repo_id]
        caches.append(weights_dir)
    caches.append(hf_hub_cache_dir())
    looked, problems = [], []
    for folder in folders:
        looked.append(str(folder))
        if folder.is_dir():
            problem = _hf_folder_problem(folder)
            if problem is None:
                return folder
            problems.append(problem)
    for cache in deduplicated(caches):
        looked.append(f"{cache}/models--{repo_id.replace('/', '--')}/snapshots/*")
        for snapshot in hf_cache_snapshots(cache, repo_id):
            problem = _hf_folder_problem(snapshot)
            if problem is None:
                return snapshot
            problems.append(problem)
    raise WeightsNotFound(looked, problems)


def clip_bpe_file() -> Path:
    """openai's CLIP BPE merges file, shipped inside open-clip-torch and openai-clip (found without importing them)."""
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
            if path.is_file():
                return path
    raise FileNotFoundError("bpe_simple_vocab_16e6.txt.gz not found in open_clip or clip (is open-clip-torch installed?)")


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from transformers.convert_slow_tokenizer import (
        bytes_to_unicode,  # GPT-2's byte -> unicode table
    )

    # Exactly openai's SimpleTokenizer construction: the first 48,894 merges of the file; vocab =
    # 256 byte symbols, the same with '</w>', one token per merge, then the two special tokens.
    with gzip.open(clip_bpe_file()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges  # type: ignore[return-value]


def build_clip_tokenizer() -> Any:
    """The CLIP BPE tokenizer (``transformers.CLIPTokenizer``) built offline from openai's vocab file.

    Gives the same ids as ``openai/clip-vit-*``'s tokenizer and ``clip.tokenize`` (tested).
    """
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges))


def tiny_hf_clip(seed: int) -> tuple[Any, Any]:
    """A tiny random ``transformers.CLIPModel`` and a real-configured ``CLIPProcessor``.

    The processor is what ``openai/clip-vit-*`` uses: 224 px shortest-edge bicubic resize, 224
    centre crop, CLIP mean/std (``CLIPImageProcessor()`` defaults), and the BPE tokenizer.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    config = CLIPConfig(
        text_config=TINY_HF_CLIP_TEXT, vision_config=TINY_HF_CLIP_VISION, projection_dim=TINY_HF_CLIP_PROJECTION
    )
    with seeded(seed):
        model = CLIPModel(config).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=build_clip_tokenizer())
    return model, processor


def load_hf_clip(folder: Path) -> tuple[Any, Any]:
    """``CLIPModel`` + ``CLIPProcessor`` from a local folder, in float32, never touching the network."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    return model, processor


def _to_device(pair: tuple[Any, Any], device: torch.device) -> tuple[Any, Any]:
    model, processor = pair
    return model.to(device), processor


CLIP_VIT_L14 = ModelSpec(
    key="clip_vit_l14",
    label=f"Hugging Face {CLIP_SCORE_REPO}",
    real_backbone=f"{CLIP_SCORE_REPO} (transformers CLIPModel)",
    random_backbone="tiny random transformers CLIPModel (ViT patch 32, 1 layer, width 32) + CLIP BPE tokenizer",
    locate=locate_hf_clip,
    build_real=lambda path, device: _to_device(load_hf_clip(path), device),
    build_random=lambda seed, device: _to_device(tiny_hf_clip(seed), device),
    how_to_get=f"hf download {CLIP_SCORE_REPO} (fills the hub cache), or "
    f"hf download {CLIP_SCORE_REPO} --local-dir <weights_dir>/{CLIP_SCORE_REPO.split('/')[-1]}",
)


def embedding(output: Any) -> torch.Tensor:
    """The projected embedding from ``get_image_features``/``get_text_features`` (transformers 4 or 5)."""
    import torch

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
    label = "CLIP-Score"
    direction = "higher"
    range = (0.0, 100.0)
    reference = Reference.TEXT
    fidelity_rank = 10
    order = 50
    library = "transformers"
    function = "transformers CLIPModel.get_image_features/get_text_features + torchmetrics CLIPScore formula"
    model = CLIP_VIT_L14
    settings = {"formula": "max(100 * cos(E_image, E_text), 0)", "caption_tokens": "truncated to 77, EOS kept"}

    def unavailable(self, item: Prepared) -> str | None:
        if _NOT_ENGLISH.search(item.inputs.caption or ""):
            return "target caption is not English (CLIP's text encoder reads English only)"
        return super().unavailable(item)

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        model, processor = self.loaded.model
        values: list[float] = []
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            scores = clip_score([item.output for item in chunk], [item.inputs.caption or "" for item in chunk], model, processor)
            values += scores.tolist()
        return values

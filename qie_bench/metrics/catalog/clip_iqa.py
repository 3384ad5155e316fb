"""CLIP-IQA (no-reference quality) through pyiqa's ``clipiqa`` metric, and its model (openai CLIP RN50).

pyiqa's ``CLIPIQA`` (metric name ``clipiqa``; Wang et al., AAAI 2023, with pyiqa's prompt
ensemble) scores an image by how much CLIP prefers the first prompt of five antonym pairs:
"Good image"/"bad image", "Sharp image"/"blurry image", "sharp edges"/"blurry edges",
"High resolution image"/"low resolution image", "Noise-free image"/"noisy image", as the mean
softmax probability, in [0, 1], higher is better. The backbone is openai CLIP RN50; the image is
fed at its native resolution (pyiqa does not resize; the attention pool runs without positional
embedding), normalised with CLIP's mean/std.

Model ``clip_rn50``: real weights are openai's ``RN50.pt``, looked up in
``<weights_dir>/RN50.pt``, ``<weights_dir>/clip/RN50.pt``, ``<torch hub dir>/clip/RN50.pt`` (where
pyiqa's ``clip_model.load`` downloads it) and ``~/.cache/clip/RN50.pt`` (openai-clip's default);
its SHA-256 (part of openai's URL) is checked. The random stand-in is a tiny
``pyiqa.archs.clip_model.CLIP`` (ModifiedResNet 1-1-1-1, width 8).
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import UserInputError
from ..base import Metric, Reference, size_groups
from ..registry import register_metric
from ..weights import (
    ModelSpec,
    deduplicated,
    file_hash,
    first_verified_file,
    seeded,
    torch_hub_dir,
)

if TYPE_CHECKING:
    import torch

    from ..prepared import Prepared

MAX_BATCH = 8  # images of one size per forward pass; bounds memory at ~1 MP inputs

# openai's URL for RN50 embeds the file's SHA-256 (pyiqa and openai-clip verify against it).
CLIP_RN50_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
)
CLIP_RN50_FILE = "RN50.pt"
CLIP_RN50_SHA256 = "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"

# Tiny random stand-in. Vocabulary and context length are the real ones, so the real tokenizer
# (openai-clip's inside pyiqa) produces valid ids for it.
# Tiny random stand-ins. Vocabulary and context length are the real ones, so the real
# tokenizers (openai-clip's inside pyiqa, the BPE CLIPTokenizer) produce valid ids for them.
TINY_OPENAI_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "image_resolution": 224,
    "vision_layers": (1, 1, 1, 1),
    "vision_width": 8,  # ModifiedResNet: attention-pool width 8 * 32 = 256, 4 heads
    "vision_patch_size": None,
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 64,  # pyiqa's build_model assumes 64-wide heads
    "transformer_heads": 1,
    "transformer_layers": 1,
}


def locate_clip_rn50(weights_dir: Path | None) -> Path:
    """openai CLIP RN50 (for CLIP-IQA); see the module docstring for the search order."""
    candidates = []
    if weights_dir is not None:
        candidates += [weights_dir / CLIP_RN50_FILE, weights_dir / "clip" / CLIP_RN50_FILE]
    candidates += [torch_hub_dir() / "clip" / CLIP_RN50_FILE, Path.home() / ".cache" / "clip" / CLIP_RN50_FILE]
    return first_verified_file(deduplicated(candidates), CLIP_RN50_SHA256)


def import_pyiqa_clipiqa() -> types.ModuleType:
    """Import ``pyiqa.archs.clipiqa_arch``, working around openai-clip's ``pkg_resources`` import.

    pyiqa's CLIP-IQA imports the ``clip`` package (openai-clip 1.0.1), whose first lines do
    ``from pkg_resources import packaging`` only to compare torch versions. setuptools >= 81 no
    longer ships ``pkg_resources``, so on a fresh environment the import fails. When — and only
    when — ``pkg_resources`` is missing, a stand-in module exposing the ``packaging`` package is
    placed in ``sys.modules`` for the duration of the import and removed afterwards (``clip``
    keeps its reference to ``packaging``), so nothing else ever sees a fake ``pkg_resources``.
    """
    try:
        return importlib.import_module("pyiqa.archs.clipiqa_arch")
    except ModuleNotFoundError as err:
        if err.name != "pkg_resources":
            raise
    import packaging.version

    shim = types.ModuleType("pkg_resources")
    shim.packaging = packaging  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("pyiqa.archs.clipiqa_arch")
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def tiny_openai_clip(seed: int) -> torch.nn.Module:
    """A tiny randomly initialised ``pyiqa.archs.clip_model.CLIP`` (ModifiedResNet image tower)."""
    import_pyiqa_clipiqa()
    from pyiqa.archs.clip_model import CLIP

    with seeded(seed):
        return CLIP(**TINY_OPENAI_CLIP).eval()


def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip with serialized code (``*/code/``) or ``constants.pkl``;
    telling it apart needs only the zip's directory, nothing is loaded."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def load_openai_clip(path: Path) -> torch.nn.Module:
    """An openai CLIP checkpoint (TorchScript archive as published, or a plain state dict) as pyiqa's CLIP.

    This is pyiqa's ``clip_model.load`` minus the download branch, and minus its bug with plain
    state-dict files (it retries ``torch.load`` on a handle already read to the end by the failed
    ``torch.jit.load``). Weights go through pyiqa's ``build_model``, then to float32 as pyiqa
    does on CPU.

    Loading policy: a plain file goes through ``torch.load(weights_only=True)``. OpenAI publishes
    RN50 only as a TorchScript archive, which ``weights_only`` cannot read and ``torch.jit.load``
    deserializes as code; it is opened only when its SHA-256 is the one in OpenAI's own URL (the
    file pyiqa and openai-clip themselves load this way). Any other TorchScript archive is refused.
    """
    import torch

    import_pyiqa_clipiqa()
    from pyiqa.archs.clip_model import build_model

    if is_torchscript_archive(path):
        if file_hash(path) != CLIP_RN50_SHA256:
            raise UserInputError(str(path), "is a TorchScript archive but not OpenAI's published RN50.pt "
                                 f"(sha256 {CLIP_RN50_SHA256[:12]}…); qie-bench does not run other TorchScript code",
                                 "use the genuine RN50.pt, or save the CLIP model's state_dict and point to that")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    return build_model(dict(state_dict)).float().eval()


# A name pyiqa's loader can neither download nor open: if the injection below ever stopped
# working (pyiqa renamed its loader), construction fails loudly instead of downloading RN50.
_NOT_A_CLIP_NAME = "<qie-bench: CLIP model injected, nothing to load>"


def build_clipiqa(clip_model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """pyiqa's ``CLIPIQA`` (metric ``clipiqa``: antonym prompts, no learned prompts) around ``clip_model``.

    ``CLIPIQA.__init__`` always obtains its CLIP through ``clip_model.load(backbone)``, which only
    takes a model name (and downloads it) or a file; there is no way to hand it a model. So the
    module-level ``load`` it calls is swapped for one returning ``clip_model`` while the
    constructor runs, then restored. Everything else — prompts, tokenization, normalisation,
    the forward pass — is pyiqa's.
    """
    clipiqa_arch = import_pyiqa_clipiqa()
    original = clipiqa_arch.load

    def injected(name: str, device: Any = "cpu", *args: Any, **kwargs: Any) -> torch.nn.Module:
        return clip_model

    clipiqa_arch.load = injected
    try:
        arch = clipiqa_arch.CLIPIQA(model_type="clipiqa", backbone=_NOT_A_CLIP_NAME, pretrained=False)
    finally:
        clipiqa_arch.load = original
    if arch.clip_model[0] is not clip_model:
        raise RuntimeError("pyiqa's CLIPIQA did not take the injected CLIP model")
    # CLIPIQA keeps its CLIP in a list (so it is not saved with it), which also hides it from
    # .eval()/.to(): set both on the CLIP model itself.
    clip_model.eval().to(device)
    return arch.eval().to(device)


CLIP_RN50 = ModelSpec(
    key="clip_rn50",
    label=f"openai CLIP RN50 ({CLIP_RN50_FILE})",
    real_backbone="openai CLIP RN50",
    random_backbone="tiny random openai-CLIP ModifiedResNet (pyiqa clip_model.CLIP, layers 1-1-1-1, width 8)",
    locate=locate_clip_rn50,
    build_real=lambda path, device: build_clipiqa(load_openai_clip(path), device),
    build_random=lambda seed, device: build_clipiqa(tiny_openai_clip(seed), device),
    how_to_get=f"download {CLIP_RN50_URL} into <weights_dir>/ or <torch hub dir>/clip/",
)


def clip_iqa(images: torch.Tensor, arch: torch.nn.Module) -> torch.Tensor:
    """CLIP-IQA score per image, ``(B,)``, of ``(B, 3, H, W)`` RGB images in [0, 1] (pyiqa ``CLIPIQA``)."""
    return arch(images).reshape(-1)


@register_metric
class CLIPIQA(Metric):
    """No-reference perceptual quality of the output alone."""

    name = "clip_iqa"
    label = "CLIP-IQA"
    direction = "higher"
    range = (0.0, 1.0)
    reference = Reference.NONE
    fidelity_rank = 9
    order = 10
    library = "pyiqa"
    function = "pyiqa.archs.clipiqa_arch.CLIPIQA (pyiqa metric 'clipiqa')"
    model = CLIP_RN50
    settings = {
        "prompts": "5 antonym pairs: good/bad image, sharp/blurry image, sharp/blurry edges, "
        "high/low resolution image, noise-free/noisy image",
        "input": "native resolution, CLIP mean/std, no positional embedding (pyiqa defaults)",
    }

    def compute(self, batch: Sequence[Prepared]) -> list[float]:
        import torch

        values = [0.0] * len(batch)
        for group in size_groups(batch, lambda item: item.output.size, MAX_BATCH):
            images = torch.cat([batch[i].tensor("output", torch.float32) for i in group])
            for i, value in zip(group, clip_iqa(images, self.loaded.model).tolist(), strict=True):
                values[i] = value
        return values

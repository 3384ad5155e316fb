"""The metric models: where real weights are found, how random ones are built, nothing downloaded.

Three models back the learned metrics:

==================  ============================================  =====================================
model key           real weights                                  random stand-in (same classes)
==================  ============================================  =====================================
``clip_rn50``       openai CLIP RN50 (``RN50.pt``), loaded into    tiny ``pyiqa.archs.clip_model.CLIP``
(``clip_iqa``)      pyiqa's ``CLIPIQA``                            (ModifiedResNet 1-1-1-1, width 8)
``lpips_alex``      torchvision AlexNet ``IMAGENET1K_V1`` +        AlexNet randomly initialised +
(``lpips_*``)       LPIPS v0.1 linear heads (torchmetrics wheel)   the same bundled linear heads
``clip_vit_l14``    ``openai/clip-vit-large-patch14``              tiny ``transformers.CLIPModel``
(``clip_score``)    (transformers CLIPModel + CLIPProcessor)       + real CLIP BPE tokenizer/processor
==================  ============================================  =====================================

Real weights are looked up, in order, in ``weights_dir`` and then in the caches the libraries
themselves download into — read at call time, so ``TORCH_HOME``, ``HF_HOME``, ``HF_HUB_CACHE``,
``XDG_CACHE_HOME`` and ``HOME`` apply as they do for the libraries:

* ``RN50.pt``: ``<weights_dir>/RN50.pt``, ``<weights_dir>/clip/RN50.pt``,
  ``<torch hub dir>/clip/RN50.pt`` (where pyiqa's ``clip_model.load`` downloads it) and
  ``~/.cache/clip/RN50.pt`` (openai-clip's default). Its SHA-256 (part of openai's URL) is checked.
* ``alexnet-owt-7be5be79.pth``: ``<weights_dir>/``, ``<weights_dir>/checkpoints/`` and
  ``<torch hub dir>/checkpoints/`` (torchvision's cache). Its SHA-256 prefix (in the name) is checked.
* ``openai/clip-vit-large-patch14``: a ``from_pretrained`` folder at
  ``<weights_dir>/clip-vit-large-patch14`` or ``<weights_dir>/openai/clip-vit-large-patch14``, or a
  snapshot in a Hugging Face hub cache: ``<weights_dir>`` used as one, then the default
  (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
  ``~/.cache/huggingface/hub``).

Only files that exist are opened (``local_files_only=True`` for transformers), so a missing file
fails at once with a :class:`~qie_bench.errors.UserInputError` that lists every place looked and
how to fill it — never a download, never a silent fallback to random weights.

Random weights (``weights="random"``) are a first-class mode for CI and CPU smoke runs: small
models of the *same classes*, initialised from ``random_seed`` inside a forked RNG (the caller's
global RNG is untouched), so every code path runs offline in seconds and two runs with the same
seed score identically. Their values mean nothing about image quality; every score set records
``weights_kind``.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch

from ..errors import UserInputError
from ..fingerprint import file_sha256_hex

WeightsKind = Literal["real", "random"]

CLIP_IQA_MODEL = "clip_rn50"
LPIPS_MODEL = "lpips_alex"
CLIP_SCORE_MODEL = "clip_vit_l14"

# openai's URL for RN50 embeds the file's SHA-256 (pyiqa and openai-clip verify against it).
CLIP_RN50_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
)
CLIP_RN50_FILE = "RN50.pt"
CLIP_RN50_SHA256 = "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"
CLIP_SCORE_REPO = "openai/clip-vit-large-patch14"

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
TINY_HF_CLIP_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 2, "max_position_embeddings": 77,
}
TINY_HF_CLIP_VISION: dict[str, Any] = {
    "image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 2,
}
TINY_HF_CLIP_PROJECTION = 32


@dataclass(frozen=True)
class LoadedModel:
    """A built metric model and what it is, for the record.

    ``model`` is the object the metric calls: pyiqa's ``CLIPIQA`` module, torchmetrics' LPIPS
    module, or a ``(CLIPModel, CLIPProcessor)`` pair.
    """

    key: str
    model: Any
    backbone: str
    weights: WeightsKind
    source: str  # the file or folder loaded, or "random init (seed N)"


# ---------------------------------------------------------------------------------------------
# Where the libraries keep their caches
# ---------------------------------------------------------------------------------------------


def torch_hub_dir() -> Path:
    """torch.hub's folder (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``), as torch resolves it now."""
    return Path(torch.hub.get_dir())


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment *now*.

    ``huggingface_hub.constants`` freezes these paths when it is first imported; resolving them
    here honours changes made later in the process (tests, or a caller setting ``HF_HOME``).
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


# ---------------------------------------------------------------------------------------------
# Finding real weights
# ---------------------------------------------------------------------------------------------


class WeightsNotFound(Exception):
    """Internal: one model's weights are missing; collected into one UserInputError."""

    def __init__(self, looked: list[str], problems: list[str]) -> None:
        super().__init__("; ".join(problems) or "not found")
        self.looked, self.problems = looked, problems


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size/mtime in the key: a replaced file is re-hashed
    return file_sha256_hex(Path(path))


def _file_hash(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _first_verified_file(candidates: list[Path], sha256_prefix: str) -> Path:
    """The first existing candidate whose SHA-256 starts with ``sha256_prefix``."""
    problems = []
    for path in candidates:
        if path.is_file():
            if _file_hash(path).startswith(sha256_prefix):
                return path
            problems.append(f"{path} exists but its SHA-256 does not match (partial or different file)")
    raise WeightsNotFound([str(p) for p in candidates], problems)


def _deduplicated(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def locate_clip_rn50(weights_dir: Path | None) -> Path:
    """openai CLIP RN50 (for CLIP-IQA); see the module docstring for the search order."""
    candidates = []
    if weights_dir is not None:
        candidates += [weights_dir / CLIP_RN50_FILE, weights_dir / "clip" / CLIP_RN50_FILE]
    candidates += [torch_hub_dir() / "clip" / CLIP_RN50_FILE, Path.home() / ".cache" / "clip" / CLIP_RN50_FILE]
    return _first_verified_file(_deduplicated(candidates), CLIP_RN50_SHA256)


def alexnet_file() -> tuple[str, str]:
    """torchvision's AlexNet ``IMAGENET1K_V1`` checkpoint: (file name, SHA-256 prefix in the name)."""
    from torchvision.models import AlexNet_Weights

    name = os.path.basename(urlparse(AlexNet_Weights.IMAGENET1K_V1.url).path)
    match = torch.hub.HASH_REGEX.search(name)
    return name, (match.group(1) if match else "")


def locate_alexnet(weights_dir: Path | None) -> Path:
    """torchvision AlexNet ImageNet weights (LPIPS backbone); see the module docstring."""
    name, prefix = alexnet_file()
    candidates = []
    if weights_dir is not None:
        candidates += [weights_dir / name, weights_dir / "checkpoints" / name]
    candidates += [torch_hub_dir() / "checkpoints" / name]
    return _first_verified_file(_deduplicated(candidates), prefix)


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


def _hf_cache_snapshots(cache_dir: Path, repo_id: str) -> list[Path]:
    """Snapshot folders of ``repo_id`` in a hub cache, the one ``refs/main`` points at first."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    ordered = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        ordered.append(snapshots / ref.read_text().strip())
    ordered += sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return _deduplicated([p for p in ordered if p.is_dir()])


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
    for cache in _deduplicated(caches):
        looked.append(f"{cache}/models--{repo_id.replace('/', '--')}/snapshots/*")
        for snapshot in _hf_cache_snapshots(cache, repo_id):
            problem = _hf_folder_problem(snapshot)
            if problem is None:
                return snapshot
            problems.append(problem)
    raise WeightsNotFound(looked, problems)


# ---------------------------------------------------------------------------------------------
# Building models
# ---------------------------------------------------------------------------------------------


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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
    import_pyiqa_clipiqa()
    from pyiqa.archs.clip_model import build_model

    if is_torchscript_archive(path):
        if _file_hash(path) != CLIP_RN50_SHA256:
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


def build_lpips(alexnet_path: Path | None, seed: int, device: torch.device | str) -> torch.nn.Module:
    """torchmetrics' LPIPS module (AlexNet, v0.1 linear heads) with real or seeded random AlexNet weights.

    ``pnet_rand=True`` makes torchmetrics build AlexNet with ``weights=None`` (no download); its
    linear heads always come from the file inside the torchmetrics wheel. With ``alexnet_path``
    the ImageNet weights are then loaded from that verified local file.
    """
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    with seeded(seed):
        net = _NoTrainLpips(pretrained=True, net="alex", pnet_rand=True)
    if alexnet_path is not None:
        state = torch.load(str(alexnet_path), map_location="cpu", weights_only=True)
        # LPIPS slices AlexNet's `features` keeping the indices: slice2.3.weight = features.3.weight.
        trunk = net.net
        trunk.load_state_dict({key: state["features." + key.split(".", 1)[1]] for key in trunk.state_dict()})
    return net.eval().to(device)


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
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte -> unicode table

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
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
    return model, processor


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How to find, build and describe one metric model."""

    label: str  # what the user must provide, for messages
    real_backbone: str
    random_backbone: str
    locate: Callable[[Path | None], Path]
    build_real: Callable[[Path, torch.device], Any]
    build_random: Callable[[int, torch.device], Any]
    how_to_get: str  # one-line instruction for a machine with network access


MODEL_SPECS: dict[str, ModelSpec] = {
    CLIP_IQA_MODEL: ModelSpec(
        label=f"openai CLIP RN50 ({CLIP_RN50_FILE})",
        real_backbone="openai CLIP RN50",
        random_backbone="tiny random openai-CLIP ModifiedResNet (pyiqa clip_model.CLIP, layers 1-1-1-1, width 8)",
        locate=locate_clip_rn50,
        build_real=lambda path, device: build_clipiqa(load_openai_clip(path), device),
        build_random=lambda seed, device: build_clipiqa(tiny_openai_clip(seed), device),
        how_to_get=f"download {CLIP_RN50_URL} into <weights_dir>/ or <torch hub dir>/clip/",
    ),
    LPIPS_MODEL: ModelSpec(
        label="torchvision AlexNet IMAGENET1K_V1 weights",
        real_backbone="AlexNet (torchvision IMAGENET1K_V1) + LPIPS v0.1 linear heads (torchmetrics)",
        random_backbone="AlexNet (random init) + LPIPS v0.1 linear heads (torchmetrics)",
        locate=locate_alexnet,
        build_real=lambda path, device: build_lpips(path, 0, device),
        build_random=lambda seed, device: build_lpips(None, seed, device),
        how_to_get="python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\" "
        "(fills <torch hub dir>/checkpoints/), or copy that file into <weights_dir>/",
    ),
    CLIP_SCORE_MODEL: ModelSpec(
        label=f"Hugging Face {CLIP_SCORE_REPO}",
        real_backbone=f"{CLIP_SCORE_REPO} (transformers CLIPModel)",
        random_backbone="tiny random transformers CLIPModel (ViT patch 32, 1 layer, width 32) + CLIP BPE tokenizer",
        locate=locate_hf_clip,
        build_real=lambda path, device: _to_device(load_hf_clip(path), device),
        build_random=lambda seed, device: _to_device(tiny_hf_clip(seed), device),
        how_to_get=f"hf download {CLIP_SCORE_REPO} (fills the hub cache), or "
        f"hf download {CLIP_SCORE_REPO} --local-dir <weights_dir>/{CLIP_SCORE_REPO.split('/')[-1]}",
    ),
}


def _to_device(pair: tuple[Any, Any], device: torch.device) -> tuple[Any, Any]:
    model, processor = pair
    return model.to(device), processor


class ModelStore:
    """Builds each metric model at most once, from real files or from a seed.

    With real weights, :meth:`preflight` locates every needed file first and raises a single
    :class:`UserInputError` naming all that are missing, before any model is built.
    """

    def __init__(self, weights: WeightsKind, weights_dir: str | None, device: str, seed: int) -> None:
        self.weights = weights
        self.weights_dir = Path(weights_dir).expanduser() if weights_dir else None
        self.device = torch.device(device)
        self.seed = seed
        self._located: dict[str, Path] = {}
        self._built: dict[str, LoadedModel] = {}

    def preflight(self, needs: dict[str, list[str]]) -> None:
        """Locate the real weights of every model key in ``needs`` (key -> metric names)."""
        if self.weights != "real":
            return
        missing = []
        for key, metric_names in needs.items():
            spec = MODEL_SPECS[key]
            try:
                self._located[key] = spec.locate(self.weights_dir)
            except WeightsNotFound as err:
                detail = "; ".join(err.problems + [f"looked in: {', '.join(err.looked)}"])
                missing.append(f"{spec.label} for {', '.join(metric_names)} ({detail}; to get it: {spec.how_to_get})")
        if missing:
            dir_note = ""
            if self.weights_dir is not None and not self.weights_dir.is_dir():
                dir_note = f" (weights_dir {self.weights_dir} does not exist)"
            raise UserInputError(
                "metrics weights=real",
                f"pretrained metric weights not found{dir_note}: " + " | ".join(missing),
                f"provide the files (torch hub dir is {torch_hub_dir()}, Hugging Face cache is {hf_hub_cache_dir()}) "
                "or pass weights_dir / --weights-dir; or use weights='random' (--weights random), whose scores "
                "only exercise the plumbing",
            )

    def get(self, key: str) -> LoadedModel:
        """The model for ``key``, built on first use."""
        if key not in self._built:
            spec = MODEL_SPECS[key]
            if self.weights == "real":
                if key not in self._located:
                    self.preflight({key: [key]})
                path = self._located[key]
                model = spec.build_real(path, self.device)
                loaded = LoadedModel(key, model, spec.real_backbone, "real", str(path))
            else:
                model = spec.build_random(self.seed, self.device)
                loaded = LoadedModel(key, model, spec.random_backbone, "random", f"random init (seed {self.seed})")
            self._built[key] = loaded
        return self._built[key]

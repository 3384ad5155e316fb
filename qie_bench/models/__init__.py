"""How the base pipeline is built: one loader, three sources, each recorded in results.

- ``pretrained``: the real weights, by Hugging Face id or local directory.
- ``tiny``: the real pipeline classes at toy size with random weights (the CPU default).
- ``random-full``: the released full-size configs with random weights, built directly in the
  target dtype on the target device, for memory and speed without the 58 GiB download.

Variants (``qie_bench.variants``) say which dtype to build in (``LoadPlan``); the loader never
materialises fp32 first unless fp32 is what was asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

# Components whose parameters count as "the model"; tokenizer/processor/scheduler hold none.
from ..components import WEIGHT_COMPONENTS  # noqa: F401
from ..errors import UserInputError
from ..suite import ModelConfig


@dataclass(frozen=True)
class LoadPlan:
    """What a variant needs from the loader before it transforms the pipeline."""

    dtype: torch.dtype = torch.bfloat16
    component_dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    # Extra keyword arguments for `from_pretrained` (e.g. a PipelineQuantizationConfig): real
    # weights are quantized while loading, as users do, not after.
    pretrained_kwargs: dict[str, Any] = field(default_factory=dict)

    def dtype_of(self, component: str) -> torch.dtype:
        return self.component_dtypes.get(component, self.dtype)


@dataclass
class LoadedModel:
    pipe: Any  # diffusers.QwenImageEditPlusPipeline
    source: str
    device: torch.device
    identity: dict[str, Any]
    # The tiny profile's reference/condition areas; None for the real model's own.
    reference_area: int | None = None
    condition_area: int | None = None

    @property
    def weights_description(self) -> str:
        if self.source == "pretrained":
            return f"pretrained weights: {self.identity.get('id')}"
        return f"RANDOM weights ({self.source} architecture, seed {self.identity.get('init_seed')}): memory and speed are real, quality is not"

    @contextlib.contextmanager
    def call_context(self) -> Iterator[None]:
        """Context for one pipeline call. For `tiny`, sets the reference-encoding areas.

        diffusers 0.42 reads the areas from module constants at call time; there is no
        argument for them. The tiny profile replaces them for the duration of the call only.
        """
        if self.reference_area is None:
            yield
            return
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as edit_plus

        names = ("VAE_IMAGE_SIZE", "CONDITION_IMAGE_SIZE")
        if not all(hasattr(edit_plus, n) for n in names):
            raise RuntimeError(
                "this diffusers version has no VAE_IMAGE_SIZE/CONDITION_IMAGE_SIZE constants; "
                "the tiny profile cannot set the reference-encoding area (pin diffusers 0.42)"
            )
        saved = {n: getattr(edit_plus, n) for n in names}
        edit_plus.VAE_IMAGE_SIZE = self.reference_area
        edit_plus.CONDITION_IMAGE_SIZE = self.condition_area
        try:
            yield
        finally:
            for n, v in saved.items():
                setattr(edit_plus, n, v)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserInputError("model.device", "'cuda' was asked for but no CUDA GPU is visible", "use device = 'cpu' or 'auto'")
    if name == "cuda":
        # An explicit index: memory caps and NVML handles are per device.
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def full_size_config(component: str) -> dict[str, Any]:
    """The released Qwen-Image-Edit-2509 config of one component (shipped with qie-bench)."""
    text = resources.files("qie_bench.models").joinpath("configs", f"{component}.json").read_text()
    cfg = json.loads(text)
    cfg.pop("_comment", None)
    return cfg


def _sha256_json(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def _build_defaults(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Parameters are created directly in `dtype` on `device`: never a full fp32 copy first."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _system_prefix_tokens(pipe: Any) -> int:
    """Tokens of the prompt template before the user's text, under the pipeline's tokenizer.

    The pipeline drops this many leading hidden states (`prompt_template_encode_start_idx`, 64
    for the real Qwen tokenizer) so the transformer never sees the system prompt. The offline
    byte-level tokenizer splits it into more tokens; dropping its own count keeps the text
    sequence the transformer sees as close to the real one as a byte-level vocabulary allows.
    """
    template = pipe.prompt_template_encode
    prefix = template[: template.index("{}")]
    prefix = prefix[: prefix.rindex("<|im_start|>user\n") + len("<|im_start|>user\n")]
    return len(pipe.tokenizer(prefix).input_ids)


def _build_tiny(cfg: ModelConfig, plan: LoadPlan, device: torch.device) -> LoadedModel:
    from diffusers import QwenImageEditPlusPipeline

    from .tiny import TinySizes, build_components

    sizes = TinySizes(transformer_layers=cfg.tiny.transformer_layers, vae_base_dim=cfg.tiny.vae_base_dim)
    # Tiny weights are drawn in fp32 (cheap at this size) so the same seed gives the same
    # weights whatever dtype the variant then casts to.
    comps = build_components(sizes, cfg.init_seed, cfg.tiny.condition_area)
    for name in WEIGHT_COMPONENTS:
        comps[name] = comps[name].to(device=device, dtype=plan.dtype_of(name)).eval().requires_grad_(False)
    pipe = QwenImageEditPlusPipeline(**comps)
    pipe.prompt_template_encode_start_idx = _system_prefix_tokens(pipe)
    identity = {
        "source": "tiny",
        "init_seed": cfg.init_seed,
        "config_sha256": _sha256_json({"sizes": sizes.__dict__, "profile": cfg.tiny.model_dump()}),
    }
    return LoadedModel(pipe, "tiny", device, identity, cfg.tiny.reference_area, cfg.tiny.condition_area)


def _build_random_full(cfg: ModelConfig, plan: LoadPlan, device: torch.device) -> LoadedModel:
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from .tiny import QWEN_SPECIAL_TOKENS, build_processor, build_tokenizer

    configs = {c: full_size_config(c) for c in ("transformer", "text_encoder", "vae", "scheduler")}
    tokenizer = build_tokenizer()
    te_cfg = dict(configs["text_encoder"])
    # The byte-level tokenizer's special-token ids replace Qwen's 151643+ ids; the embedding
    # table keeps its released 152064 rows so memory is the real model's.
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    te_cfg.update(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
    )
    torch.manual_seed(cfg.init_seed)
    with _build_defaults(plan.dtype_of("transformer"), device):
        transformer = QwenImageTransformer2DModel(**configs["transformer"])
    torch.manual_seed(cfg.init_seed)
    with _build_defaults(plan.dtype_of("text_encoder"), device):
        text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**te_cfg))
    torch.manual_seed(cfg.init_seed)
    with _build_defaults(plan.dtype_of("vae"), device):
        vae = AutoencoderKLQwenImage(**configs["vae"])
    for m in (transformer, text_encoder, vae):
        m.eval().requires_grad_(False)
    pipe = QwenImageEditPlusPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"]),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=build_processor(tokenizer, 384 * 384 * 4),
        transformer=transformer,
    )
    pipe.prompt_template_encode_start_idx = _system_prefix_tokens(pipe)
    identity = {"source": "random-full", "init_seed": cfg.init_seed, "config_sha256": _sha256_json(configs)}
    return LoadedModel(pipe, "random-full", device, identity)


def _snapshot_revision(path: str) -> str | None:
    """The commit hash of a Hugging Face cache snapshot (its folder name), if `path` is one."""
    parts = Path(path).resolve().parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def _build_pretrained(cfg: ModelConfig, plan: LoadPlan, device: torch.device) -> LoadedModel:
    from diffusers import QwenImageEditPlusPipeline

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    assert cfg.id is not None
    local = Path(cfg.id).expanduser()
    try:
        pipe = QwenImageEditPlusPipeline.from_pretrained(
            str(local) if local.exists() else cfg.id,
            revision=cfg.revision,
            torch_dtype=plan.dtype,
            local_files_only=offline,
            # Never run code shipped with the weights.
            trust_remote_code=False,
            use_safetensors=True,
            **plan.pretrained_kwargs,
        )
    except (OSError, ValueError) as err:
        raise UserInputError(
            "model.id",
            f"cannot load '{cfg.id}': {str(err).splitlines()[0]}",
            "give a local directory, or pre-download the model into the Hugging Face cache (HF_HOME)",
        ) from None
    for name in WEIGHT_COMPONENTS:
        module = getattr(pipe, name)
        if not getattr(module, "is_quantized", False) and not getattr(module, "hf_quantizer", None):
            module.to(dtype=plan.dtype_of(name))
    if not plan.pretrained_kwargs.get("keep_on_cpu"):
        pipe.to(device)
    name_or_path = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", cfg.id)
    identity = {
        "source": "pretrained",
        "id": cfg.id,
        "revision": cfg.revision or _snapshot_revision(str(name_or_path)) or "unknown",
    }
    return LoadedModel(pipe, "pretrained", device, identity)


BUILDERS = {"tiny": _build_tiny, "random-full": _build_random_full, "pretrained": _build_pretrained}


def load_model(cfg: ModelConfig, plan: LoadPlan) -> LoadedModel:
    """Build the base pipeline the suite names, in the dtype the variant asks for."""
    device = resolve_device(cfg.device)
    loaded = BUILDERS[cfg.source](cfg, plan, device)
    loaded.pipe.set_progress_bar_config(disable=True)
    return loaded


def model_identity_for_plan(cfg: ModelConfig) -> dict[str, Any]:
    """What identifies the model before it is loaded (for fingerprints and comparability)."""
    ident: dict[str, Any] = {"source": cfg.source}
    if cfg.source == "pretrained":
        ident.update(id=cfg.id, revision=cfg.revision)
    else:
        ident.update(init_seed=cfg.init_seed)
        if cfg.source == "tiny":
            ident["tiny"] = cfg.tiny.model_dump()
    return ident


def _quant_state_bytes(param: Any) -> int:
    """Bytes of a bitsandbytes quantization state that lives beside the quantized weight and is
    not itself a parameter: 4-bit absmax, code and double-quant offset/nested absmax and code;
    LLM.int8's per-row scales (`Int8Params.SCB`; its `CB` is the weight's own storage)."""
    scb = getattr(param, "SCB", None)
    total = scb.numel() * scb.element_size() if isinstance(scb, torch.Tensor) else 0
    state = getattr(param, "quant_state", None)
    if state is None:
        return total
    for name in ("absmax", "code", "offset"):
        t = getattr(state, name, None)
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    nested = getattr(state, "state2", None)
    if nested is not None:
        for name in ("absmax", "code"):
            t = getattr(nested, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds. A wrapper tensor subclass (torchao's quantized weights) reports its
    logical dtype, not its storage: count the inner tensors it is made of instead."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(inner) for inner in (getattr(t, n) for n in names) if isinstance(inner, torch.Tensor))
    return t.numel() * t.element_size()


def module_weight_bytes(module: torch.nn.Module) -> tuple[int, int]:
    """(bytes actually held by parameters, buffers and quantization state; parameter count).

    Counts storage as held, so a 4-bit packed weight counts its packed bytes. Parameter count
    is of the model's logical weights (a packed 4-bit tensor stores two weights per byte).
    """
    total, count = 0, 0
    seen: set[int] = set()
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += _tensor_bytes(p) + _quant_state_bytes(p)
        # Packed weights: bitsandbytes keeps the logical shape in quant_state, GGUF in quant_shape.
        shape = getattr(getattr(p, "quant_state", None), "shape", None) or getattr(p, "quant_shape", None)
        count += int(torch.Size(shape).numel()) if shape is not None else p.numel()
    for b in module.buffers():
        total += b.numel() * b.element_size()
    return total, count


def pipeline_weight_bytes(pipe: Any) -> dict[str, dict[str, int]]:
    """Per component: weights_bytes and params."""
    out = {}
    for name in WEIGHT_COMPONENTS:
        module = getattr(pipe, name, None)
        if module is not None:
            b, n = module_weight_bytes(module)
            out[name] = {"weights_bytes": b, "params": n}
    return out

"""Physical floors: the least time and memory any correct implementation of a variant needs.

Everything here is a pure function of the model configuration, the workload (tokens, steps,
guidance) and a GPU's peak rates (`gpus.py`). A measurement below its floor is not a fast
result but a measurement error (a timer that missed work, a memory sampler that missed the
peak), and the report flags it.

FLOP accounting for one forward of `QwenImageTransformer2DModel` (60 dual-stream blocks,
width d = heads x head_dim = 24 x 128 = 3072, MLP width 4d):

- Token-wise linear layers. Each block has two streams with their own weights: the image
  stream (q, k, v, out projections d x d each, MLP d x 4d and 4d x d) and the text stream (the
  same shapes: add_q/k/v_proj, to_add_out, txt_mlp). A token passes through ONE stream's
  weights, so per token per block it multiplies 4d^2 + 8d^2 = 12 d^2 = 113,246,208 weights
  (biases are additions, not multiply-adds, and are not counted). 2 FLOP per multiply-add:
  linear = 2 x 12 d^2 x L x blocks, with L = image tokens + text tokens.
- Attention (joint over all L tokens): QK^T is L x L x d multiply-adds, AV another L x L x d,
  so 4 L^2 d FLOP per block (summed over heads, d = heads x head_dim). Softmax, norms, RoPE and
  the residual adds are O(L d) and not counted.
- The modulation layers (img_mod, txt_mod: d -> 6d per block), the timestep embedding and
  norm_out act once per forward on the timestep embedding, not per token: 2 x 12 d^2 FLOP per
  block per forward, negligible; counted in `per_forward`.
- img_in (in_channels -> d) and proj_out (d -> p^2 out_channels) act on every image token,
  txt_in (joint_attention_dim -> d) on every text token: counted in `io`.

Tokens: an image of H x W pixels is VAE-encoded 8x smaller and packed in 2x2 patches, so it is
(H/16)(W/16) tokens; the output latent at 1024^2 is 4096 tokens, and every reference image is
VAE-encoded at about 1 MP whatever the output size (diffusers' VAE_IMAGE_SIZE), so each adds
~4096 tokens. Text tokens are the VL encoder's hidden states after the system prompt is dropped:
each condition image (384^2 area, 14-px patches merged 2x2: 196 tokens at 1:1) plus the
instruction; the floor counts only the image tokens and their two delimiters (an undercount,
which keeps the floor a floor). With true CFG every step runs the transformer twice.

Time floor of one forward = max(FLOPs / peak matmul rate, weight bytes / memory bandwidth,
streamed bytes / PCIe bandwidth): the three can at best overlap perfectly. The text encoder and
VAE run once per edit and are not counted in time (which again keeps it a lower bound).

Memory floor: every weight at its storage precision (params x bytes per param; NF4 is 0.5 byte
per parameter before its quantization state) plus one copy of the hidden states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .gpus import Gpu

GiB = 2**30

# Released Qwen-Image-Edit-2509 sizes. The transformer and text-encoder counts are derived from
# their configs below (and the tests check the derivation against these numbers); the VAE count
# is taken from the released model (`h100-architecture-probe.json`: vae_params_M).
RELEASED_TRANSFORMER_PARAMS = 20_430_401_088
RELEASED_TEXT_ENCODER_PARAMS = 8_292_166_656
RELEASED_VAE_PARAMS = 126_892_531

# diffusers' QwenImageEditPlusPipeline constants
VAE_IMAGE_AREA = 1024 * 1024  # reference images are VAE-encoded at about this many pixels
CONDITION_IMAGE_AREA = 384 * 384  # what the VL text encoder sees of each input image
VAE_SCALE = 8
TIMESTEP_CHANNELS = 256


# ---------------------------------------------------------------------------------------------
# Precision


@dataclass(frozen=True)
class Precision:
    """How a component's weights are stored and which tensor-core rate its matmuls can use."""

    name: str
    bytes_per_param: float
    compute: str  # 'tf32', 'bf16', 'fp8', 'int8' (see Gpu.rate_tflops)


PRECISIONS: dict[str, Precision] = {
    # fp32 weights could run their matmuls as TF32: the floor takes that faster rate.
    "fp32": Precision("fp32", 4.0, "tf32"),
    "bf16": Precision("bf16", 2.0, "bf16"),
    "fp16": Precision("fp16", 2.0, "bf16"),
    "fp8": Precision("fp8", 1.0, "fp8"),
    # int8: W8A8 kernels (LLM.int8) can use the int8 rate; the floor assumes they do.
    "int8": Precision("int8", 1.0, "int8"),
    # 4-bit weights are dequantized to BF16 for the matmul (bitsandbytes, torchao).
    "nf4": Precision("nf4", 0.5, "bf16"),
    "fp4": Precision("fp4", 0.5, "bf16"),
    "int4": Precision("int4", 0.5, "bf16"),
    "4bit": Precision("4-bit", 0.5, "bf16"),
    # GGUF block formats (ggml): blocks of 32 weights with one fp16 scale (Q8_0: 32 int8 = 34 bytes;
    # Q4_0: 16 bytes of nibbles + scale = 18; Q4_1/Q5_1 add an fp16 minimum; Q5_0/Q5_1 keep the
    # fifth bits in 4 bytes). diffusers dequantizes them to the compute dtype for the matmul.
    "q8_0": Precision("q8_0", 34 / 32, "bf16"),
    "q5_1": Precision("q5_1", 24 / 32, "bf16"),
    "q5_0": Precision("q5_0", 22 / 32, "bf16"),
    "q4_1": Precision("q4_1", 20 / 32, "bf16"),
    "q4_0": Precision("q4_0", 18 / 32, "bf16"),
}
# The matmul rate of a compute dtype (Gpu.rate_tflops): fp32 matmuls may run as TF32.
COMPUTE_RATES = {"fp32": "tf32", "bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "int8": "int8"}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float": "fp32",
            "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "float8": "fp8", "int8": "int8", "uint8": "int8",
            "llm.int8": "int8", "nf4": "nf4", "fp4": "fp4", "int4": "int4"}


def precision(name: str) -> Precision:
    """A precision by name or torch dtype name ('bfloat16', 'nf4', ...). KeyError if unknown."""
    key = name.lower().removeprefix("torch.")
    return PRECISIONS[_ALIASES.get(key, key)]


def precision_from_bytes_per_param(bpp: float) -> Precision:
    """The storage precision closest to a measured bytes-per-parameter figure (weights bytes over
    the parameter count, quantization state included): 4 -> fp32, 2 -> bf16, ~1 -> int8, ~0.5 -> 4-bit."""
    if bpp >= 3.0:
        return PRECISIONS["fp32"]
    if bpp >= 1.5:
        return PRECISIONS["bf16"]
    if bpp >= 0.75:
        return PRECISIONS["int8"]
    return PRECISIONS["4bit"]


def weight_bytes(params: int, prec: Precision | str) -> float:
    """The bytes `params` weights occupy at a precision: 20,430,401,088 in NF4 = 9.51 GiB."""
    p = precision(prec) if isinstance(prec, str) else prec
    return params * p.bytes_per_param


@dataclass(frozen=True)
class WeightFormat:
    """How one component's weights are held: `quantized_params` of them at `quant`, the rest at
    `base` (quantization variants keep modulation layers, norms and biases in 16-bit)."""

    base: Precision
    quant: Precision | None = None
    quantized_params: int | None = None  # None with a quant: every parameter is quantized
    quant_compute: str | None = None  # the rate the quantized matmuls can use, if not quant.compute

    @classmethod
    def of(cls, prec: Precision | str) -> WeightFormat:
        return cls(precision(prec) if isinstance(prec, str) else prec)

    def bytes(self, params: int) -> float:
        if self.quant is None:
            return weight_bytes(params, self.base)
        q = params if self.quantized_params is None else min(self.quantized_params, params)
        return weight_bytes(q, self.quant) + weight_bytes(params - q, self.base)

    @property
    def computes(self) -> tuple[str, ...]:
        """Matmul rates this component's arithmetic may use; the floor takes the fastest."""
        if self.quant is None:
            return (self.base.compute,)
        return (self.base.compute, self.quant_compute or self.quant.compute)

    @property
    def label(self) -> str:
        if self.quant is None:
            return self.base.name
        if self.quantized_params is None:
            return self.quant.name
        return f"{self.quant.name} ({self.quantized_params / 1e9:.3g} B params) + {self.base.name}"


# ---------------------------------------------------------------------------------------------
# The transformer's shape and parameter count


@dataclass(frozen=True)
class TransformerShape:
    """What the FLOP and parameter counts need from a QwenImageTransformer2DModel config."""

    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    joint_attention_dim: int
    in_channels: int
    out_channels: int
    patch_size: int
    mlp_ratio: int = 4  # diffusers FeedForward(mult=4)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TransformerShape:
        return cls(num_layers=int(cfg["num_layers"]), num_attention_heads=int(cfg["num_attention_heads"]),
                   attention_head_dim=int(cfg["attention_head_dim"]), joint_attention_dim=int(cfg["joint_attention_dim"]),
                   in_channels=int(cfg["in_channels"]), out_channels=int(cfg.get("out_channels") or cfg["in_channels"]),
                   patch_size=int(cfg["patch_size"]))

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def mlp_width(self) -> int:
        return self.mlp_ratio * self.width


@dataclass(frozen=True)
class TransformerParams:
    """Parameter count of a QwenImageTransformer2DModel, by role."""

    token_weights_per_stream: int  # q,k,v,out (4 d^2) + MLP (2 x d x 4d): what one token multiplies through per block
    token_biases_per_stream: int
    modulation_per_block: int  # img_mod + txt_mod: Linear(d, 6d) each, with bias
    qk_norm_per_block: int  # RMSNorm(head_dim) weights on q, k, added q, added k
    per_block: int
    blocks: int  # per_block x num_layers
    embeddings: int  # img_in, txt_norm, txt_in, timestep embedding
    output: int  # norm_out (AdaLayerNormContinuous: Linear(d, 2d)) + proj_out
    total: int


def transformer_params(s: TransformerShape) -> TransformerParams:
    d, m = s.width, s.mlp_width
    attn_w, attn_b = 4 * d * d, 4 * d
    mlp_w, mlp_b = 2 * d * m, m + d
    token_w, token_b = attn_w + mlp_w, attn_b + mlp_b
    modulation = 2 * (d * 6 * d + 6 * d)
    qk_norm = 4 * s.attention_head_dim
    per_block = 2 * (token_w + token_b) + modulation + qk_norm
    blocks = per_block * s.num_layers
    embeddings = ((s.in_channels * d + d)  # img_in
                  + s.joint_attention_dim  # txt_norm (RMSNorm weight)
                  + (s.joint_attention_dim * d + d)  # txt_in
                  + (TIMESTEP_CHANNELS * d + d) + (d * d + d))  # timestep embedder linear_1, linear_2
    out_features = s.patch_size * s.patch_size * s.out_channels
    output = (d * 2 * d + 2 * d) + (d * out_features + out_features)
    return TransformerParams(token_w, token_b, modulation, qk_norm, per_block, blocks, embeddings, output,
                             blocks + embeddings + output)


def text_encoder_params(cfg: Mapping[str, Any]) -> int:
    """Parameter count of Qwen2_5_VLForConditionalGeneration from its config (language model with
    untied lm_head, and the vision tower with its patch merger): 8,292,166,656 for the release."""
    t, v = cfg["text_config"], cfg["vision_config"]
    h, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    heads, kv = t["num_attention_heads"], t["num_key_value_heads"]
    hd = h // heads
    layer = ((h * h + h) + 2 * (h * kv * hd + kv * hd) + h * h  # q (bias), k, v (bias), o (no bias)
             + 3 * h * inter + 2 * h)  # gate/up/down, two RMSNorms
    embed = t["vocab_size"] * h
    lm_head = 0 if t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False)) else t["vocab_size"] * h
    language = layers * layer + embed + lm_head + h
    vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    patch = v.get("in_chans", 3) * v["temporal_patch_size"] * v["patch_size"] ** 2 * vh
    block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 3 * (vh * vi) + 2 * vi + vh
    merged = vh * v["spatial_merge_size"] ** 2
    merger = vh + (merged * merged + merged) + (merged * v["out_hidden_size"] + v["out_hidden_size"])
    return language + patch + depth * block + merger


# ---------------------------------------------------------------------------------------------
# Tokens


def fit_area(width: int, height: int, area: int) -> tuple[int, int]:
    """diffusers' `calculate_dimensions`: the size with about `area` pixels at the image's aspect
    ratio, each side rounded to a multiple of 32."""
    ratio = width / height
    w = math.sqrt(area * ratio)
    h = w / ratio
    return round(w / 32) * 32, round(h / 32) * 32


def latent_tokens(width: int, height: int) -> int:
    """Transformer tokens of an image: VAE 8x down, 2x2 patches -> (H/16)(W/16)."""
    f = VAE_SCALE * 2
    return (height // f) * (width // f)


def reference_tokens(width: int, height: int, area: int = VAE_IMAGE_AREA) -> int:
    """Tokens of one reference image, VAE-encoded at about `area` pixels: 4096 at 1 MP."""
    return latent_tokens(*fit_area(width, height, area))


def condition_tokens(width: int, height: int, area: int = CONDITION_IMAGE_AREA, patch: int = 14, merge: int = 2) -> int:
    """VL-encoder tokens of one condition image (Qwen2-VL: sides rounded to 28, 14-px patches
    merged 2x2): 196 for a square image at 384^2."""
    w, h = fit_area(width, height, area)
    f = patch * merge
    wb, hb = max(f, round(w / f) * f), max(f, round(h / f) * f)
    return (wb // patch) * (hb // patch) // (merge * merge)


@dataclass(frozen=True)
class Workload:
    """One edit as the transformer sees it."""

    image_tokens: int  # output latent + every reference image
    text_tokens: int
    steps: int
    true_cfg: bool  # a second (negative-prompt) transformer pass per step

    @property
    def passes_per_step(self) -> int:
        return 2 if self.true_cfg else 1

    @property
    def forwards(self) -> int:
        return self.steps * self.passes_per_step


def edit_workload(output_size: tuple[int, int], input_sizes: list[tuple[int, int]], steps: int, true_cfg: bool,
                  reference_area: int = VAE_IMAGE_AREA, condition_area: int = CONDITION_IMAGE_AREA) -> Workload:
    """The tokens of an edit: the output latent, every input image VAE-encoded at `reference_area`,
    and (as text) every input image at `condition_area` plus its two delimiter tokens."""
    img = latent_tokens(*output_size) + sum(reference_tokens(w, h, reference_area) for w, h in input_sizes)
    txt = sum(condition_tokens(w, h, condition_area) + 2 for w, h in input_sizes)
    return Workload(img, txt, steps, true_cfg)


# ---------------------------------------------------------------------------------------------
# FLOPs


@dataclass(frozen=True)
class ForwardFlops:
    image_tokens: int
    text_tokens: int
    linear: float  # token-wise projections and MLPs in the blocks
    attention: float  # QK^T and AV
    io: float  # img_in, txt_in, proj_out (per token, outside the blocks)
    per_forward: float  # modulation, timestep embedding, norm_out: once per forward

    @property
    def tokens(self) -> int:
        return self.image_tokens + self.text_tokens

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.io + self.per_forward


def forward_flops(s: TransformerShape, image_tokens: int, text_tokens: int) -> ForwardFlops:
    """FLOPs of one transformer forward (2 FLOP per multiply-add). At full size with 8192 image
    and 512 text tokens: 118.3 T linear + 55.9 T attention = 174.2 TFLOP."""
    d, L = s.width, image_tokens + text_tokens
    p = transformer_params(s)
    linear = 2.0 * p.token_weights_per_stream * L * s.num_layers
    attention = 4.0 * L * L * d * s.num_layers
    io = 2.0 * (image_tokens * (s.in_channels * d + d * s.patch_size ** 2 * s.out_channels)
                + text_tokens * s.joint_attention_dim * d)
    per_forward = 2.0 * (2 * d * 6 * d * s.num_layers  # img_mod and txt_mod (d -> 6d) in every block
                         + TIMESTEP_CHANNELS * d + d * d + d * 2 * d)  # timestep embedding, norm_out
    return ForwardFlops(image_tokens, text_tokens, linear, attention, io, per_forward)


def edit_flops(s: TransformerShape, w: Workload) -> float:
    """Transformer FLOPs of a whole edit: steps x passes x one forward."""
    return w.forwards * forward_flops(s, w.image_tokens, w.text_tokens).total


# ---------------------------------------------------------------------------------------------
# Memory and time floors


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of the pipeline's weight-holding components and the transformer shape."""

    transformer: TransformerShape
    params: dict[str, int]  # 'transformer', 'text_encoder', 'vae'

    @classmethod
    def released(cls) -> ModelSize:
        shape = TransformerShape.from_config(released_config("transformer"))
        return cls(shape, {"transformer": transformer_params(shape).total,
                           "text_encoder": text_encoder_params(released_config("text_encoder")),
                           "vae": RELEASED_VAE_PARAMS})


def released_config(component: str) -> dict[str, Any]:
    """The released config of one component, as shipped in qie_bench/models/configs (read
    directly: importing qie_bench.models would import torch)."""
    import json
    from importlib import resources

    cfg = json.loads(resources.files("qie_bench").joinpath("models", "configs", f"{component}.json").read_text())
    cfg.pop("_comment", None)
    return cfg


def activation_floor_bytes(s: TransformerShape, tokens: int, act_bytes: float = 2.0) -> float:
    """One copy of the hidden states (tokens x width): what must exist during a forward."""
    return tokens * s.width * act_bytes


@dataclass(frozen=True)
class MemoryFloor:
    component_bytes: dict[str, float]  # weights at their storage precision
    activation_bytes: float

    @property
    def resident_bytes(self) -> float:
        """Every component on the device at once (pipe.to(device)), plus the hidden states."""
        return sum(self.component_bytes.values()) + self.activation_bytes

    @property
    def transformer_bytes(self) -> float:
        return self.component_bytes.get("transformer", 0.0)

    @property
    def model_offload_bytes(self) -> float:
        """One component at a time on the device (model CPU offload): the largest one, with the
        hidden states when it is the transformer."""
        return max([self.transformer_bytes + self.activation_bytes]
                   + [b for c, b in self.component_bytes.items() if c != "transformer"])


def memory_floor(size: ModelSize, formats: Mapping[str, WeightFormat], tokens: int, act_bytes: float = 2.0) -> MemoryFloor:
    comp = {c: formats.get(c, WeightFormat.of("bf16")).bytes(n) for c, n in size.params.items()}
    return MemoryFloor(comp, activation_floor_bytes(size.transformer, tokens, act_bytes))


@dataclass(frozen=True)
class TimeFloor:
    compute_s: float  # FLOPs / peak matmul rate
    memory_s: float  # transformer weights read once from device memory
    pcie_s: float  # weights that must be streamed from the host
    forwards: int

    @property
    def forward_s(self) -> float:
        return max(self.compute_s, self.memory_s, self.pcie_s)

    @property
    def total_s(self) -> float:
        return self.forwards * self.forward_s

    @property
    def bound(self) -> str:
        """What limits it: 'compute', 'memory bandwidth' or 'PCIe'."""
        return max((self.compute_s, "compute"), (self.memory_s, "memory bandwidth"), (self.pcie_s, "PCIe"))[1]


def forward_time_floor(flops: float, transformer_bytes: float, gpu: Gpu, compute: str | tuple[str, ...], *,
                       streamed_bytes: float = 0.0, use_measured: bool = False, forwards: int = 1) -> TimeFloor:
    """The time floor of `forwards` transformer forwards on `gpu`, at the fastest of the matmul
    rates in `compute`. `use_measured` divides by the GPU's measured BF16 matmul peak (where
    known) instead of its spec for BF16 work: an attainable floor rather than a hard one."""
    kinds = (compute,) if isinstance(compute, str) else compute
    rates = []
    for kind in kinds:
        r = gpu.rate_tflops(kind)
        if use_measured and gpu.measured_bf16_tflops and kind in ("bf16", "tf32"):
            r = min(r, gpu.measured_bf16_tflops)
        rates.append(r)
    rate = max(rates)
    return TimeFloor(compute_s=flops / (rate * 1e12), memory_s=transformer_bytes / (gpu.memory_tbps * 1e12),
                     pcie_s=streamed_bytes / (gpu.pcie_gbps * 1e9), forwards=forwards)


@dataclass(frozen=True)
class Fit:
    """What a variant needs on one GPU."""

    gpu: Gpu
    verdict: str  # 'fits', 'needs model offload', 'needs block offload'
    memory: MemoryFloor
    time: TimeFloor  # of the whole edit's denoising loop
    streamed_per_forward_bytes: float
    host_bytes_per_edit: float  # weights moved over PCIe once per edit (model offload)

    @property
    def edit_floor_s(self) -> float:
        return self.time.total_s + self.host_bytes_per_edit / (self.gpu.pcie_gbps * 1e9)


def fit_on_gpu(size: ModelSize, formats: Mapping[str, WeightFormat], w: Workload, gpu: Gpu, *,
               use_measured: bool = False) -> Fit:
    """Does the variant fit on `gpu`, and how fast could it possibly run there?

    - fits: every component resident at once.
    - needs model offload: only one component fits at a time; each edit moves the others over
      PCIe (at least once per edit).
    - needs block offload: some component alone does not fit. If it is the transformer, every
      forward streams at least the part that cannot stay resident over PCIe; if only another
      component (the bf16 text encoder on a 12 GiB card), that one streams once per edit.
    """
    mem = memory_floor(size, formats, w.image_tokens + w.text_tokens)
    compute = formats.get("transformer", WeightFormat.of("bf16")).computes
    flops = forward_flops(size.transformer, w.image_tokens, w.text_tokens).total
    cap = gpu.memory_bytes
    streamed = 0.0
    host = 0.0
    if mem.resident_bytes <= cap:
        verdict = "fits"
    elif mem.model_offload_bytes <= cap:
        verdict = "needs model offload"
        host = sum(mem.component_bytes.values())
    else:
        verdict = "needs block offload"
        # Never negative: when the transformer fits and only the text encoder does not, nothing
        # streams per forward (it showed as "streams ≥ -2.38 GiB per forward" before).
        streamed = max(0.0, mem.transformer_bytes + mem.activation_bytes - cap)
        host = sum(b for c, b in mem.component_bytes.items() if c != "transformer")
    tf = forward_time_floor(flops, mem.transformer_bytes, gpu, compute, streamed_bytes=streamed, forwards=w.forwards,
                            use_measured=use_measured)
    return Fit(gpu, verdict, mem, tf, streamed, host)


# ---------------------------------------------------------------------------------------------
# Measured / floor


@dataclass(frozen=True)
class Ratio:
    """A measurement beside its floor. `ratio` < 1 means the measurement beat physics: an error."""

    what: str
    measured: float
    floor: float
    where: str = ""  # e.g. the case and repeat of the measurement

    @property
    def ratio(self) -> float:
        return self.measured / self.floor if self.floor > 0 else math.inf

    @property
    def beats_floor(self) -> bool:
        return self.ratio < 1.0


def check_against_floor(what: str, measured: float | None, floor: float | None, where: str = "") -> Ratio | None:
    """A `Ratio`, or None when either side is unknown."""
    if measured is None or floor is None or floor <= 0:
        return None
    return Ratio(what, float(measured), float(floor), where)


@dataclass
class FloorFlags:
    """Every measurement that beat its floor (each one a measurement error)."""

    ratios: list[Ratio] = field(default_factory=list)

    def add(self, r: Ratio | None) -> None:
        if r is not None:
            self.ratios.append(r)

    @property
    def flagged(self) -> list[Ratio]:
        return [r for r in self.ratios if r.beats_floor]

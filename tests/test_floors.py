"""Physical floors (`qie_bench.report.floors`): hand-computed cases, derived in the comments.

The reference numbers (peers.md): a 20.43 B-parameter transformer in NF4 needs >= 9.5 GiB
resident, and one transformer forward of a 1024^2 edit with one reference image (8192 image +
512 text tokens) is ~174 TFLOP: ~118 in the token-wise linear layers, ~56 in attention.
"""

from __future__ import annotations

import math

import pytest

from qie_bench.report import floors as F
from qie_bench.report.gpus import GPUS, gpu_by_key, match_gpu

GiB = 2**30
D = 3072  # released width: 24 heads x 128 = 3072


@pytest.fixture(scope="module")
def shape() -> F.TransformerShape:
    return F.TransformerShape.from_config(F.released_config("transformer"))


# ---------------------------------------------------------------------------------------------
# Parameter counts from the configs


def test_width_from_config(shape: F.TransformerShape) -> None:
    # num_attention_heads x attention_head_dim = 24 x 128; MLP width 4 x 3072 = 12288
    assert shape.width == D and shape.mlp_width == 12288 and shape.num_layers == 60


def test_per_token_weights_are_113_2_million(shape: F.TransformerShape) -> None:
    # Per block each stream (image: to_q/to_k/to_v/to_out; text: add_q/add_k/add_v/to_add_out)
    # has 4 projections of 3072 x 3072, and an MLP of 3072 x 12288 plus 12288 x 3072:
    #   4 x 3072^2 + 2 x 3072 x 12288 = 37,748,736 + 75,497,472 = 113,246,208 = 12 d^2.
    # A token passes through ONE stream's weights (image tokens through the image stream, text
    # tokens through the text stream), so this is the per-token count per block, not twice it.
    # Biases (4 x 3072 + 12288 + 3072 = 27,648) are additions, not multiply-adds.
    p = F.transformer_params(shape)
    assert p.token_weights_per_stream == 4 * D * D + 2 * D * 4 * D == 12 * D * D == 113_246_208
    assert p.token_biases_per_stream == 27_648
    # The modulation layers (img_mod, txt_mod: Linear(3072, 6 x 3072) each) hold as many weights
    # again, but act once per forward on the timestep embedding, not once per token.
    assert p.modulation_per_block == 2 * (D * 6 * D + 6 * D) == 113_283_072


def test_transformer_params_match_the_release(shape: F.TransformerShape) -> None:
    # per block: 2 streams x (113,246,208 + 27,648) + modulation 113,283,072 + 4 RMSNorm(128) = 339,831,296
    # x 60 blocks = 20,389,877,760; + img_in 199,680 + txt_norm 3,584 + txt_in 11,013,120
    # + timestep embedding 789,504 + 9,440,256 + norm_out 18,880,512 + proj_out 196,672 = 20,430,401,088
    p = F.transformer_params(shape)
    assert p.per_block == 339_831_296
    assert p.blocks == 20_389_877_760
    assert p.embeddings + p.output == 40_523_328
    assert p.total == F.RELEASED_TRANSFORMER_PARAMS == 20_430_401_088


def test_text_encoder_params_match_the_release() -> None:
    # Qwen2.5-VL-7B: 28 layers x 233,057,792 + embeddings and untied lm_head 2 x 152064 x 3584
    # + final norm = 7,615,616,512; vision tower 676,550,144; total 8,292,166,656 (peers.md).
    assert F.text_encoder_params(F.released_config("text_encoder")) == F.RELEASED_TEXT_ENCODER_PARAMS == 8_292_166_656


def test_tiny_transformer_count_matches_the_loaded_model() -> None:
    # The tiny profile (2 blocks, 3 heads x 16, text width 16, 64 latent channels) loads a
    # transformer of 195,376 parameters (variants/<v>.build.json of a smoke run).
    s = F.TransformerShape(num_layers=2, num_attention_heads=3, attention_head_dim=16, joint_attention_dim=16,
                           in_channels=64, out_channels=16, patch_size=2)
    assert F.transformer_params(s).total == 195_376


def test_counts_match_diffusers_on_the_meta_device() -> None:
    """The closed forms agree with the real classes (built on the meta device: no memory)."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        vae = diffusers.AutoencoderKLQwenImage(**F.released_config("vae"))
    assert sum(p.numel() for p in vae.parameters()) == F.RELEASED_VAE_PARAMS


# ---------------------------------------------------------------------------------------------
# Memory


def test_nf4_transformer_needs_9_5_gib() -> None:
    # 20,430,401,088 parameters x 0.5 byte (4 bits) = 10,215,200,544 bytes = 9.51 GiB, before the
    # quantization state (absmax per 64 weights) that brings the probe's figure to 9.87 GiB.
    b = F.weight_bytes(20_430_401_088, "nf4")
    assert b == 10_215_200_544
    assert b / GiB == pytest.approx(9.5136, abs=1e-4)
    assert b / GiB >= 9.5


def test_bf16_and_int8_bytes() -> None:
    # 2 and 1 bytes per parameter: 38.05 GiB (the probe allocated 38.06 GiB) and 19.03 GiB
    assert F.weight_bytes(F.RELEASED_TRANSFORMER_PARAMS, "bf16") / GiB == pytest.approx(38.054, abs=1e-3)
    assert F.weight_bytes(F.RELEASED_TRANSFORMER_PARAMS, "int8") / GiB == pytest.approx(19.027, abs=1e-3)


def test_partly_quantized_component() -> None:
    # nf4 keeping the modulation layers in bf16: the 2 x 60 x 113,246,208 token-wise weights at
    # 0.5 byte, the remaining 6.84 B parameters at 2 bytes -> 6.33 + 12.74 = 19.07 GiB.
    q = 2 * 60 * 113_246_208
    fmt = F.WeightFormat(F.PRECISIONS["bf16"], F.PRECISIONS["nf4"], q)
    expected = q * 0.5 + (F.RELEASED_TRANSFORMER_PARAMS - q) * 2
    assert fmt.bytes(F.RELEASED_TRANSFORMER_PARAMS) == expected
    assert expected / GiB == pytest.approx(19.07, abs=0.01)
    assert set(fmt.computes) == {"bf16"}


def test_precision_names() -> None:
    assert F.precision("bfloat16").bytes_per_param == 2
    assert F.precision("torch.float32").compute == "tf32"
    assert F.precision_from_bytes_per_param(0.53).bytes_per_param == 0.5
    assert F.precision_from_bytes_per_param(1.02).name == "int8"
    with pytest.raises(KeyError):
        F.precision("fp12")


# ---------------------------------------------------------------------------------------------
# Tokens and FLOPs


def test_tokens() -> None:
    # (H/16)(W/16): 1024^2 -> 64 x 64 = 4096; every reference is VAE-encoded at ~1 MP whatever the
    # output size, so a 512^2 edit still gets a 4096-token reference.
    assert F.latent_tokens(1024, 1024) == 4096
    assert F.latent_tokens(512, 512) == 1024
    assert F.reference_tokens(512, 512) == 4096
    assert F.reference_tokens(1024, 1024) == 4096
    # 4:3 at 1 MP -> 1184 x 896 (multiples of 32) -> 74 x 56 = 4144 tokens
    assert F.reference_tokens(800, 600) == 4144
    # condition image at 384^2 -> 392^2 (multiple of 28) -> 28 x 28 patches / (2 x 2) = 196
    assert F.condition_tokens(1024, 1024) == 196
    w = F.edit_workload((1024, 1024), [(1024, 1024)], steps=40, true_cfg=True)
    assert (w.image_tokens, w.text_tokens, w.forwards) == (8192, 198, 80)


def test_forward_flops_1024_edit_one_reference(shape: F.TransformerShape) -> None:
    # L = 8192 image + 512 text = 8704 tokens, 60 blocks, d = 3072.
    # Linear: 113,246,208 weights per token per block x 2 FLOP x 8704 tokens x 60 blocks
    #       = 118,283,399,331,840 FLOP = 118.3 TFLOP.
    # Attention: QK^T (L x L x d multiply-adds) and AV (the same) = 4 L^2 d FLOP per block
    #       = 4 x 8704^2 x 3072 x 60 = 55,856,049,684,480 FLOP = 55.9 TFLOP.
    # Total with img_in/txt_in/proj_out (17.7 GFLOP) and the once-per-forward modulation and
    # embeddings (13.6 GFLOP): 174.2 TFLOP.
    f = F.forward_flops(shape, 8192, 512)
    assert f.linear == 113_246_208 * 2 * 8704 * 60 == 118_283_399_331_840
    assert f.attention == 4 * 8704**2 * 3072 * 60 == 55_856_049_684_480
    assert f.linear / 1e12 == pytest.approx(118.0, rel=0.01)
    assert f.attention / 1e12 == pytest.approx(56.0, rel=0.01)
    assert f.total / 1e12 == pytest.approx(174.0, rel=0.005)
    assert (f.io + f.per_forward) / f.total < 2e-4  # the non-token-wise parts are negligible


def test_edit_flops_scale_with_steps_and_cfg(shape: F.TransformerShape) -> None:
    one = F.forward_flops(shape, 8192, 512).total
    assert F.edit_flops(shape, F.Workload(8192, 512, 40, True)) == 80 * one
    assert F.edit_flops(shape, F.Workload(8192, 512, 4, False)) == 4 * one


# ---------------------------------------------------------------------------------------------
# Time floors


def test_h100_bf16_forward_floor(shape: F.TransformerShape) -> None:
    # 174.2 TFLOP / 989.4 TFLOP/s = 0.176 s (spec); / 798 (measured peak) = 0.218 s. Reading the
    # 38 GiB of BF16 weights at 3.35 TB/s takes 12.2 ms, so the floor is compute-bound. The probe
    # measured 0.449 s: 2.55x the hard floor.
    h100 = gpu_by_key("h100-sxm")
    f = F.forward_flops(shape, 8192, 512).total
    tb = F.weight_bytes(F.RELEASED_TRANSFORMER_PARAMS, "bf16")
    spec = F.forward_time_floor(f, tb, h100, "bf16")
    measured_peak = F.forward_time_floor(f, tb, h100, "bf16", use_measured=True)
    assert spec.forward_s == pytest.approx(0.176, abs=0.001)
    assert measured_peak.forward_s == pytest.approx(0.2183, abs=0.001)
    assert spec.memory_s == pytest.approx(0.0122, abs=0.0002)
    assert spec.bound == "compute"
    assert 0.449 / spec.forward_s == pytest.approx(2.55, abs=0.01)


def test_rtx3060_four_step_floor(shape: F.TransformerShape) -> None:
    # peers.md: on an RTX 3060 (~25 TFLOP/s BF16) a 4-step 1024^2 edit without CFG needs at least
    # 4 x 174 TFLOP / 25.6 TFLOP/s = 27 s; 40 steps with true CFG (80 forwards) >= 9 min.
    g = gpu_by_key("rtx-3060")
    f = F.forward_flops(shape, 8192, 512).total
    tb = F.weight_bytes(F.RELEASED_TRANSFORMER_PARAMS, "nf4")
    four = F.forward_time_floor(f, tb, g, "bf16", forwards=4).total_s
    eighty = F.forward_time_floor(f, tb, g, "bf16", forwards=80).total_s
    assert four == pytest.approx(27.2, abs=0.1)
    assert eighty / 60 >= 9


def test_fit_on_consumer_gpus() -> None:
    size = F.ModelSize.released()
    w = F.edit_workload((1024, 1024), [(1024, 1024)], steps=40, true_cfg=True)
    nf4 = {"transformer": F.WeightFormat.of("nf4"), "text_encoder": F.WeightFormat.of("nf4"), "vae": F.WeightFormat.of("bf16")}
    # NF4 everywhere: 9.51 + 3.86 + 0.24 GiB = 13.6 GiB: more than a 12 GiB RTX 3060 holds at once,
    # but the transformer alone (9.5 GiB) fits: model offload. On an 8 GiB RTX 3070 even the
    # transformer does not fit: ~1.5 GiB of it must stream over PCIe in every forward.
    fit3060 = F.fit_on_gpu(size, nf4, w, gpu_by_key("rtx-3060"))
    fit3070 = F.fit_on_gpu(size, nf4, w, gpu_by_key("rtx-3070"))
    fit4090 = F.fit_on_gpu(size, nf4, w, gpu_by_key("rtx-4090"))
    assert fit4090.verdict == "fits"
    assert fit3060.verdict == "needs model offload"
    assert fit3070.verdict == "needs block offload"
    assert fit3070.streamed_per_forward_bytes / GiB == pytest.approx(9.51 + 0.05 - 8, abs=0.05)
    # BF16 needs 53.8 GiB at once: fits an 80 GB H100, not a 48 GB L40S
    bf16 = {c: F.WeightFormat.of("bf16") for c in size.params}
    assert F.fit_on_gpu(size, bf16, w, gpu_by_key("h100-sxm")).verdict == "fits"
    assert F.fit_on_gpu(size, bf16, w, gpu_by_key("l40s")).verdict == "needs model offload"
    # NF4 transformer (9.5 GiB) with the bf16 text encoder (15.4 GiB) on a 12 GiB card: the
    # transformer fits, the encoder does not. Block offload of the encoder, once per edit;
    # nothing streams per forward (was negative: 12 - 9.51 - 0.05 GiB).
    nf4_tr = {"transformer": F.WeightFormat.of("nf4"), "text_encoder": F.WeightFormat.of("bf16"),
              "vae": F.WeightFormat.of("bf16")}
    fit = F.fit_on_gpu(size, nf4_tr, w, gpu_by_key("rtx-3060"))
    assert fit.verdict == "needs block offload" and fit.streamed_per_forward_bytes == 0
    assert fit.host_bytes_per_edit / GiB == pytest.approx(15.4 + 0.24, abs=0.1)


# ---------------------------------------------------------------------------------------------
# Flags


def test_a_result_faster_than_its_floor_is_flagged(shape: F.TransformerShape) -> None:
    # A "measured" 1024^2 BF16 forward of 0.1 s on an H100 is below the 0.176 s floor: impossible,
    # so a measurement error. 0.449 s (the probe) is not flagged.
    h100 = gpu_by_key("h100-sxm")
    floor = F.forward_time_floor(F.forward_flops(shape, 8192, 512).total,
                                 F.weight_bytes(F.RELEASED_TRANSFORMER_PARAMS, "bf16"), h100, "bf16").forward_s
    flags = F.FloorFlags()
    flags.add(F.check_against_floor("latency", 0.1, floor, "fake"))
    flags.add(F.check_against_floor("latency", 0.449, floor, "probe"))
    flags.add(F.check_against_floor("latency", None, floor))  # unknown: no ratio, no flag
    assert [r.where for r in flags.flagged] == ["fake"]
    assert flags.flagged[0].ratio == pytest.approx(0.1 / 0.176, abs=0.01)
    # memory: an NF4 transformer reported at 8 GiB resident is below its 9.51 GiB floor
    r = F.check_against_floor("peak", 8 * GiB, F.weight_bytes(F.RELEASED_TRANSFORMER_PARAMS, "nf4"))
    assert r is not None and r.beats_floor


# ---------------------------------------------------------------------------------------------
# GPU table


def test_gpu_table_matches_device_names() -> None:
    assert match_gpu("gpu:NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert match_gpu("NVIDIA H100 PCIe").key == "h100-pcie"
    assert match_gpu("NVIDIA H200").key == "h200"
    assert match_gpu("NVIDIA A100-SXM4-80GB").key == "a100-80gb"
    assert match_gpu("NVIDIA GeForce RTX 3060").key == "rtx-3060"
    assert match_gpu("NVIDIA GeForce RTX 3060 Ti") is None  # 8 GB, different chip: not guessed
    assert match_gpu("cpu:AMD EPYC") is None
    assert match_gpu("Some Future GPU") is None
    keys = [g.key for g in GPUS]
    assert len(keys) == len(set(keys))
    for g in GPUS:  # dense rates ordered as the hardware has them
        assert g.tf32_tflops < g.bf16_tflops and g.memory_tbps > 0 and g.pcie_gbps > 0
        assert math.isfinite(g.rate_tflops("unknown"))
    assert gpu_by_key("rtx-3060").bf16_tflops == pytest.approx(25, rel=0.05)
    assert gpu_by_key("h100-sxm").bf16_tflops == pytest.approx(989, rel=0.01)
    assert gpu_by_key("h100-sxm").measured_bf16_tflops == 798

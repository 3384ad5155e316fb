"""int8 / nf4 / compose variants on the tiny pipeline, and the on-disk variant cache.

Each quantization variant is built in-process exactly as the worker builds it (validate the
suite entry, `load_plan`, `load_model`, `apply`), then: the layers it claims to quantize have the
library's types and the kept ones are untouched; `module_weight_bytes` of each quantized layer
equals the bytes computed by hand from its shape; a real edit runs, is finite, and repeats
bit-for-bit with the same seed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from qie_bench.errors import UserInputError
from qie_bench.models import (
    LoadPlan,
    load_model,
    module_weight_bytes,
    pipeline_weight_bytes,
)
from qie_bench.runner.edit import run_edit
from qie_bench.runner.memory import Nvml
from qie_bench.suite import GenerationConfig, ModelConfig, VariantEntry, load_suite
from qie_bench.variants import VARIANTS
from qie_bench.variants.cache import (
    VariantCache,
    cache_key,
    cacheable,
    default_cache_dir,
    variant_cache_key,
)
from qie_bench.variants.quantize import NF4_KEEP, matches

bnb = pytest.importorskip("bitsandbytes")
torchao_quant = pytest.importorskip("torchao.quantization")

# The smallest tiny profile: 32x32 images, so an edit takes about a second on a CPU.
TINY = ModelConfig(source="tiny", device="cpu", tiny={"reference_area": 1024, "condition_area": 784, "vae_base_dim": 4})
# Guidance (a second transformer pass per step) is exercised by the nf4 test; the others run the
# cheapest edit that still goes through every component.
GEN_CFG = GenerationConfig(steps=2, true_cfg_scale=4.0, width=32, height=32)
GEN = GenerationConfig(steps=1, true_cfg_scale=1.0, width=32, height=32)


def _image() -> Image.Image:
    y, x = np.mgrid[0:32, 0:32]
    rgb = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype("uint8")
    return Image.fromarray(rgb)


def build(name: str = "v", source_cfg: ModelConfig = TINY, **entry):
    """As the worker does: validated entry -> load_plan -> load_model -> apply."""
    variant = VARIANTS.validate_entry(VariantEntry(name=name, **entry), f"variants ('{name}')")
    loaded = load_model(source_cfg, variant.load_plan(source_cfg.source))
    report = variant.apply(loaded)
    return variant, loaded, report


def edit_twice(loaded, gen: GenerationConfig = GEN):
    """Two edits with the same seed: (first result, whether the images are identical)."""
    first = run_edit(loaded, [_image()], "make the sky red", gen, 7, Nvml(enabled=False), 0.01)
    second = run_edit(loaded, [_image()], "make the sky red", gen, 7, Nvml(enabled=False), 0.01)
    assert first.output_finite and not first.output_constant
    return first, first.image.tobytes() == second.image.tobytes()


@pytest.fixture(scope="module")
def base():
    """The unquantized bf16 tiny pipeline, to compare layers against."""
    return load_model(TINY, LoadPlan(dtype=torch.bfloat16))


def linears(module):
    return {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and n}


# -- bytes by hand ---------------------------------------------------------------------------


def nf4_bytes(out_f: int, in_f: int, bias: bool, double_quant: bool = True, bias_itemsize: int = 2) -> int:
    n = out_f * in_f
    blocks = math.ceil(n / 64)
    total = math.ceil(n / 2)  # two 4-bit codes per byte
    total += 16 * 4  # the NF4 code table (16 fp32 values)
    if double_quant:
        total += blocks * 1  # absmax quantized to 8 bits
        total += 4  # offset subtracted before quantizing absmax (fp32 scalar)
        total += math.ceil(blocks / 256) * 4 + 256 * 4  # nested absmax (fp32 per 256) + its 8-bit code table
    else:
        total += blocks * 4  # fp32 absmax per block of 64
    return total + (out_f * bias_itemsize if bias else 0)


def int8_bnb_bytes(out_f: int, in_f: int, bias: bool) -> int:
    return out_f * in_f + out_f * 4 + (out_f * 2 if bias else 0)  # int8 weights + fp32 row scales (SCB)


def int8_torchao_bytes(out_f: int, in_f: int, bias: bool) -> int:
    # Int8Tensor: int8 qdata + fp32 scale and int8 zero point per output row.
    return out_f * in_f + out_f * 4 + out_f * 1 + (out_f * 2 if bias else 0)


def bf16_bytes(layer) -> int:
    return layer.in_features * layer.out_features * 2 + (layer.out_features * 2 if layer.bias is not None else 0)


def check_bytes(component, report_component, names, expected_fn):
    """Every quantized layer holds exactly the bytes computed from its shape; the report agrees."""
    before = after = 0
    for n in names:
        layer = component.get_submodule(n)
        expected = expected_fn(layer.out_features, layer.in_features, layer.bias is not None)
        assert module_weight_bytes(layer)[0] == expected, n
        after += expected
        before += bf16_bytes(layer)
    assert report_component["bytes_after"] == after
    assert report_component["bytes_before"] == before
    return after / before


# -- nf4 --------------------------------------------------------------------------------------


def test_nf4_tiny_quantizes_all_but_kept_layers(base):
    _variant, loaded, report = build(kind="nf4")
    tr, ref = loaded.pipe.transformer, base.pipe.transformer
    changes = report.changes["components"]["transformer"]
    kept = [n for n in linears(ref) if matches("transformer", n, NF4_KEEP)]
    quantized = [n for n in linears(ref) if n not in kept]
    assert len(kept) == 6 and len(quantized) == 28  # in/out, norm_out, time embed kept; 2 blocks quantized, modulation too
    assert changes["kept_modules"] == kept and changes["quantized_modules"] == quantized
    for n in quantized:
        layer = tr.get_submodule(n)
        assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4"
        assert layer.weight.dtype == torch.uint8 and layer.compute_dtype == torch.bfloat16
        assert layer.weight.quant_state.nested  # double quant
    for n in kept:
        layer, orig = tr.get_submodule(n), ref.get_submodule(n)
        assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.bfloat16
        assert torch.equal(layer.weight, orig.weight)
    # Text encoder and VAE untouched.
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.pipe.text_encoder.modules())
    assert changes["kept_bytes"] == sum(bf16_bytes(ref.get_submodule(n)) for n in kept)
    ratio = check_bytes(tr, changes, quantized, nf4_bytes)
    # Tiny layers (48x48) carry ~1 KiB of code tables each; the full-size ratio is checked below.
    assert 0.3 < ratio < 0.45
    assert changes["quantized_params"] == sum(tr.get_submodule(n).weight.quant_state.shape.numel()
                                              + tr.get_submodule(n).bias.numel() for n in quantized)
    # The component total drops by exactly what the quantized layers saved.
    assert pipeline_weight_bytes(loaded.pipe)["transformer"]["weights_bytes"] == (
        pipeline_weight_bytes(base.pipe)["transformer"]["weights_bytes"] - changes["bytes_before"] + changes["bytes_after"])
    assert report.changes["keep_modules"]["img_in"] == 1 and report.changes["keep_modules_unmatched"] == ["lm_head"]
    assert "*img_mod*" not in report.changes["keep_modules"], "modulation layers are quantized by default"
    json.dumps(report.changes)  # recordable as is
    first, same = edit_twice(loaded, GEN_CFG)
    assert len(first.step_s) == GEN_CFG.steps
    assert same, "same seed, different image"


def test_nf4_options_text_encoder_no_double_quant_fp32_compute(base):
    _, loaded, report = build(kind="nf4", components=["transformer", "text_encoder"], double_quant=False,
                              compute_dtype="fp32", keep_modules=["lm_head", "*visual*"])
    te, ref = loaded.pipe.text_encoder, base.pipe.text_encoder
    quantized = [n for n in linears(ref) if n != "lm_head" and "visual" not in n]
    assert quantized and report.changes["components"]["text_encoder"]["quantized_modules"] == quantized
    for n in quantized:
        layer = te.get_submodule(n)
        assert isinstance(layer, bnb.nn.Linear4bit) and layer.compute_dtype == torch.float32
        assert not layer.weight.quant_state.nested
    assert type(te.get_submodule("lm_head")) is torch.nn.Linear
    check_bytes(te, report.changes["components"]["text_encoder"], quantized,
                lambda o, i, b: nf4_bytes(o, i, b, double_quant=False))
    # Everything in the transformer is quantized now: no default keep patterns.
    assert report.changes["components"]["transformer"]["kept"] == 0
    assert run_edit(loaded, [_image()], "make it red", GEN, 3, Nvml(enabled=False), 0.01).output_finite


# -- int8 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["bnb", "torchao"])
def test_int8_tiny(base, backend):
    _, loaded, report = build(kind="int8", backend=backend, components=["transformer", "text_encoder"])
    for comp in ("transformer", "text_encoder"):
        module, ref = getattr(loaded.pipe, comp), getattr(base.pipe, comp)
        quantized = [n for n in linears(ref) if n != "lm_head"]
        info = report.changes["components"][comp]
        assert info["quantized_modules"] == quantized and info["quantized_in_place"] == len(quantized)
        for n in quantized:
            layer = module.get_submodule(n)
            if backend == "bnb":
                assert isinstance(layer, bnb.nn.Linear8bitLt) and layer.weight.dtype == torch.int8
                assert not layer.state.has_fp16_weights and layer.state.threshold == 6.0
            else:
                assert isinstance(layer.weight, torchao_quant.Int8Tensor) and layer.weight.qdata.dtype == torch.int8
        ratio = check_bytes(module, info, quantized, int8_bnb_bytes if backend == "bnb" else int8_torchao_bytes)
        assert 0.5 < ratio < 0.65  # ~1/2 plus per-row scales (relatively large on 48-wide layers)
    assert type(loaded.pipe.text_encoder.get_submodule("lm_head")) is torch.nn.Linear
    assert report.changes["library"].startswith("bitsandbytes" if backend == "bnb" else "torchao")
    _first, same = edit_twice(loaded)
    assert same, "same seed, different image"


def test_full_size_layer_ratios():
    """Measured on one layer of the released transformer's width (3072x3072): the ratios the
    peers quote — NF4 about 1/4 (under 1/3) of bf16, int8 about 1/2."""
    from qie_bench.variants.quantize import to_int8_bnb, to_nf4

    torch.manual_seed(0)
    layer = torch.nn.Linear(3072, 3072).to(torch.bfloat16)
    bf16 = module_weight_bytes(layer)[0]
    nf4 = module_weight_bytes(to_nf4(layer, torch.bfloat16, True))[0]
    int8 = module_weight_bytes(to_int8_bnb(layer, 6.0))[0]
    assert nf4 == nf4_bytes(3072, 3072, True) and int8 == int8_bnb_bytes(3072, 3072, True)
    assert 0.25 < nf4 / bf16 < 0.27
    assert 0.50 < int8 / bf16 < 0.51
    ao = torch.nn.Sequential(layer)
    torchao_quant.quantize_(ao, torchao_quant.Int8WeightOnlyConfig())
    assert module_weight_bytes(ao)[0] == int8_torchao_bytes(3072, 3072, True)


# -- compose ----------------------------------------------------------------------------------


def test_compose_dtype_then_nf4(base):
    variant, loaded, report = build(kind="compose", steps=[{"kind": "dtype", "dtype": "fp32"}, {"kind": "nf4"}])
    assert variant.load_plan("tiny") == variant.steps[0].load_plan("tiny")  # the first step's plan
    tr = loaded.pipe.transformer
    assert isinstance(tr.get_submodule("transformer_blocks.0.attn.to_q"), bnb.nn.Linear4bit)
    assert tr.get_submodule("img_in").weight.dtype == torch.float32  # kept, in the first step's dtype
    steps = report.changes["steps"]
    assert [s["kind"] for s in steps] == ["dtype", "nf4"]
    assert steps[0]["changes"]["component_dtypes"]["transformer"] == "float32"
    nf4 = steps[1]["changes"]["components"]["transformer"]
    assert nf4["quantized"] == 28 and nf4["kept"] == 6
    # Quantized from fp32 weights: bytes before are 4 per weight.
    assert nf4["bytes_before"] == sum(bf16_bytes(tr.get_submodule(n)) * 2 for n in nf4["quantized_modules"])
    _first, same = edit_twice(loaded)
    assert same


@pytest.mark.skipif("pruned" not in VARIANTS.kinds(), reason="the pruned kind is not registered")
def test_compose_pruned_then_nf4():
    """Composition with another helper's kind: drop block 1 of 2, then quantize what is left."""
    _variant, loaded, report = build(kind="compose", steps=[{"kind": "pruned", "blocks_to_remove": [1]}, {"kind": "nf4"}])
    tr = loaded.pipe.transformer
    assert len(tr.transformer_blocks) == 1
    nf4 = report.changes["steps"][1]["changes"]["components"]["transformer"]
    assert nf4["quantized"] == 14 and nf4["kept"] == 6  # one block: 12 layers + its 2 modulation layers; 6 outside blocks kept
    assert isinstance(tr.transformer_blocks[0].attn.to_q, bnb.nn.Linear4bit)
    assert run_edit(loaded, [_image()], "make it red", GEN, 2, Nvml(enabled=False), 0.01).output_finite


def test_compose_records_unused_later_plan():
    variant = VARIANTS.validate_entry(
        VariantEntry(name="c", kind="compose", steps=[{"kind": "nf4"}, {"kind": "dtype", "dtype": "fp16"}]), "variants")
    loaded = load_model(TINY, variant.load_plan("tiny"))
    report = variant.apply(loaded)
    assert report.changes["unused_load_plans"][0]["kind"] == "dtype"


# -- real weights (pretrained) ----------------------------------------------------------------


def test_pretrained_quantized_while_loading_torchao(base, tmp_path):
    """A saved tiny pipeline loaded as `pretrained`: torchao int8 goes through diffusers'
    PipelineQuantizationConfig (per-component configs with exact skip lists) on CPU."""
    from diffusers.quantizers import PipelineQuantizationConfig

    base.pipe.save_pretrained(tmp_path / "model")
    cfg = ModelConfig(source="pretrained", id=str(tmp_path / "model"), device="cpu")
    variant = VARIANTS.validate_entry(VariantEntry(name="ao", kind="int8", backend="torchao", components=["transformer", "text_encoder"],
                                                   keep_modules=["lm_head", "*img_mod*"]), "variants")
    plan = variant.load_plan("pretrained")
    assert isinstance(plan.pretrained_kwargs["quantization_config"], PipelineQuantizationConfig)
    loaded = load_model(cfg, plan)
    loaded.reference_area, loaded.condition_area = TINY.tiny.reference_area, TINY.tiny.condition_area
    report = variant.apply(loaded)
    tr = report.changes["components"]["transformer"]
    assert report.changes["method"].startswith("quantized while loading")
    assert tr["quantized_by_loader"] == 32 and tr["quantized_in_place"] == 0
    assert tr["kept_modules"] == ["transformer_blocks.0.img_mod.1", "transformer_blocks.1.img_mod.1"]
    assert isinstance(loaded.pipe.transformer.img_in.weight, torchao_quant.Int8Tensor)
    assert type(loaded.pipe.transformer.transformer_blocks[0].img_mod[1].weight) is torch.nn.Parameter
    assert report.changes["components"]["text_encoder"]["kept_modules"] == ["lm_head"]
    check_bytes(loaded.pipe.transformer, tr, tr["quantized_modules"], int8_torchao_bytes)
    assert run_edit(loaded, [_image()], "make it red", GEN, 1, Nvml(enabled=False), 0.01).output_finite


def test_pretrained_bnb_plan():
    """bnb on real weights: with CUDA, quantize while loading with exact skip lists; without it
    (diffusers' bnb loader raises 'No GPU found'), load 16-bit and convert in place in apply."""
    from diffusers import BitsAndBytesConfig as DiffusersBnb
    from transformers import BitsAndBytesConfig as TransformersBnb

    variant = VARIANTS.validate_entry(VariantEntry(name="n", kind="nf4", components=["transformer", "text_encoder"]), "variants")
    plan = variant.load_plan("pretrained")
    assert ("quantization_config" in plan.pretrained_kwargs) == torch.cuda.is_available()
    mapping = variant._loader_configs().quant_mapping
    tr, te = mapping["transformer"], mapping["text_encoder"]
    assert isinstance(tr, DiffusersBnb) and isinstance(te, TransformersBnb)
    assert tr.load_in_4bit and tr.bnb_4bit_quant_type == "nf4" and tr.bnb_4bit_use_double_quant
    skip = set(tr.llm_int8_skip_modules)
    # img_in, txt_in, proj_out, norm_out.linear and the 2 time-embed layers; modulation is quantized.
    assert len(skip) == 6 and {"img_in", "norm_out.linear"} <= skip
    assert "transformer_blocks.59.img_mod.1" not in skip
    assert te.llm_int8_skip_modules == ["lm_head"]


# -- bad options ------------------------------------------------------------------------------


BAD = [
    ('kind = "int8"', "('bad').backend", "missing required key"),
    ('kind = "int8"\nbackend = "bitsandbytes"', "('bad').backend", "'bitsandbytes' is not allowed"),
    ('kind = "int8"\nbackend = "torchao"\nthreshold = 4.0', "('bad').threshold", "applies to backend 'bnb' only"),
    ('kind = "nf4"\ncompute_dtype = "fp8"', "('bad').compute_dtype", "'fp8' is not allowed"),
    ('kind = "nf4"\ncomponents = []', "('bad').components", "is empty"),
    ('kind = "nf4"\ncomponents = ["transformer", "vae"]', "('bad').components", "allow_vae = true"),
    ('kind = "nf4"\ncomponents = ["unet"]', "('bad').components[0]", "'unet' is not allowed"),
    ('kind = "nf4"\nkeep_modules = [""]', "('bad').keep_modules", "empty pattern"),
    ('kind = "nf4"\ndouble_qant = false', "('bad').double_qant", "did you mean 'double_quant'"),
    ('kind = "compose"\nsteps = []', "('bad').steps", "at least 1"),
    ('kind = "compose"\nsteps = [{kind = "nf5"}]', "('bad').steps[0].kind", "did you mean 'nf4'"),
    ('kind = "compose"\nsteps = [{kind = "dtype", dtype = "fp32"}, {kind = "nf4", compute_dtype = "fp8"}]',
     "('bad').steps[1].compute_dtype", "'fp8' is not allowed"),
    ('kind = "compose"\nsteps = [{kind = "nf4", threshold = 2.0}]', "('bad').steps[0].threshold", "unknown option for kind 'nf4'"),
    ('kind = "compose"\nsteps = [{dtype = "fp32"}]', "('bad').steps[0].kind", "missing required key"),
    ('kind = "compose"\nsteps = [{kind = "compose", steps = [{kind = "nf4"}]}]', "('bad').steps[0].kind", "cannot itself be 'compose'"),
]


@pytest.mark.parametrize("body,key,problem", BAD, ids=[b[2][:24] for b in BAD])
def test_bad_options_name_the_key(write_suite, body, key, problem):
    path = write_suite(extra=f'\n[[variants]]\nname = "bad"\n{body}\n')
    with pytest.raises(UserInputError) as err:
        load_suite(path)
    line = str(err.value)
    assert "\n" not in line
    assert f"variants[1] {key}:" in line and problem in line, line


def test_good_options_validate(write_suite):
    path = write_suite(extra="""
[[variants]]
name = "vae-forced"
kind = "nf4"
components = ["transformer", "vae"]
allow_vae = true

[[variants]]
name = "llm-int8"
kind = "int8"
backend = "bnb"
threshold = 0.0

[[variants]]
name = "fp32-nf4"
kind = "compose"
steps = [{kind = "dtype", dtype = "fp32"}, {kind = "nf4", compute_dtype = "fp16"}]
""")
    suite = load_suite(path)
    assert [v.kind for v in suite.variants] == ["dtype", "nf4", "int8", "compose"]


# -- cache ------------------------------------------------------------------------------------


def _state():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, generator=g, dtype=torch.bfloat16)
    return {"a.weight": w, "a.bias": torch.zeros(8), "tied": w, "strided": torch.arange(12.0).reshape(3, 4).t()}


def test_cache_round_trip(tmp_path):
    cache = VariantCache(tmp_path)
    key = cache_key({"source": "tiny", "init_seed": 0}, "pruned", {"blocks": 1})
    assert cache.lookup(key) is None and cache.last_miss == "absent"
    path = cache.store(key, _state(), {"kept_blocks": [0], "importance": [0.5, 0.1]})
    assert cache.lookup(key) == path and path.name == "weights.safetensors"
    state, meta = cache.load(key)
    for name, t in _state().items():
        assert torch.equal(state[name], t) and state[name].dtype == t.dtype
    assert meta == {"kept_blocks": [0], "importance": [0.5, 0.1]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    record = json.loads((path.parent / "entry.json").read_text())
    assert record["key"] == key and len(record["sha256"]) == 64


def test_cache_meta_only_entry(tmp_path):
    """An entry may hold no tensors at all (e.g. cached importance scores)."""
    cache = VariantCache(tmp_path)
    key = cache_key({"source": "tiny"}, "pruned/block-influence", {"cases": ["a"]})
    state, meta, status = cache.get_or_build(key, lambda: ({}, {"scores": [0.1, 0.2]}))
    assert (state, meta, status) == ({}, {"scores": [0.1, 0.2]}, "miss")
    assert cache.get_or_build(key, lambda: 1 / 0)[1:] == ({"scores": [0.1, 0.2]}, "hit")


def test_cache_corrupt_entry_is_rebuilt_not_loaded(tmp_path):
    cache = VariantCache(tmp_path)
    key = cache_key({"source": "tiny", "init_seed": 0}, "pruned", {"blocks": 1})
    path = cache.store(key, _state(), {"n": 1})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last tensor's data: same size, different hash
    path.write_bytes(bytes(data))
    builds = []

    def build():
        builds.append(1)
        return _state(), {"n": 2}

    state, meta, status = cache.get_or_build(key, build)
    assert status == "rebuilt (corrupt: sha256 mismatch)" and builds == [1] and meta == {"n": 2}
    assert torch.equal(state["a.weight"], _state()["a.weight"])
    state, meta, status = cache.get_or_build(key, build)  # now a verified hit
    assert status == "hit" and builds == [1] and meta == {"n": 2}
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    assert cache.lookup(key) is None and cache.last_miss.startswith("corrupt: size")
    assert not path.parent.exists()


def test_cache_keys_and_dir(tmp_path, monkeypatch):
    ident = {"source": "tiny", "init_seed": 0, "config_sha256": "sha256:x"}
    k = cache_key(ident, "pruned", {"blocks": 1})
    assert k == cache_key(dict(ident), "pruned", {"blocks": 1})
    assert k != cache_key({**ident, "init_seed": 1}, "pruned", {"blocks": 1})
    assert k != cache_key(ident, "pruned", {"blocks": 2})
    assert k != cache_key(ident, "distilled", {"blocks": 1})
    assert k != cache_key(ident, "pruned", {"blocks": 1}, versions={"torch": "0"})
    assert not cacheable({"source": "pretrained", "id": "/models/x", "revision": "unknown"})[0]
    monkeypatch.setenv("QIE_BENCH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.setenv("QIE_BENCH_CACHE", "off")
    assert default_cache_dir() is None and not VariantCache().enabled
    monkeypatch.delenv("QIE_BENCH_CACHE")
    assert default_cache_dir().parts[-2:] == ("qie-bench", "variants")

    class Loaded:
        identity = ident

    variant = VARIANTS.validate_entry(VariantEntry(name="n", kind="nf4"), "variants")
    assert variant_cache_key(variant, Loaded()) == variant_cache_key(variant, Loaded())
    from qie_bench.variants.quantize import to_nf4

    with pytest.raises(TypeError, match="subclasses"):
        VariantCache(tmp_path).store(k, {"weight": to_nf4(torch.nn.Linear(64, 64), torch.float32, True).weight})
    assert not list(tmp_path.iterdir())  # nothing half-written


# -- GPU (skipped without CUDA) ---------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("entry", [{"kind": "nf4"}, {"kind": "int8", "backend": "bnb"}, {"kind": "int8", "backend": "torchao"}],
                         ids=["nf4", "int8-bnb", "int8-torchao"])
def test_gpu_in_place_on_cuda(entry):
    """Tiny built on the GPU and converted there: the int8 weights really are int8 (bitsandbytes'
    Int8Params.to() would leave a weight that starts on the GPU in 16-bit)."""
    cuda = TINY.model_copy(update={"device": "cuda"})
    _, loaded, report = build(source_cfg=cuda, **entry)
    info = report.changes["components"]["transformer"]
    expected = {"nf4": nf4_bytes, "bnb": int8_bnb_bytes, "torchao": int8_torchao_bytes}[entry.get("backend", "nf4")]
    for n in info["quantized_modules"]:
        weight = loaded.pipe.transformer.get_submodule(n).weight
        assert weight.device.type == "cuda"
        assert (weight.qdata if hasattr(weight, "qdata") else weight).dtype in (torch.uint8, torch.int8)
    check_bytes(loaded.pipe.transformer, info, info["quantized_modules"], expected)
    _first, same = edit_twice(loaded, GEN_CFG)
    assert same


@pytest.mark.gpu
@pytest.mark.parametrize("entry", [{"kind": "nf4", "components": ["transformer", "text_encoder"]},
                                   {"kind": "int8", "backend": "bnb", "components": ["transformer", "text_encoder"]}],
                         ids=["nf4", "int8-bnb"])
def test_gpu_pretrained_bnb_quantized_while_loading(base, tmp_path, entry):
    """Real-weights path with CUDA: diffusers' PipelineQuantizationConfig quantizes while loading,
    keeping exactly the layers keep_modules names, in both the transformer and the text encoder."""
    base.pipe.save_pretrained(tmp_path / "model")
    cfg = ModelConfig(source="pretrained", id=str(tmp_path / "model"), device="cuda")
    variant = VARIANTS.validate_entry(VariantEntry(name="g", **entry), "variants")
    plan = variant.load_plan("pretrained")
    assert "quantization_config" in plan.pretrained_kwargs
    loaded = load_model(cfg, plan)
    loaded.reference_area, loaded.condition_area = TINY.tiny.reference_area, TINY.tiny.condition_area
    report = variant.apply(loaded)
    assert report.changes["method"].startswith("quantized while loading"), report.changes["method"]
    cls = bnb.nn.Linear4bit if entry["kind"] == "nf4" else bnb.nn.Linear8bitLt
    for comp in ("transformer", "text_encoder"):
        info = report.changes["components"][comp]
        module, ref = getattr(loaded.pipe, comp), getattr(base.pipe, comp)
        keep = variant.options.keep_modules
        assert info["kept_modules"] == [n for n in linears(ref) if matches(comp, n, keep)]
        assert info["quantized_in_place"] == 0 and info["quantized_by_loader"] == len(info["quantized_modules"]) > 0
        for n in info["quantized_modules"]:
            assert isinstance(module.get_submodule(n), cls), n
        for n in info["kept_modules"]:
            assert type(module.get_submodule(n)) is torch.nn.Linear and module.get_submodule(n).weight.dtype == torch.bfloat16
    assert run_edit(loaded, [_image()], "make it red", GEN_CFG, 1, Nvml(enabled=False), 0.01).output_finite


def test_cpu_packing_is_kept_only_for_layers_bitsandbytes_can_repack() -> None:
    """bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first forward and
    fails on layers narrower than its blocks ("shape '[288, 0]' is invalid"); such layers keep the
    generic kernel, which computes the same NF4 product."""
    import bitsandbytes.functional as bnbf

    from qie_bench.variants.quantize import guard_cpu_packing, to_nf4

    narrow = to_nf4(torch.nn.Linear(48, 96), torch.float32, double_quant=False)  # in 48 < block 64
    wide = to_nf4(torch.nn.Linear(128, 64), torch.float32, double_quant=False)
    for layer in (narrow, wide):
        layer.support_avx512bf16_for_cpu = True  # as on a CPU with AVX512-BF16
        guard_cpu_packing(layer)
    assert narrow.support_avx512bf16_for_cpu is False
    assert wide.support_avx512bf16_for_cpu is True
    x = torch.randn(3, 48)
    ref = x @ bnbf.dequantize_4bit(narrow.weight.data, narrow.weight.quant_state).T
    assert torch.allclose(narrow(x) - (narrow.bias if narrow.bias is not None else 0), ref, atol=1e-4)

"""fp8 and gguf variants on the tiny pipeline, built exactly as the worker builds them.

Bytes are checked against the block formats by hand: GGUF Q8_0 holds 32 weights in 34 bytes
(32 int8 + one fp16 scale), Q4_0 in 18 (16 bytes of nibbles + the scale), so quantized layers
hold 17/32 and 9/32 of their bf16 bytes; FP8 storage holds one byte per weight, half of bf16.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qie_bench.errors import UserInputError
from qie_bench.models import module_weight_bytes
from qie_bench.suite import load_suite
from qie_bench.variants.report import VariantReport

from test_variants_quant import GEN, build, edit_twice

gguf = pytest.importorskip("gguf")


def _linear_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and n}


@pytest.mark.parametrize("quant_type,block_bytes", [("Q8_0", 34), ("Q4_0", 18)])
def test_gguf_bytes_follow_the_block_format(quant_type: str, block_bytes: int) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear, dequantize_gguf_tensor

    from qie_bench.models import load_model
    from qie_bench.variants import VARIANTS
    from qie_bench.suite import VariantEntry
    from test_variants_quant import TINY

    variant = VARIANTS.validate_entry(VariantEntry(name="g", kind="gguf", quant_type=quant_type), "variants ('g')")
    loaded = load_model(TINY, variant.load_plan("tiny"))
    originals = _linear_weights(loaded.pipe.transformer)
    report = variant.apply(loaded)
    t = loaded.pipe.transformer
    layers = {n: m for n, m in t.named_modules() if isinstance(m, GGUFLinear)}
    # Every Linear whose rows hold whole 32-weight blocks is quantized; the others (rows of 48
    # or 16 in the tiny model) are kept and recorded.
    expected = {n for n, w in originals.items() if w.shape[1] % 32 == 0}
    assert set(layers) == expected and expected
    logical = sum(originals[n].numel() for n in layers)
    held = sum(m.weight.numel() * m.weight.element_size() for m in layers.values())
    assert held == logical // 32 * block_bytes
    assert held / (2 * logical) == block_bytes / 64  # Q8_0: 0.531 of bf16, Q4_0: 0.281
    # Dequantized weights are within the rounding error of the block format (plus bf16's
    # relative 2^-8): Q8_0 rounds to steps of absmax/127, so at most half a step; Q4_0 has the 16
    # levels -8..7 of d = max/-8, so the side opposite the largest weight clips at 7|d|: one step.
    for n, m in layers.items():
        w = originals[n].float().reshape(-1, 32)
        back = dequantize_gguf_tensor(m.weight).float().reshape(-1, 32)
        absmax = w.abs().amax(dim=1, keepdim=True)
        bound = absmax / 127 * 0.5 if quant_type == "Q8_0" else absmax / 8
        assert ((back - w).abs() <= bound + (w.abs() + absmax) * 2**-8 + 1e-6).all(), n
    fmt = report.formats["transformer"]
    assert (fmt.quantization, fmt.quantized_params, fmt.compute_dtype) == (quant_type.lower(), logical, "bf16")
    assert report.transformer_blocks == 2 and report.unmodelled_structure is None
    assert report.changes["quantized"] == len(layers)
    assert VariantReport.model_validate(report.model_dump(mode="json")) == report  # what the worker records
    first, same = edit_twice(loaded, GEN)
    assert same


def test_fp8_layerwise_storage_halves_the_cast_weights() -> None:
    variant, loaded, report = build(kind="fp8", method="layerwise")
    t = loaded.pipe.transformer
    fp8 = [(n, p) for n, p in t.named_parameters() if p.dtype == torch.float8_e4m3fn]
    kept = [n for n, p in t.named_parameters() if p.dtype != torch.float8_e4m3fn]
    # diffusers' default skip patterns ('pos_embed', 'patch_embed', 'norm', '^proj_in$',
    # '^proj_out$') and this model's own ('pos_embed', 'norm') keep those layers 16-bit.
    assert fp8 and all("norm" in n or n.startswith("proj_out.") for n in kept)
    assert not any("norm" in n or n.startswith("proj_out.") for n, _ in fp8)
    n_fp8 = sum(p.numel() for _, p in fp8)
    kept_bytes = sum(p.numel() * p.element_size() for n, p in t.named_parameters() if n in kept)
    assert module_weight_bytes(t)[0] == n_fp8 * 1 + kept_bytes + sum(b.numel() * b.element_size() for b in t.buffers())
    fmt = report.formats["transformer"]
    assert (fmt.base_dtype, fmt.quantization, fmt.quantized_params, fmt.compute_dtype) == ("bf16", "fp8", n_fp8, "bf16")
    assert report.formats["text_encoder"].quantization is None
    edit_twice(loaded, GEN)


def test_gguf_composes_after_depth_pruning() -> None:
    _v, loaded, report = build(kind="compose", steps=[{"kind": "pruned", "blocks_to_remove": [0]}, {"kind": "gguf", "quant_type": "Q8_0"}])
    assert report.transformer_blocks == 1 and len(loaded.pipe.transformer.transformer_blocks) == 1
    assert report.formats["transformer"].quantization == "q8_0"
    edit_twice(loaded, GEN)


def _suite(tmp_path: Path, write_suite, entry: str, extra: str = "") -> Path:
    path = write_suite({"fp32": "fp32"}, extra=f"\n[[variants]]\nname = \"x\"\n{entry}\n")
    if extra:
        path.write_text(path.read_text().replace("[measurement]", "[measurement]\n" + extra))
    return path


@pytest.mark.parametrize("entry,extra,words", [
    ('kind = "fp8"\nmethod = "dynamic"', "", "compute capability 8.9"),
    ('kind = "fp8"\nmethod = "dynamic"', "", "cannot run on the CPU"),
    ('kind = "compose"\nsteps = [{kind = "pruned", blocks = 1}, {kind = "fp8", method = "dynamic"}]', "", "steps[1].method"),
    ('kind = "gguf"', "", "give quant_type"),
    ('kind = "gguf"\nquant_type = "Q4_K"', "", "quant_type"),
    ('kind = "gguf"\nfile = "missing.gguf"', "", "not found"),
    ('kind = "gguf"\nquant_type = "Q8_0"\ncomponents = ["text_encoder"]', "", "components"),
    ('kind = "fp8"\nmethod = "layerwise"\nkeep_modules = ["img_in"]', "", "keep_modules"),
])
def test_bad_fp8_gguf_options_fail_when_the_suite_is_read(tmp_path: Path, write_suite, entry: str, extra: str, words: str) -> None:
    with pytest.raises(UserInputError) as err:
        load_suite(_suite(tmp_path, write_suite, entry, extra))
    assert words in str(err.value) and "variants[1] ('x')" in str(err.value)


def test_torchao_fp8_refused_with_group_offload_on_a_gpu_suite(tmp_path: Path, write_suite) -> None:
    path = _suite(tmp_path, write_suite, 'kind = "fp8"\nmethod = "dynamic"', 'offload = "group"')
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "cuda"'))
    with pytest.raises(UserInputError, match="do not mix"):
        load_suite(path)


def test_worker_refuses_torchao_fp8_on_a_cpu_before_loading() -> None:
    from qie_bench.suite import VariantEntry
    from qie_bench.variants import VARIANTS

    variant = VARIANTS.validate_entry(VariantEntry(name="f", kind="fp8", method="dynamic"), "variants ('f')")
    with pytest.raises(UserInputError, match="capability 8.9"):
        variant.check_device(torch.device("cpu"), "none")


def test_worker_records_the_typed_report_and_floors_read_it(tmp_path: Path, write_suite) -> None:
    import json

    from qie_bench.cli import main
    from qie_bench.report.data import build_report_data

    suite = write_suite({"fp32": "fp32"}, select=["txt-price-mug"], repeats=1,
                        extra='\n[[variants]]\nname = "q8"\nkind = "gguf"\nquant_type = "Q8_0"\ncompute_dtype = "fp32"\n')
    run = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(run), "--no-progress"]) == 0
    build = json.loads((run / "variants" / "q8.build.json").read_text())
    report = VariantReport.model_validate(build["report"])
    fmt = report.formats["transformer"]
    assert (fmt.base_dtype, fmt.quantization, fmt.compute_dtype) == ("fp32", "q8_0", "fp32")
    assert fmt.quantized_params == build["changes"]["quantized_params"] > 0
    assert report.offload == "none" and report.transformer_blocks == 2
    data = build_report_data([run])
    col = next(c for c in data.columns if c.variant == "q8")
    assert col.floors is not None and not col.floors.flags
    # The weights floor counts the quantized weights at 34/32 bytes and the rest at 4.
    t_params = build["components"]["transformer"]["params"]
    assert col.floors.formats["transformer"].bytes(t_params) == fmt.quantized_params * 34 / 32 + (t_params - fmt.quantized_params) * 4


def test_fp8_torchao_weight_only_runs_on_a_cpu() -> None:
    # torchao 0.18's Float8Tensor: float8_e4m3fn weights plus one fp32 scale per output row, so a
    # Linear(in, out) holds out * in + 4 * out bytes (and its bias as loaded).
    _v, loaded, report = build(kind="fp8", method="weight-only")
    t = loaded.pipe.transformer
    layers = {n: m for n, m in t.named_modules() if isinstance(m, torch.nn.Linear) and type(m.weight).__name__ == "Float8Tensor"}
    assert layers
    for n, m in layers.items():
        bias = m.bias.numel() * m.bias.element_size() if m.bias is not None else 0
        assert module_weight_bytes(m)[0] == m.out_features * m.in_features + 4 * m.out_features + bias, n
    fmt = report.formats["transformer"]
    assert (fmt.quantization, fmt.compute_dtype) == ("fp8", "bf16")
    assert fmt.quantized_params == sum(m.out_features * m.in_features + (m.out_features if m.bias is not None else 0)
                                       for m in layers.values())
    edit_twice(loaded, GEN)


@pytest.mark.parametrize("quant_type", ["Q8_0", "Q4_0"])
def test_threaded_quantization_is_byte_for_byte_the_gguf_packages(quant_type: str) -> None:
    # Rows split over threads must give exactly what gguf.quants.quantize gives for the whole
    # tensor (a 3-D tensor too, whose rows are the flattened leading axes); 1 worker is the plain call.
    import gguf
    import numpy as np

    from qie_bench.variants.gguf import quantize_rows

    qtype = gguf.GGMLQuantizationType[quant_type]
    rng = np.random.default_rng(0)
    for shape in [(1037, 4096), (3, 700, 2048)]:
        a = rng.standard_normal(shape).astype(np.float32)
        want = gguf.quants.quantize(a, qtype)
        got = quantize_rows(a, qtype, workers=4)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.array_equal(got, want)

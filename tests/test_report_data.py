"""Report internals that need no run: weight formats from build records, the Pareto front,
change colouring, column hiding, thumbnails."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from qie_bench.report import floors as F
from qie_bench.report.data import rescale_formats, weight_formats
from qie_bench.report.gallery import thumbnail_uri
from qie_bench.report.plots import pareto_front
from qie_bench.report.tables import Cell, Table, change_cell, drop_empty_columns

RELEASED = F.ModelSize.released()


def test_dtype_variant_formats() -> None:
    build = {"kind": "dtype", "options": {"dtype": "bf16"},
             "changes": {"component_dtypes": {"transformer": "bfloat16", "text_encoder": "bfloat16", "vae": "float32"}}}
    f = weight_formats(build, RELEASED)
    assert f["transformer"].label == "bf16" and f["vae"].label == "fp32"
    assert f["transformer"].bytes(RELEASED.params["transformer"]) == 2 * F.RELEASED_TRANSFORMER_PARAMS


def test_nf4_variant_counts_kept_layers_at_16_bit() -> None:
    # What variants/quantize.py records: the count of quantized weights per component; the rest
    # (modulation layers, embeddings, norms) stays bf16.
    q = 13_589_544_960
    build = {"kind": "nf4", "options": {"components": ["transformer"]},
             "changes": {"components": {"transformer": {"quantized": 840, "quantized_params": q}}},
             "components": {"transformer": {"weights_bytes": 20 * 2**30, "params": 10_000}}}
    f = weight_formats(build, RELEASED)
    t = f["transformer"]
    assert t.quant is not None and t.quant.name == "nf4" and t.quantized_params == q
    assert t.bytes(F.RELEASED_TRANSFORMER_PARAMS) == q * 0.5 + (F.RELEASED_TRANSFORMER_PARAMS - q) * 2
    assert f["text_encoder"].quant is None  # not listed: left as loaded


def test_int8_backends_compute_rates() -> None:
    bnb = weight_formats({"kind": "int8", "options": {"backend": "bnb", "components": ["transformer"]},
                          "changes": {"components": {"transformer": {"quantized_params": 100}}}}, RELEASED)
    ao = weight_formats({"kind": "int8", "options": {"backend": "torchao", "components": ["transformer"]},
                         "changes": {"components": {"transformer": {"quantized_params": 100}}}}, RELEASED)
    assert "int8" in bnb["transformer"].computes  # LLM.int8 multiplies in int8
    assert ao["transformer"].computes == ("bf16", "bf16")  # weight-only: dequantized to bf16


def test_unknown_kind_falls_back_to_bytes_per_param() -> None:
    # A build record from before typed reports, of a kind that recorded no dtypes: the measured
    # bytes per parameter (the worker records both) decide.
    n = F.RELEASED_TRANSFORMER_PARAMS
    build = {"kind": "mystery", "components": {"transformer": {"weights_bytes": n * 0.53, "params": n}}}
    assert weight_formats(build, RELEASED)["transformer"].bytes(n) == n * 0.5


def test_quantized_share_is_kept_when_projected() -> None:
    tiny = F.ModelSize(RELEASED.transformer, {"transformer": 1000, "text_encoder": 10, "vae": 10})
    f = {"transformer": F.WeightFormat(F.PRECISIONS["bf16"], F.PRECISIONS["nf4"], 600)}
    out = rescale_formats(f, tiny, RELEASED)
    assert out["transformer"].quantized_params == round(0.6 * F.RELEASED_TRANSFORMER_PARAMS)


def test_pareto_front() -> None:
    # (memory, quality higher-better): (1, 0.9) and (2, 0.95) are on the front; (3, 0.9) is not
    pts = [(1.0, 0.9), (2.0, 0.95), (3.0, 0.9), (2.0, 0.95)]
    assert pareto_front(pts, higher_is_better=True) == [0, 1, 3]
    assert pareto_front([(1.0, 5.0), (2.0, 1.0), (3.0, 2.0)], higher_is_better=False) == [0, 1]


def test_change_cell_follows_direction() -> None:
    assert change_cell(11.0, 10.0, "s", "lower") == ("+10.0%", "bad")
    assert change_cell(9.0, 10.0, "bytes", "lower") == ("-10.0%", "good")
    assert change_cell(0.95, 0.90, "metric", "higher") == ("+0.05", "good")
    assert change_cell(0.2, 0.1, "rate", "lower") == ("+10.0 pt", "bad")
    assert change_cell(None, 1.0, "s", "lower") == ("", "")


def test_empty_columns_are_hidden_and_named() -> None:
    t = Table("x", "X", ["a", "b", "c", "vram"], [[Cell("1"), Cell("2"), Cell("3"), Cell("—")]], "cap")
    out = drop_empty_columns(t)
    assert out.header == ["a", "b", "c"] and "vram" in out.caption


def test_thumbnails_are_downscaled(tmp_path: Path) -> None:
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.new("RGB", (1024, 768), (10, 200, 30)).save(big)
    Image.new("RGB", (64, 64), (10, 200, 30)).save(small)
    uri = thumbnail_uri(big, 224)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    assert thumbnail_uri(small, 224).startswith("data:image/png;base64,")
    assert thumbnail_uri(tmp_path / "missing.png") is None
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert max(im.size) == 224


def test_compose_depth_pruned_then_nf4() -> None:
    from qie_bench.report.data import sized_for, structure_change

    # variants/compose.py records each step's kind and changes; prune.py records blocks_after.
    build = {"kind": "compose", "options": {"steps": [{"kind": "pruned", "method": "depth"}, {"kind": "nf4"}]},
             "changes": {"steps": [{"kind": "pruned", "changes": {"method": "depth", "blocks_before": 60, "blocks_after": 40}},
                                   {"kind": "nf4", "changes": {"components": {"transformer": {"quantized_params": 9_000_000_000}}}}]}}
    shape, why = structure_change(build, RELEASED.transformer)
    assert why is None and shape.num_layers == 40
    size = sized_for(RELEASED, shape)
    # 20 blocks of 339,831,296 parameters removed: 20,430,401,088 - 6,796,625,920 = 13,633,775,168 (~13.6 B)
    assert size.params["transformer"] == 13_633_775_168
    f = weight_formats(build, size)["transformer"]
    assert f.quant is not None and f.quant.name == "nf4" and f.quantized_params == 9_000_000_000


def test_width_pruning_has_no_floors() -> None:
    from qie_bench.report.data import structure_change

    shape, why = structure_change({"kind": "pruned", "changes": {"method": "width"}}, RELEASED.transformer)
    assert shape is None and "width" in why


def test_no_build_record_means_unknown_format() -> None:
    assert weight_formats(None, RELEASED) is None


# -- typed variant reports (variants/report.py), as the worker records them ---------------------


def _typed(**report) -> dict:
    from qie_bench.variants.report import VariantReport

    return {"kind": "whatever", "options": {}, "changes": {}, "report": VariantReport(**report).model_dump(mode="json")}


def test_typed_report_formats_and_compute_rates() -> None:
    q = 13_589_544_960
    build = _typed(formats={"transformer": {"base_dtype": "bf16", "quantization": "nf4", "quantized_params": q, "compute_dtype": "bf16"},
                            "text_encoder": {"base_dtype": "bf16"}, "vae": {"base_dtype": "fp32"}})
    f = weight_formats(build, RELEASED)
    assert f["transformer"].bytes(F.RELEASED_TRANSFORMER_PARAMS) == q * 0.5 + (F.RELEASED_TRANSFORMER_PARAMS - q) * 2
    assert f["vae"].label == "fp32" and f["text_encoder"].quant is None
    fp8 = weight_formats(_typed(formats={"transformer": {"base_dtype": "bf16", "quantization": "fp8", "quantized_params": 100,
                                                          "compute_dtype": "fp8"}}), RELEASED)["transformer"]
    layerwise = weight_formats(_typed(formats={"transformer": {"base_dtype": "bf16", "quantization": "fp8", "quantized_params": 100,
                                                                "compute_dtype": "bf16"}}), RELEASED)["transformer"]
    assert "fp8" in fp8.computes and layerwise.computes == ("bf16", "bf16")


def test_gguf_block_formats_bytes() -> None:
    # Q8_0: blocks of 32 int8 + one fp16 scale = 34 bytes; Q4_0: 16 bytes of nibbles + scale = 18.
    f = weight_formats(_typed(formats={"transformer": {"base_dtype": "bf16", "quantization": "q4_0", "quantized_params": 3200}}),
                       RELEASED)["transformer"]
    assert f.bytes(3200) == 100 * 18
    assert F.precision("q8_0").bytes_per_param * 32 == 34


def test_distilled_student_floors_use_the_students_blocks() -> None:
    # The smoke suite's 'distilled' variant: a 1-block student of a 2-block tiny teacher. Its
    # weights floor must count 1 block (it was computed for the teacher's 2: "weights 3.1 MiB
    # below its floor 3.5 MiB").
    from qie_bench.report.data import sized_for, structure_change

    for build in (_typed(transformer_blocks=1, formats={"transformer": {"base_dtype": "bf16"}}),
                  {"kind": "distilled", "options": {"method": "student"},  # a build record from before typed reports
                   "changes": {"method": "student", "teacher_layers": 60, "student_layers": 1,
                               "component_dtypes": {"transformer": "bfloat16"}}}):
        shape, why = structure_change(build, RELEASED.transformer)
        assert why is None and shape.num_layers == 1
        size = sized_for(RELEASED, shape)
        per_block = F.transformer_params(RELEASED.transformer).per_block
        assert size.params["transformer"] == F.RELEASED_TRANSFORMER_PARAMS - 59 * per_block


def test_typed_offload_and_unmodelled_structure() -> None:
    from qie_bench.report.data import _offload_mode, structure_change

    assert _offload_mode(_typed(offload="group")) == "sequential"
    assert _offload_mode(_typed(offload="model")) == "model"
    assert _offload_mode(_typed(offload="none", changes={"cpu_offload_hint": "group"})) is None  # option names are not read
    shape, why = structure_change(_typed(unmodelled_structure="width pruning changes the MLP widths"), RELEASED.transformer)
    assert shape is None and "width" in why

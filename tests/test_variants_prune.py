"""The `pruned` variant on the tiny pipeline (4 transformer blocks, 32x32 edits).

Each variant is built in-process as the worker builds it (validate the entry, `load_plan`,
`load_model`, `apply` inside `building_for(suite)`), then: it changed what it claims (block
count, `config.num_layers`, MLP Linear shapes), parameters and `weights_bytes` dropped by the
amount computed by hand from the shapes, an edit runs, is finite and repeats bit-for-bit with the
same seed; a depth-pruned transformer round-trips through save_pretrained/from_pretrained; bad
options are one-line errors naming the key.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import CASES
from PIL import Image

from qie_bench.distill.capture import block_influence, run_cases
from qie_bench.distill.context import BuildContext, building_for
from qie_bench.distill.surgery import evenly_spaced, segment_ends
from qie_bench.errors import UserInputError
from qie_bench.models import load_model, pipeline_weight_bytes
from qie_bench.runner.edit import run_edit
from qie_bench.runner.memory import Nvml
from qie_bench.suite import GenerationConfig, VariantEntry, load_suite
from qie_bench.variants import VARIANTS

LAYERS = 4
SUITE = f"""
schema_version = 1
name = "prune-test"

[model]
source = "tiny"
device = "cpu"

[model.tiny]
reference_area = 1024
condition_area = 784
vae_base_dim = 4
transformer_layers = {LAYERS}

[cases]
path = "{CASES.as_posix()}"
select = ["remove-object", "recolor"]

[generation]
steps = 2
true_cfg_scale = 4.0
width = 32
height = 32

[metrics]
names = ["psnr"]

[[variants]]
name = "fp32"
kind = "dtype"
dtype = "fp32"
"""
GEN = GenerationConfig(steps=1, true_cfg_scale=1.0, width=32, height=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs the tiny model single-threaded (conftest.torch_one_thread)."""


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "prune.toml"
    path.write_text(SUITE)
    return load_suite(path)


@pytest.fixture(scope="module")
def ctx(suite):
    return BuildContext.from_suite(suite)


def _image() -> Image.Image:
    y, x = np.mgrid[0:32, 0:32]
    return Image.fromarray(np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype("uint8"))


def build(suite, ctx, name: str = "p", **options):
    entry = VariantEntry(name=name, kind="pruned", **{"dtype": "fp32", **options})
    variant = VARIANTS.validate_entry(entry, f"variants ('{name}')")
    loaded = load_model(suite.model, variant.load_plan(suite.model.source))
    with building_for(ctx):
        report = variant.apply(loaded)
    return loaded, report


def edit_twice(loaded):
    first = run_edit(loaded, [_image()], "make the sky red", GEN, 7, Nvml(enabled=False), 0.01)
    second = run_edit(loaded, [_image()], "make the sky red", GEN, 7, Nvml(enabled=False), 0.01)
    assert first.output_finite and not first.output_constant
    assert first.image.tobytes() == second.image.tobytes(), "same seed must give the same image"
    return first


def block_params_by_hand(cfg) -> int:
    """Parameters of one QwenImageTransformerBlock, from the config's sizes."""
    d = cfg.num_attention_heads * cfg.attention_head_dim
    mod = 2 * (d * 6 * d + 6 * d)  # img_mod, txt_mod: Linear(d, 6d)
    attn = 8 * (d * d + d)  # to_q/k/v, add_q/k/v_proj, to_out.0, to_add_out
    qk_norms = 4 * cfg.attention_head_dim  # RMSNorm weights of q, k, added q, added k
    mlps = 2 * ((d * 4 * d + 4 * d) + (4 * d * d + d))  # img_mlp, txt_mlp: d -> 4d -> d
    return mod + attn + qk_norms + mlps


def transformer_sizes(loaded) -> dict[str, int]:
    return pipeline_weight_bytes(loaded.pipe)["transformer"]


@pytest.fixture(scope="module")
def base(suite):
    from qie_bench.models import LoadPlan

    return load_model(suite.model, LoadPlan(dtype=torch.float32))


# -- depth -----------------------------------------------------------------------------------


def test_depth_named_blocks_shrink_by_whole_blocks(suite, ctx, base):
    loaded, report = build(suite, ctx, blocks_to_remove=[1, 2])
    tr = loaded.pipe.transformer
    assert len(tr.transformer_blocks) == 2 and tr.config.num_layers == 2
    assert report.changes["removed_blocks"] == [1, 2] and report.changes["kept_blocks"] == [0, 3]
    per_block = block_params_by_hand(tr.config)
    assert report.changes["params_per_block"] == per_block
    before, after = transformer_sizes(base), transformer_sizes(loaded)
    assert before["params"] - after["params"] == 2 * per_block
    assert before["weights_bytes"] - after["weights_bytes"] == 2 * per_block * 4  # fp32
    # the kept blocks are the base's blocks 0 and 3, unchanged
    for new, old in ((0, 0), (1, 3)):
        a, b = tr.transformer_blocks[new].state_dict(), base.pipe.transformer.transformer_blocks[old].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    edit_twice(loaded)


def test_depth_score_removes_the_least_influential_blocks(suite, ctx, isolated_variant_cache):
    loaded, report = build(suite, ctx, blocks=2, calibration_cases=2)
    ch = report.changes
    scores = ch["block_influence"]["image"]
    assert len(scores) == LAYERS and all(0.0 < s < 2.0 for s in scores)
    assert ch["block_influence"]["cases"] == [c.id for c in ctx.case_set.cases[:2]]
    # 2 cases x 2 steps x 2 CFG branches
    assert ch["block_influence"]["calls"] == 8
    assert ch["removed_blocks"] == sorted(sorted(range(LAYERS), key=lambda i: scores[i])[:2])
    assert len(loaded.pipe.transformer.transformer_blocks) == 2
    assert ch["score_cache"] == "miss"
    # the score is cached per base, cases and generation: a second build reuses it
    _, again = build(suite, ctx, blocks=1, calibration_cases=2)
    assert again.changes["score_cache"] == "hit"
    assert again.changes["block_influence"]["image"] == ch["block_influence"]["image"]
    edit_twice(loaded)


def test_block_influence_is_cosine_of_block_input_and_output(suite, ctx, base):
    """The score recomputed by hand from one recorded transformer call."""
    loaded = copy.deepcopy(base)
    case = ctx.case_set.cases[0]
    gen = GenerationConfig(steps=1, true_cfg_scale=1.0, width=32, height=32)
    scores = block_influence(loaded, [case], gen)
    calls, _ = run_cases(loaded, [case], gen, record_calls=True)
    assert scores.calls == 1 and len(calls) == 1
    tr = loaded.pipe.transformer
    seen = []
    hooks = [b.register_forward_hook(lambda m, a, kw, out: seen.append((kw["hidden_states"], out[1])), with_kwargs=True)
             for b in tr.transformer_blocks]
    with torch.no_grad():
        tr(**calls[0].inputs, return_dict=False)
    for h in hooks:
        h.remove()
    by_hand = [1 - float(torch.nn.functional.cosine_similarity(i, o, dim=-1).mean()) for i, o in seen]
    assert scores.image == pytest.approx(by_hand, rel=1e-5)


def test_depth_uniform_removes_evenly_spaced_blocks(suite, ctx):
    loaded, report = build(suite, ctx, blocks=2, importance="uniform")
    assert report.changes["kept_blocks"] == evenly_spaced(LAYERS, 2) == [0, 3]
    assert "block_influence" not in report.changes
    assert loaded.pipe.transformer.config.num_layers == 2


def test_depth_pruned_round_trips_through_save_pretrained(suite, ctx, tmp_path):
    from diffusers import QwenImageTransformer2DModel

    loaded, _ = build(suite, ctx, blocks_to_remove=[0, 2])
    first = edit_twice(loaded)
    loaded.pipe.transformer.save_pretrained(tmp_path / "t")
    reloaded = QwenImageTransformer2DModel.from_pretrained(tmp_path / "t", torch_dtype=torch.float32)
    assert reloaded.config.num_layers == 2 and len(reloaded.transformer_blocks) == 2
    loaded.pipe.transformer = reloaded.eval().requires_grad_(False)
    second = edit_twice(loaded)
    assert first.image.tobytes() == second.image.tobytes()


def test_depth_recovery_lowers_error_against_the_unpruned_model(suite, ctx):
    loaded, report = build(suite, ctx, blocks_to_remove=[1, 2], recovery_steps=20,
                           recovery={"batch": 2, "sampled_timesteps": 1})
    rec = report.changes["recovery"]
    assert rec["errors"]["held_out_mse_after"] < rec["errors"]["held_out_mse_before"]
    assert rec["cache"] == "miss (stored)"
    assert next(loaded.pipe.transformer.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.pipe.transformer.parameters())
    edit_twice(loaded)
    # a second build loads the recovered weights from the cache
    again, report2 = build(suite, ctx, blocks_to_remove=[1, 2], recovery_steps=20,
                           recovery={"batch": 2, "sampled_timesteps": 1})
    assert report2.changes["recovery"]["cache"] == "hit"
    a, b = loaded.pipe.transformer.state_dict(), again.pipe.transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_segment_ends_map_student_blocks_to_the_end_of_what_they_replace():
    assert segment_ends([0, 3], 4) == [2, 3]
    assert segment_ends([0, 2, 5], 6) == [1, 4, 5]
    assert segment_ends([1], 2) == [1]


# -- width -----------------------------------------------------------------------------------


def test_width_prunes_mlp_hidden_channels_only(suite, ctx, base):
    loaded, report = build(suite, ctx, method="width", pruning_ratio=0.25)
    tr, ref = loaded.pipe.transformer, base.pipe.transformer
    d = tr.config.num_attention_heads * tr.config.attention_head_dim
    hidden, kept = 4 * d, 4 * d - round(0.25 * 4 * d)
    for block in tr.transformer_blocks:
        for ff in (block.img_mlp, block.txt_mlp):
            assert (ff.net[0].proj.in_features, ff.net[0].proj.out_features) == (d, kept)
            assert (ff.net[2].in_features, ff.net[2].out_features) == (kept, d)
            assert ff.net[0].proj.bias.shape == (kept,)
    # every other Linear keeps its shape
    shapes = {n: m.weight.shape for n, m in tr.named_modules() if isinstance(m, torch.nn.Linear) and "_mlp." not in n}
    ref_shapes = {n: m.weight.shape for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear) and "_mlp." not in n}
    assert shapes == ref_shapes
    removed = hidden - kept
    n_mlps = 2 * LAYERS
    before, after = transformer_sizes(base), transformer_sizes(loaded)
    assert before["params"] - after["params"] == n_mlps * removed * (2 * d + 1)
    assert before["weights_bytes"] - after["weights_bytes"] == 4 * n_mlps * removed * (2 * d + 1)
    ch = report.changes
    assert ch["mlp_hidden_before"] == [hidden] and ch["mlp_hidden_after"] == [kept]
    assert ch["pruned_layers"] == n_mlps and ch["removed_channels_total"] == n_mlps * removed
    # the last block's txt_mlp (whose output the model discards) is pruned too
    assert len(ch["removed_channels"][f"transformer_blocks.{LAYERS - 1}.txt_mlp"]) == removed
    # L1 importance: the removed channels are those with the smallest L1 norm over the group
    name = "transformer_blocks.0.img_mlp"
    ff = ref.transformer_blocks[0].img_mlp
    l1 = (ff.net[0].proj.weight.abs().sum(1) + ff.net[0].proj.bias.abs() + ff.net[2].weight.abs().sum(0))
    smallest = set(torch.argsort(l1)[:removed].tolist())
    overlap = len(smallest & set(ch["removed_channels"][name])) / removed
    assert overlap > 0.8, overlap  # torch-pruning normalises per layer before ranking; nearly the same set
    edit_twice(loaded)


def test_width_one_stream(suite, ctx):
    loaded, report = build(suite, ctx, method="width", pruning_ratio=0.4, mlps=["img"], round_to=8)
    block = loaded.pipe.transformer.transformer_blocks[0]
    assert block.img_mlp.net[0].proj.out_features % 8 == 0 and block.img_mlp.net[0].proj.out_features < 192
    assert block.txt_mlp.net[0].proj.out_features == 192
    assert report.changes["pruned_layers"] == LAYERS


# -- bad configs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"method": "width", "pruning_ratio": 0.5}, "pruning_ratio", "0.4"),
        ({"method": "width", "pruning_ratio": 0.0}, "pruning_ratio", "greater than 0"),
        ({"method": "width"}, "pruning_ratio", "needs pruning_ratio"),
        ({"method": "sideways", "blocks": 1}, "method", "'sideways' is not allowed"),
        ({}, "blocks", "needs blocks"),
        ({"blocks": 0}, "blocks", "greater than or equal to 1"),
        ({"blocks": 2, "blocks_to_remove": [1]}, "blocks_to_remove", "not both"),
        ({"blocks_to_remove": [1, 1]}, "blocks_to_remove", "twice"),
        ({"blocks": 2, "pruning_ratio": 0.2}, "pruning_ratio", "only read when method = 'width'"),
        ({"method": "width", "pruning_ratio": 0.2, "blocks": 2}, "blocks", "only read when method = 'depth'"),
        ({"blocks": 2, "recovery": {"steps": 3}, "recovery_steps": 3}, "recovery", "recovery_steps"),
        ({"blocks": 2, "recovery": {"lr": 0.1}}, "recovery", "recovery_steps > 0"),
        ({"blocks": 2, "blockz": 1}, "blockz", "unknown option"),
    ],
)
def test_bad_options_name_the_key(tmp_path, options, key, words):
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in options.items())
    path = tmp_path / "bad.toml"
    path.write_text(SUITE + f'\n[[variants]]\nname = "bad"\nkind = "pruned"\n{lines}\n')
    with pytest.raises(UserInputError) as err:
        load_suite(path)
    msg = str(err.value)
    assert f"variants[1] ('bad').{key}" in msg and words in msg, msg
    assert "\n" not in msg


def _toml(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"blocks": LAYERS, "importance": "uniform"}, "blocks", f"the transformer has {LAYERS}"),
        ({"blocks": 9}, "blocks", "cannot remove 9 blocks"),
        ({"blocks_to_remove": [0, 1, 2, 3]}, "blocks_to_remove", "all 4 blocks"),
        ({"blocks_to_remove": [7]}, "blocks_to_remove", "block 7 does not exist"),
    ],
)
def test_pruning_more_blocks_than_exist_names_the_key(suite, ctx, options, key, words):
    with pytest.raises(UserInputError) as err:
        build(suite, ctx, name="big", **options)
    assert f"variants ('big').{key}" in str(err.value) and words in str(err.value), str(err.value)


def test_score_outside_a_suite_says_what_it_needs(suite, monkeypatch):
    variant = VARIANTS.validate_entry(VariantEntry(name="s", kind="pruned", blocks=1, dtype="fp32"), "variants ('s')")
    loaded = load_model(suite.model, variant.load_plan("tiny"))
    with pytest.raises(UserInputError) as err:
        variant.apply(loaded)
    assert "variants ('s').importance" in str(err.value) and "case set" in str(err.value)



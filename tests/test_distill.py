"""Distillation (`qie-bench distill`, the `distilled` variant) on the tiny pipeline.

A 2-block student of the 4-block tiny transformer is trained by the real command on the suite's
cases; its error against the teacher on held-out cases must be lower than the same student's
before training, measured both by the command and independently here. The checkpoint loads as a
`distilled` variant (verified by sha256), `train_if_missing` trains once and then hits the cache,
LoRAs load through diffusers (when peft is installed) and change the output, and bad options are
one-line errors naming the key.
"""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_variants_prune import LAYERS, SUITE, block_params_by_hand

from qie_bench.cli import main as cli_main
from qie_bench.distill.capture import run_cases
from qie_bench.distill.checkpoint import META_NAME, file_sha256, load_student
from qie_bench.distill.context import BuildContext, building_for
from qie_bench.distill.surgery import student_from_teacher
from qie_bench.distill.train import prediction_error, split_cases, teacher_targets
from qie_bench.errors import UserInputError
from qie_bench.models import LoadPlan, load_model, pipeline_weight_bytes
from qie_bench.runner.edit import run_edit
from qie_bench.runner.memory import Nvml
from qie_bench.suite import GenerationConfig, VariantEntry, load_suite
from qie_bench.variants import VARIANTS
from qie_bench.variants.distill import LIGHTNING_SCHEDULER, SchedulerOverrides, scheduler_config

GEN = GenerationConfig(steps=1, true_cfg_scale=1.0, width=32, height=32)
STUDENT = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs the tiny model single-threaded (conftest.torch_one_thread)."""


@pytest.fixture(scope="module")
def suite_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "distill.toml"
    path.write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def suite(suite_path):
    return load_suite(suite_path)


@pytest.fixture(scope="module")
def ctx(suite):
    return BuildContext.from_suite(suite)


@pytest.fixture(scope="module")
def base(suite):
    return load_model(suite.model, LoadPlan(dtype=torch.float32))


@pytest.fixture(scope="module")
def distilled(suite_path, tmp_path_factory):
    """`qie-bench distill SUITE --student-layers 2 --out DIR` run for real: (dir, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("student") / "s2"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli_main(["distill", str(suite_path), "--student-layers", str(STUDENT), "--out", str(out),
                         "--steps", "60", "--training", '{"batch": 2}'])
    assert code == 0
    return out, buf.getvalue()


def _image() -> Image.Image:
    y, x = np.mgrid[0:32, 0:32]
    return Image.fromarray(np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype("uint8"))


def edit_twice(loaded, gen: GenerationConfig = GEN):
    first = run_edit(loaded, [_image()], "make the sky red", gen, 7, Nvml(enabled=False), 0.01)
    second = run_edit(loaded, [_image()], "make the sky red", gen, 7, Nvml(enabled=False), 0.01)
    assert first.output_finite and not first.output_constant
    assert first.image.tobytes() == second.image.tobytes(), "same seed must give the same image"
    return first


def build(suite, ctx, name: str = "d", **options):
    entry = VariantEntry(name=name, kind="distilled", **{"dtype": "fp32", **options})
    variant = VARIANTS.validate_entry(entry, f"variants ('{name}')")
    loaded = load_model(suite.model, variant.load_plan(suite.model.source))
    with building_for(ctx):
        report = variant.apply(loaded)
    return loaded, report


# -- student: the command, the checkpoint, the variant ----------------------------------------


def test_distill_command_reports_lower_held_out_error(distilled):
    out, stdout = distilled
    meta = json.loads((out / META_NAME).read_text())
    e = meta["errors"]
    assert e["held_out_mse_after"] < e["held_out_mse_before"]
    m = re.search(r"before ([0-9.e-]+) -> after ([0-9.e-]+)", stdout)
    assert m, stdout
    assert float(m.group(1)) == pytest.approx(e["held_out_mse_before"], rel=1e-4)
    assert float(m.group(2)) == pytest.approx(e["held_out_mse_after"], rel=1e-4)
    assert meta["student"]["kept_blocks"] == [0, 3] and meta["student"]["layers"] == STUDENT
    assert meta["teacher"]["layers"] == LAYERS
    assert set(meta["data"]["held_out_cases"]).isdisjoint(meta["data"]["train_cases"])
    for name, digest in meta["files"].items():
        assert file_sha256(out / name) == digest
    assert meta["seconds"]["total"] < 60


def test_trained_student_beats_untrained_on_held_out_cases(distilled, suite, ctx, base):
    """Measured here, independently of the command's own figures: fresh recordings of the
    held-out cases (other sampled timesteps), the teacher's predictions, both students."""
    out, _ = distilled
    meta = json.loads((out / META_NAME).read_text())
    teacher = base.pipe.transformer
    _train, held = split_cases(list(ctx.case_set.cases), 0.25)
    assert [c.id for c in held] == meta["data"]["held_out_cases"]
    calls, _ = run_cases(base, held, suite.generation, record_calls=True, sampled_timesteps=3, seed=123)
    targets = teacher_targets(teacher, calls, [])
    trained, _ = load_student(out, teacher, torch.float32, torch.device("cpu"), "here")
    untrained = student_from_teacher(teacher, meta["student"]["kept_blocks"])
    err_trained = prediction_error(trained, calls, targets)["mse"]
    err_untrained = prediction_error(untrained, calls, targets)["mse"]
    assert err_trained < 0.8 * err_untrained, (err_trained, err_untrained)


def test_student_checkpoint_as_variant(distilled, suite, ctx, base):
    out, _ = distilled
    loaded, report = build(suite, ctx, method="student", checkpoint=str(out))
    tr = loaded.pipe.transformer
    assert len(tr.transformer_blocks) == STUDENT and tr.config.num_layers == STUDENT
    per_block = block_params_by_hand(tr.config)
    before = pipeline_weight_bytes(base.pipe)["transformer"]
    after = pipeline_weight_bytes(loaded.pipe)["transformer"]
    assert before["params"] - after["params"] == (LAYERS - STUDENT) * per_block
    assert before["weights_bytes"] - after["weights_bytes"] == 4 * (LAYERS - STUDENT) * per_block
    ch = report.changes
    assert ch["status"] == "checkpoint" and ch["student_layers"] == STUDENT and ch["teacher_layers"] == LAYERS
    assert ch["errors"]["held_out_mse_after"] < ch["errors"]["held_out_mse_before"]
    assert report.generation_overrides.as_update() == {}
    edit_twice(loaded)


def test_tampered_checkpoint_is_refused(distilled, suite, ctx, tmp_path):
    out, _ = distilled
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    weights = bad / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserInputError) as err:
        build(suite, ctx, name="t", method="student", checkpoint=str(bad))
    assert "variants ('t').checkpoint" in str(err.value) and "sha256" in str(err.value)


def test_checkpoint_of_another_architecture_is_refused(distilled, suite, ctx, tmp_path):
    out, _ = distilled
    other = tmp_path / "other"
    shutil.copytree(out, other)
    meta = json.loads((other / META_NAME).read_text())
    meta["teacher"]["config"]["joint_attention_dim"] = 3584
    (other / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(UserInputError) as err:
        build(suite, ctx, name="o", method="student", checkpoint=str(other))
    assert "different transformer" in str(err.value) and "joint_attention_dim" in str(err.value)


def test_external_transformer_folder_loads_as_student(suite, ctx, base, tmp_path):
    """A plain save_pretrained folder (here: a depth-pruned copy of the base) is accepted, with
    the sha256 of its files recorded, but marked unverified."""
    import copy

    from qie_bench.distill.surgery import keep_blocks

    pruned = copy.deepcopy(base.pipe.transformer)
    keep_blocks(pruned, [0, 3])
    pruned.save_pretrained(tmp_path / "ext")
    loaded, report = build(suite, ctx, method="student", checkpoint=str(tmp_path / "ext"))
    ch = report.changes
    assert ch["status"] == "external checkpoint (unverified)" and ch["student_layers"] == 2
    assert ch["files"]["diffusion_pytorch_model.safetensors"] == file_sha256(tmp_path / "ext" / "diffusion_pytorch_model.safetensors")
    a, b = loaded.pipe.transformer.state_dict(), pruned.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_if_missing_trains_once_then_uses_the_cache(suite, ctx, tmp_path):
    options = {"method": "student", "train_if_missing": True, "student_layers": 1,
                   "training": {"steps": 8, "batch": 1, "max_cases": 3, "sampled_timesteps": 0}, "steps": 1}
    loaded, report = build(suite, ctx, **options)
    assert report.changes["status"] == "trained (cached)"
    assert loaded.pipe.transformer.config.num_layers == 1
    assert report.generation_overrides.as_update() == {"steps": 1}
    again, report2 = build(suite, ctx, **options)
    assert report2.changes["status"] == "cache hit"
    a, b = loaded.pipe.transformer.state_dict(), again.pipe.transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # with a checkpoint folder that does not exist yet, the student is trained into it
    ckpt = tmp_path / "made-here"
    _, report3 = build(suite, ctx, checkpoint=str(ckpt), **options)
    assert report3.changes["status"] == "trained (saved to checkpoint)" and (ckpt / META_NAME).is_file()
    edit_twice(again)


def test_too_many_student_layers_names_the_key(suite, ctx, suite_path, tmp_path, capsys):
    with pytest.raises(UserInputError) as err:
        build(suite, ctx, name="big", method="student", train_if_missing=True, student_layers=LAYERS)
    assert "variants ('big').student_layers" in str(err.value) and f"teacher's {LAYERS} blocks" in str(err.value)
    code = cli_main(["distill", str(suite_path), "--student-layers", str(LAYERS), "--out", str(tmp_path / "x")])
    assert code == 2 and "--student-layers" in capsys.readouterr().err


# -- LoRA ------------------------------------------------------------------------------------


def make_lora(path, transformer, rank: int = 2, seed: int = 0) -> None:
    """A LoRA for the tiny transformer's attention projections, in diffusers' key format."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, block in enumerate(transformer.transformer_blocks):
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            lin = block.attn.get_submodule(name)
            key = f"transformer.transformer_blocks.{i}.attn.{name}"
            sd[f"{key}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.3
            sd[f"{key}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.3
    save_file(sd, str(path))


def _peft_backend() -> bool:
    from diffusers.utils import USE_PEFT_BACKEND

    return bool(USE_PEFT_BACKEND)


def test_lora_without_peft_fails_clearly(suite, ctx, base, tmp_path):
    if _peft_backend():
        pytest.skip("peft is installed")
    lora = tmp_path / "l.safetensors"
    make_lora(lora, base.pipe.transformer)
    with pytest.raises(UserInputError) as err:
        build(suite, ctx, name="l", method="lora", lora=str(lora), steps=4)
    assert "variants ('l').method" in str(err.value) and "peft" in str(err.value)


@pytest.mark.parametrize("fuse", [True, False])
def test_lora_changes_the_output(suite, ctx, base, tmp_path, fuse):
    if not _peft_backend():
        pytest.skip("peft is not installed: diffusers loads LoRAs through it")
    lora = tmp_path / "l.safetensors"
    make_lora(lora, base.pipe.transformer)
    gen = GenerationConfig(steps=2, true_cfg_scale=1.0, width=32, height=32)
    plain = edit_twice(base, gen)
    loaded, report = build(suite, ctx, method="lora", lora=str(lora), steps=2, fuse=fuse)
    assert report.generation_overrides.as_update() == {"steps": 2, "true_cfg_scale": 1.0}
    assert report.changes["lora_modules"] == 4 * LAYERS and report.changes["fused"] is fuse
    assert loaded.pipe.scheduler.config.use_dynamic_shifting is True
    assert loaded.pipe.scheduler.config.base_shift == pytest.approx(math.log(3))
    lora_params = [n for n, _ in loaded.pipe.transformer.named_parameters() if "lora_" in n]
    assert bool(lora_params) is (not fuse)
    with_lora = edit_twice(loaded, gen)
    assert with_lora.image.tobytes() != plain.image.tobytes()


def test_lightning_scheduler_is_a_constant_shift_of_3():
    """The published config (dynamic shifting with base_shift = max_shift = ln 3) gives
    sigma' = 3 s / (1 + 2 s) at every resolution, i.e. shift = 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = scheduler_config(dict(FlowMatchEulerDiscreteScheduler().config), "lightning", SchedulerOverrides())
    assert {k: cfg[k] for k in LIGHTNING_SCHEDULER} == LIGHTNING_SCHEDULER
    sched = FlowMatchEulerDiscreteScheduler.from_config(cfg)
    s = np.linspace(1.0, 1 / 4, 4)
    for mu in (math.log(3), math.log(3)):  # what the pipeline's calculate_shift gives for any length
        sched.set_timesteps(sigmas=s, mu=mu)
        assert sched.sigmas[:-1].numpy() == pytest.approx(3 * s / (1 + 2 * s), rel=1e-5)
    over = scheduler_config(cfg, "keep", SchedulerOverrides(use_dynamic_shifting=False, shift=3.0))
    sched = FlowMatchEulerDiscreteScheduler.from_config(over)
    sched.set_timesteps(sigmas=s, mu=0.0)
    assert sched.sigmas[:-1].numpy() == pytest.approx(3 * s / (1 + 2 * s), rel=1e-5)


# -- bad configs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "key", "words"),
    [
        ('method = "lora"\nlora = "no/such/file.safetensors"\nsteps = 4', "lora", "not found"),
        ('method = "lora"\nsteps = 4', "lora", "needs lora"),
        ('method = "lora"\nlora = "{lora}"', "steps", "needs steps"),
        ('method = "lora"\nlora = "{lora}"\nsteps = 4\n[variants.scheduler]\nshfit = 3.0', "scheduler.shfit",
         "did you mean 'shift'"),
        ('method = "lora"\nlora = "{lora}"\nsteps = 4\nstudent_layers = 2', "student_layers", "only read when method = 'student'"),
        ('method = "destill"', "method", "'destill' is not allowed"),
        ('method = "student"', "checkpoint", "needs checkpoint"),
        ('method = "student"\ncheckpoint = "no/such/dir"', "checkpoint", "not found"),
        ('method = "student"\ntrain_if_missing = true', "student_layers", "needs student_layers"),
        ('method = "student"\ntrain_if_missing = true\nstudent_layers = 0', "student_layers", "greater than or equal to 1"),
        ('method = "student"\ncheckpoint = "{dir}"\nstudent_layers = 2', "student_layers", "only read when train_if_missing"),
        ('method = "student"\ncheckpoint = "{dir}"\nfuse = false', "fuse", "only read when method = 'lora'"),
        ('method = "student"\ntrain_if_missing = true\nstudent_layers = 1\ntraining = {{ lr = 0 }}', "training.lr",
         "greater than 0"),
    ],
)
def test_bad_options_name_the_key(tmp_path, lines, key, words):
    lora = tmp_path / "x.safetensors"
    lora.write_bytes(b"x")
    text = lines.format(lora=lora.as_posix(), dir=tmp_path.as_posix())
    path = tmp_path / "bad.toml"
    path.write_text(SUITE + f'\n[[variants]]\nname = "bad"\nkind = "distilled"\n{text}\n')
    with pytest.raises(UserInputError) as err:
        load_suite(path)
    msg = str(err.value)
    assert f"variants[1] ('bad').{key}" in msg and words in msg, msg
    assert "\n" not in msg

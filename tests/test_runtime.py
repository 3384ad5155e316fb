"""Runtime options (compile, attention backend, step caches), forwards per edit and cold start.

Forward counts are checked against an independent count: a forward pre-hook on a Linear inside
the transformer's last block fires only when that block really computes (a step cache that skips
the block, or predicts its attention, never reaches it). TaylorSeer's hits are hand-computed
from its schedule.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from qie_bench.errors import UserInputError
from qie_bench.suite import load_suite
from qie_bench.variants.options import RuntimeOptions


def _suite(write_suite, runtime: str, *, device: str = "cpu", offload: str = "none", **kw) -> Path:
    path = write_suite({"fp32": "fp32"}, extra=f'\n[[variants]]\nname = "x"\nkind = "dtype"\ndtype = "fp32"\n'
                       f'runtime = {runtime}\n', **kw)
    text = path.read_text().replace('device = "cpu"', f'device = "{device}"')
    if offload != "none":
        text = text.replace("[measurement]\n", f'[measurement]\noffload = "{offload}"\n')
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# options: validated when the suite is read, without torch


def test_runtime_table_is_typed_and_kept_apart_from_the_kind_options(write_suite) -> None:
    suite = load_suite(_suite(write_suite, '{ attention = "_native_math", cache = { kind = "first-block", threshold = 0.2 } }'))
    entry = suite.variant("x")
    assert entry.options == {"dtype": "fp32"}  # the kind's options do not see `runtime`
    assert entry.runtime == RuntimeOptions(attention="_native_math", cache={"kind": "first-block", "threshold": 0.2})
    assert entry.runtime.cache.threshold == 0.2 and entry.runtime.compile == "none"
    assert suite.variant("fp32").runtime is None


@pytest.mark.parametrize("runtime,device,offload,words", [
    ('{ attention = "_native_cudnn" }', "cpu", "none", "runtime.attention: attention = '_native_cudnn' needs a CUDA GPU"),
    ('{ attention = "flash_hub" }', "cpu", "none", "runtime.attention"),
    ('{ compile = "regional", cache = { kind = "first-block" } }', "cpu", "none", "do not mix"),
    ('{ compile = "regional" }', "cuda", "group", "runtime.compile: compile = 'regional' and measurement.offload = 'group'"),
    ('{ cache = { kind = "first-blok" } }', "cpu", "none", "runtime.cache"),
    ('{ cache = { kind = "first-block", threshold = 0 } }', "cpu", "none", "threshold"),
    ('{ cache = { kind = "taylorseer", disable_cache_before_step = 0 } }', "cpu", "none", "disable_cache_before_step"),
    ('{ compiel = "regional" }', "cpu", "none", "compile"),
])
def test_bad_runtime_options_fail_when_the_suite_is_read(write_suite, runtime: str, device: str, offload: str,
                                                         words: str) -> None:
    with pytest.raises(UserInputError) as err:
        load_suite(_suite(write_suite, runtime, device=device, offload=offload))
    assert words in str(err.value) and "('x')" in str(err.value) and "\n" not in str(err.value)


def test_worker_checks_refuse_what_this_device_or_install_cannot_run() -> None:
    import torch

    from qie_bench.variants.runtime import check_runtime

    with pytest.raises(UserInputError, match=r"variants \('x'\)\.runtime\.attention: .*needs a CUDA GPU"):
        check_runtime(RuntimeOptions(attention="_native_efficient"), torch.device("cpu"), "variants ('x')")
    # flash-attn is not installed here: refused before loading, with the package to install.
    with pytest.raises(UserInputError, match=r"cannot run here: .*\(install flash_attn\)"):
        check_runtime(RuntimeOptions(attention="flash"), torch.device("cuda"), "variants ('x')")
    check_runtime(RuntimeOptions(attention="native", compile="regional"), torch.device("cpu"), "variants ('x')")
    check_runtime(None, torch.device("cpu"), "variants ('x')")


# --------------------------------------------------------------------------------------------
# forwards per edit on the tiny model (CPU)


def _tiny():
    import torch
    from test_variants_quant import TINY

    from qie_bench.models import LoadPlan, load_model

    return load_model(TINY, LoadPlan(dtype=torch.float32))


def _edit(loaded, cache, steps: int = 4):
    """One true-CFG edit; returns (run_edit's ForwardCount, times the last block's attention
    projection and MLP really ran)."""
    from test_variants_quant import _image

    from qie_bench.runner.edit import run_edit
    from qie_bench.runner.memory import Nvml
    from qie_bench.suite import GenerationConfig

    last = loaded.pipe.transformer.transformer_blocks[-1]
    ran = {"attn": 0, "mlp": 0}
    hooks = [last.attn.to_q.register_forward_pre_hook(lambda *_: ran.__setitem__("attn", ran["attn"] + 1)),
             last.img_mlp.register_forward_pre_hook(lambda *_: ran.__setitem__("mlp", ran["mlp"] + 1))]
    try:
        gen = GenerationConfig(steps=steps, true_cfg_scale=4.0, width=32, height=32)
        result = run_edit(loaded, [_image()], "make the sky red", gen, 7, Nvml(enabled=False), 0.01, cache=cache)
    finally:
        for h in hooks:
            h.remove()
    assert result.output_finite
    return result.forwards, ran


@pytest.fixture(scope="module")
def tiny(torch_one_thread):
    return _tiny()


def test_without_a_cache_every_call_is_a_full_forward(tiny) -> None:
    from qie_bench.variants.runtime import apply_runtime

    applied = apply_runtime(tiny.pipe, RuntimeOptions(attention="native"))
    assert applied.cache is None and applied.report.attention == "native"
    forwards, ran = _edit(tiny, applied.cache)
    # 4 steps x 2 (true CFG): the transformer is called 8 times and computes in full each time.
    assert (forwards.calls, forwards.full, forwards.cache_hits) == (8, 8, None)
    assert ran == {"attn": 8, "mlp": 8}
    assert forwards.as_record() == {"transformer_calls": 8, "transformer_forwards": 8, "cache_hits": None}


def test_first_block_cache_skips_forwards_and_counts_them() -> None:
    from qie_bench.variants.runtime import apply_runtime

    loaded = _tiny()
    applied = apply_runtime(loaded.pipe, RuntimeOptions(cache={"kind": "first-block", "threshold": 0.5}))
    assert applied.report.cache == {"kind": "first-block", "threshold": 0.5}
    for _ in range(2):  # the cache state and the count start afresh with each edit
        forwards, ran = _edit(loaded, applied.cache)
        assert forwards.calls == 8
        assert 0 < forwards.cache_hits < 8
        # a hit skips every block after the first: the last block ran exactly in the full forwards
        assert ran["attn"] == ran["mlp"] == forwards.full == 8 - forwards.cache_hits


def test_taylorseer_hits_follow_its_schedule() -> None:
    from qie_bench.variants.runtime import apply_runtime

    loaded = _tiny()
    options = RuntimeOptions(cache={"kind": "taylorseer", "factors_dtype": "fp32"})
    applied = apply_runtime(loaded.pipe, options)
    forwards, ran = _edit(loaded, applied.cache)
    # Per CFG branch, steps 0..2 compute (disable_cache_before_step = 3); step s >= 3 computes
    # when (s - 3 - 1) % 5 == 0: step 3 is predicted. So 1 hit per branch, 2 per edit.
    assert (forwards.calls, forwards.cache_hits, forwards.full) == (8, 2, 6)
    assert ran["attn"] == 6  # attention predicted in the hits ...
    assert ran["mlp"] == 8  # ... the MLP still computed (lite = false caches attention only)


def test_first_block_cache_needs_two_blocks() -> None:
    import torch

    from qie_bench.variants.runtime import apply_runtime

    loaded = _tiny()
    loaded.pipe.transformer.transformer_blocks = torch.nn.ModuleList(loaded.pipe.transformer.transformer_blocks[:1])
    with pytest.raises(UserInputError, match=r"variants \('x'\)\.runtime\.cache: kind = 'first-block' needs at least 2"):
        apply_runtime(loaded.pipe, RuntimeOptions(cache={"kind": "first-block"}), "variants ('x')")


# --------------------------------------------------------------------------------------------
# through the worker: the report, the records, the summary, the gate


FBC_VARIANT = '\n[[variants]]\nname = "fbc"\nkind = "dtype"\ndtype = "fp32"\nruntime = { cache = { kind = "first-block", threshold = 0.5 } }\n'


@pytest.mark.slow
def test_run_records_forwards_cold_start_and_the_runtime_report(tmp_path: Path, write_suite) -> None:
    from qie_bench.cli import main
    from qie_bench.gate.compare import compare
    from qie_bench.gate.rundata import load_run
    from qie_bench.gate.thresholds import STATIC_KEYS, parse_gates
    from qie_bench.results import RunDir
    from qie_bench.variants.report import VariantReport

    suite = write_suite({"fp32": "fp32"}, select=["txt-price-mug", "rm-watermark-bottle"], steps=4, repeats=2,
                        extra=FBC_VARIANT, metrics='names = ["psnr", "psnr_vs_baseline"]\nweights = "random"')
    suite.write_text(suite.read_text().replace("warmup_runs = 0", "warmup_runs = 1"))
    run = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(run), "--no-progress"]) == 0
    rd = RunDir.load(run)
    build = json.loads((run / "variants" / "fbc.build.json").read_text())
    report = VariantReport.model_validate(build["report"])
    assert report.runtime.cache == {"kind": "first-block", "threshold": 0.5} and report.runtime.compile == "none"
    assert VariantReport.model_validate(json.loads((run / "variants" / "fp32.build.json").read_text())["report"]).runtime.cache is None
    assert build["load_s"] == build["build_s"] > 0
    assert abs(sum(build["load_phases_s"].values()) - build["load_s"]) < 1e-6

    summary = json.loads((run / "summary.json").read_text())
    for v in ("fp32", "fbc"):
        records = [r for r in rd.records if r.variant == v]
        # the worker's first edit is the first case's warm-up edit, recorded on that case's repeat 0
        firsts = [r for r in records if r.first_call_s is not None]
        assert len(firsts) == 1 and firsts[0].repeat == 0 and firsts[0].first_call_warmup is True
        assert firsts[0].first_call_steps == 4
        s = summary["variants"][v]
        assert s["first_call_s"] == firsts[0].first_call_s
        assert s["load_s"] == json.loads((run / "variants" / f"{v}.build.json").read_text())["load_s"]
        assert all(r.transformer_calls == 8 for r in records)
        assert s["transformer_forwards"] == pytest.approx(sum(r.transformer_forwards for r in records) / len(records))
    fp32 = [r for r in rd.records if r.variant == "fp32"]
    fbc = [r for r in rd.records if r.variant == "fbc"]
    assert all(r.transformer_forwards == 8 and r.cache_hits is None for r in fp32)
    assert summary["variants"]["fp32"]["cache_hits"] is None
    assert all(r.transformer_forwards + r.cache_hits == 8 for r in fbc)
    assert summary["variants"]["fbc"]["transformer_forwards"] < 8  # fewer than steps x 2
    # first_call_s and load_s are gateable like the static figures (one value per variant)
    assert {"first_call_s", "load_s"} <= STATIC_KEYS
    assert RunDir.load(run).summary.variants["fbc"].get("first_call_s") == summary["variants"]["fbc"]["first_call_s"]
    # a run whose first call is 50 % slower for one variant fails that variant's check only
    slower = tmp_path / "slower"
    shutil.copytree(run, slower)
    summary["variants"]["fbc"]["first_call_s"] *= 1.5
    (slower / "summary.json").write_text(json.dumps(summary))
    result = compare(load_run(run), load_run(slower), parse_gates({"first_call_s": "+20%", "load_s": "+20%"}))
    verdicts = {(c.name, c.variant): c.verdict.name for c in result.checks if c.name in ("first_call_s", "load_s")}
    assert verdicts == {("first_call_s", "fp32"): "PASS", ("first_call_s", "fbc"): "FAIL",
                        ("load_s", "fp32"): "PASS", ("load_s", "fbc"): "PASS"}

    # The cache variant's fidelity against the baseline variant's output is a metric like any
    # other variant's: skipping forwards changed the image (finite PSNR vs fp32), and a run whose
    # cached output drifted 3 dB further from fp32 fails its psnr_vs_baseline gate.
    base = load_run(run)
    fidelity = base.metric_by_case("fbc", "psnr_vs_baseline")
    assert set(fidelity) == {"txt-price-mug", "rm-watermark-bottle"}
    assert all(math.isfinite(v) and v > 0 for v in fidelity.values()), fidelity
    assert base.metric_by_case("fp32", "psnr_vs_baseline") == {}  # the baseline variant is not compared with itself

    def drifted(r):
        if r.variant != "fbc" or not r.metrics or "psnr_vs_baseline" not in r.metrics:
            return r
        return r.model_copy(update={"metrics": {**r.metrics, "psnr_vs_baseline": r.metric("psnr_vs_baseline") - 3.0}})

    worse = replace(base, records=[drifted(r) for r in base.records])
    gates = parse_gates({"psnr_vs_baseline": "-1.0"})
    verdicts = {c.variant: c.verdict.name for c in compare(base, worse, gates).checks if c.name == "psnr_vs_baseline"}
    assert verdicts["fbc"] == "FAIL", verdicts
    assert {c.variant: c.verdict.name for c in compare(base, base, gates).checks if c.name == "psnr_vs_baseline"}["fbc"] == "PASS"


@pytest.mark.slow
def test_compile_cost_lands_in_the_first_call_only(tmp_path: Path, write_suite) -> None:
    """Regional compile on the CPU (inductor, C++): the first edit compiles both blocks (tens of
    seconds on a small CPU); the timed edits after the warm-up do not."""
    from qie_bench.cli import main
    from qie_bench.results import RunDir

    suite = write_suite({"c": "fp32"}, select=["txt-price-mug"], steps=2, repeats=2, timeout=600,
                        metrics='names = ["psnr"]\nweights = "random"')
    text = suite.read_text().replace("warmup_runs = 0", "warmup_runs = 1")
    suite.write_text(text.replace('dtype = "fp32"\n', 'dtype = "fp32"\nruntime = { compile = "regional" }\n'))
    run = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(run), "--no-progress"]) == 0
    build = json.loads((run / "variants" / "c.build.json").read_text())
    assert build["report"]["runtime"]["compile"] == "regional" and build["report"]["runtime"]["compiled_blocks"] == 2
    records = RunDir.load(run).records
    assert all(r.ok for r in records)
    first = next(r.first_call_s for r in records if r.first_call_s is not None)
    steady = max(r.latency_s for r in records)
    assert first > 5 * steady, (first, steady)


def test_runtime_options_enter_the_suite_fingerprint_and_their_absence_does_not(write_suite) -> None:
    import hashlib

    plain = load_suite(write_suite({"fp32": "fp32"}))
    # the fingerprint as it was computed before runtime options existed (no `runtime` key)
    data = plain.model_dump(mode="json", exclude={"path", "cli_overrides", "gates", "cost", "description", "variants"})
    data["variants"] = [v.model_dump(mode="json", exclude={"runtime"}) for v in plain.variants]
    if data["generation"].get("area") is None:  # an unset area stays out too (it is newer still)
        data["generation"].pop("area", None)
    before = "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert plain.fingerprint() == before
    a = load_suite(_suite(write_suite, '{ cache = { kind = "first-block", threshold = 0.05 } }'))
    b = load_suite(_suite(write_suite, '{ cache = { kind = "first-block", threshold = 0.1 } }'))
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.slow
def test_worker_refuses_a_cuda_attention_backend_before_loading_on_a_cpu(tmp_path: Path, write_suite) -> None:
    # model.device = "auto" passes the suite check; the worker, on a CPU, refuses before loading.
    from qie_bench.cli import main
    from qie_bench.results import RunDir

    path = _suite(write_suite, '{ attention = "_native_cudnn" }', device="auto", select=["txt-price-mug"])
    run = tmp_path / "run"
    main(["run", str(path), "--out", str(run), "--no-progress", "--variants", "x"])
    records = RunDir.load(run, require_summary=False).records_of("x")
    assert records and all(r.status.value == "ERROR" for r in records)
    assert "runtime.attention: attention = '_native_cudnn' needs a CUDA GPU (this run is on cpu)" in records[0].error
    assert not (run / "variants" / "x.build.json").exists()


@pytest.mark.gpu
def test_compile_and_cudnn_attention_on_a_gpu(tmp_path: Path, write_suite) -> None:
    """For the lead on a GPU: the tiny model with regional compile and cuDNN attention on CUDA."""
    from qie_bench.cli import main
    from qie_bench.results import RunDir

    suite = write_suite({"fp32": "bf16"}, select=["txt-price-mug"], steps=4, repeats=3, timeout=600,
                        metrics='names = ["psnr_vs_baseline"]\nweights = "random"',
                        extra='\n[[variants]]\nname = "c"\nkind = "dtype"\ndtype = "bf16"\nruntime = { compile = "regional" }\n'
                              '\n[[variants]]\nname = "cudnn"\nkind = "dtype"\ndtype = "bf16"\n'
                              'runtime = { attention = "_native_cudnn" }\n')
    suite.write_text(suite.read_text().replace('device = "cpu"', 'device = "cuda"').replace("warmup_runs = 0", "warmup_runs = 1"))
    run = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(run), "--no-progress"]) == 0
    rd = RunDir.load(run)
    assert all(r.ok for r in rd.records)
    assert json.loads((run / "variants" / "cudnn.build.json").read_text())["report"]["runtime"]["attention"] == "_native_cudnn"
    compiled = rd.records_of("c")
    first = next(r.first_call_s for r in compiled if r.first_call_s is not None)
    assert first > 5 * max(r.latency_s for r in compiled)

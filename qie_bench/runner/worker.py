"""The child process that runs one variant: build it, then measure the items it is given.

Started by the orchestrator as ``python -m qie_bench.runner.worker SPEC.json``. It edits and
measures only: the outputs are scored afterwards by the scoring phase (``scoring.py``), in another
process, so no metric model is in the memory whose peak this process records. It talks back
through a pipe (file descriptor in the spec) in JSON lines — ``built``, ``start``, ``record``,
``fatal`` — so the parent gets structured records, never a traceback to parse. Only the parent
writes result files; the worker writes output images (atomically) and nothing else.

Test hook: the spec's ``faults`` (a list of ``{"variant", "case", "fault"}``) injects a fault in
the middle of that case's edit: ``oom`` (raises torch.OutOfMemoryError), ``error``, ``exit``
(os._exit), ``segfault`` (a real SIGSEGV through ctypes), ``hang`` (sleeps forever).
``case = "@build"`` injects it while building. It exists so the runner's failure paths are tested
for real. Only `Orchestrator(..., faults=...)` from Python puts it in the spec: no suite file,
command-line flag or environment variable can switch it on.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# Exit code meaning "this process can no longer compute (e.g. CUDA state broken after an OOM);
# start a fresh one for the remaining items". Not an error of the item in flight.
EXIT_RESTART = 75


class Events:
    def __init__(self, fd: int) -> None:
        self._f = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, kind: str, **payload: Any) -> None:
        from ..results import json_safe

        self._f.write(json.dumps(json_safe({"type": kind, **payload}), allow_nan=False) + "\n")
        self._f.flush()


def _faults(spec: dict[str, Any], variant: str) -> dict[str, str]:
    return {f["case"]: f["fault"] for f in spec.get("faults") or () if f.get("variant") in (variant, "*")}


def _trigger(fault: str) -> None:
    import torch

    if fault == "oom":
        # Hold real memory while failing, as a real OOM would.
        _hold = torch.empty(64 * 2**20, dtype=torch.uint8)  # noqa: F841
        raise torch.OutOfMemoryError("injected fault: out of memory (test hook)")
    if fault == "error":
        raise RuntimeError("injected fault: error (test hook)")
    if fault == "exit":
        sys.stderr.write("injected fault: os._exit(3)\n")
        sys.stderr.flush()
        os._exit(3)
    if fault == "segfault":
        sys.stderr.write("injected fault: segfault\n")
        sys.stderr.flush()
        ctypes.string_at(0)
    if fault == "hang":
        while True:
            time.sleep(3600)
    raise ValueError(f"unknown injected fault '{fault}'")


def _png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when the orchestrator dies (even by SIGKILL), so an
    orphan never keeps a GPU busy or writes into a run that is being resumed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):  # not Linux: the event pipe still breaks on its next write
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    _die_with_parent(spec["parent_pid"])
    events = Events(spec["event_fd"])
    variant_name: str = spec["variant"]
    faults = _faults(spec, variant_name)
    t_start = time.perf_counter()
    try:
        import torch

        from ..cases import load_case_set
        from ..models import load_model, pipeline_weight_bytes, resolve_device
        from ..suite import Suite, check_runnable
        from ..variants import VARIANTS
        from ..variants.runtime import apply_runtime, check_runtime
        from .edit import EditProgress, device_usable, is_oom, oom_evidence, release_cache, release_memory, run_edit
        from .gpu_state import VariantMonitor
        from ..distill.context import building_for
        from .device_limits import apply_memory_budget, apply_offload
        from .memory import Nvml
        from .chains import chain_turn

        suite = Suite.from_config(spec["suite"])  # validated by the parent, overrides applied
        case_set = load_case_set(suite.case_set_dir(), max_image_pixels=suite.cases.max_image_pixels)
        cases = {c.id: c for c in case_set.cases}
        entry = suite.variant(variant_name)
        variant = VARIANTS.validate_entry(entry, f"variants ('{variant_name}')")
        torch.manual_seed(0)
        torch.use_deterministic_algorithms(False)
        if faults.get("@build"):
            _trigger(faults["@build"])
        device = resolve_device(suite.model.device)
        # Options that cannot run here fail now, before any GPU time is spent: what the settings
        # alone decide (again: the command line may have changed the offload mode), then the device.
        check_runnable(variant.options, device.type, suite.measurement.offload, f"variants ('{variant_name}')")
        variant.check_device(device, suite.measurement.offload)
        check_runtime(entry.runtime, device, f"variants ('{variant_name}')")
        nvml = Nvml(device.index or 0, enabled=device.type == "cuda")
        m = suite.measurement
        limits: dict[str, Any] = {"offload": m.offload}
        # Real weights are quantized while loading, layer by layer, so capping the load is what a
        # small card sees. Random weights are built in 16-bit and converted in place (or built on
        # the GPU and then offloaded): that path is an artefact of having no checkpoint, so for
        # them only the running footprint, after building, is capped.
        cap_build = suite.model.source == "pretrained" and m.offload == "none"
        if m.memory_budget and cap_build:
            limits.update(apply_memory_budget(device, m.memory_budget, nvml))
        t_load = time.perf_counter()
        loaded = load_model(suite.model, variant.load_plan(suite.model.source))
        t_loaded = time.perf_counter()
        # Backward passes of a build (students, recovery) run on the calling thread: on autograd's
        # own threads they would leave a cuBLAS workspace allocated (32 MiB on Hopper) that no
        # cache release reaches, and every edit of the variant would carry it (release_memory).
        with building_for(suite), torch.autograd.set_multithreading_enabled(False):
            report = variant.apply(loaded)
        # Runtime options (compile, attention backend, step cache) go on the built variant.
        runtime = apply_runtime(loaded.pipe, entry.runtime, f"variants ('{variant_name}')")
        report = report.model_copy(update={"runtime": runtime.report})
        t_built = time.perf_counter()
        # Building often passes through a bigger model (bf16 before nf4, all blocks before
        # pruning); what it freed must leave the allocator's cache, or reserved memory and NVML
        # would report the build's peak instead of the variant's footprint.
        release_memory(device)
        if m.offload != "none":
            limits.update(apply_offload(loaded.pipe, m.offload, device))
            release_memory(device)
        if m.memory_budget and not cap_build:
            limits.update(apply_memory_budget(device, m.memory_budget, nvml))
        limits["budget_caps_build"] = bool(m.memory_budget) and cap_build
        weights = pipeline_weight_bytes(loaded.pipe)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        monitor = VariantMonitor(nvml)
        ready_s = time.perf_counter() - t_start
        built = {
            "variant": variant_name,
            "kind": entry.kind,
            "options": entry.options,
            "build_s": ready_s,
            # Cold start, part 1: worker start to a model ready to edit; the first edit's latency
            # (compilation, lazy kernels) is each worker's first record's `first_call_s`.
            "load_s": ready_s,
            "load_phases_s": {"setup": t_load - t_start, "load_weights": t_loaded - t_load,
                              "build_variant": t_built - t_loaded, "place": ready_s - (t_built - t_start)},
            "weights_bytes": sum(c["weights_bytes"] for c in weights.values()),
            "params": sum(c["params"] for c in weights.values()),
            "components": weights,
            "changes": report.changes,
            "generation_overrides": report.generation_overrides.as_update(),
            "report": report.model_copy(update={"offload": m.offload}).model_dump(mode="json"),
            "device": str(loaded.device),
            "model_identity": loaded.identity,
            "weights_description": loaded.weights_description,
            "cuda_context_bytes": _cuda_context_bytes(nvml, loaded.device),
            "gpu_uuid": nvml.uuid(),  # which card (records carry it; None on the CPU)
            **limits,
            **monitor.start_info(),
        }
        events.send("built", info=built)
    except Exception as err:  # the variant cannot be built: every item of it fails alike
        from ..errors import UserInputError
        from .edit import is_oom

        # Running out of memory while loading is the answer "does not fit", not an error.
        events.send("fatal", error=f"{type(err).__name__}: {str(err)[:2000]}", oom=is_oom(err),
                    user_error=isinstance(err, UserInputError), traceback=traceback.format_exc(limit=20))
        return 1

    gen = suite.generation
    if report.generation_overrides.as_update():
        gen = gen.model_copy(update=report.generation_overrides.as_update())
    if entry.generation is not None:  # the suite's own per-variant settings win
        gen = gen.model_copy(update=entry.generation.as_update())
    # Warm-up edits exist to trigger lazy initialisation (kernels, workspaces), not to be timed:
    # they may use fewer steps than the measured edit.
    warm_gen = gen.model_copy(update={"steps": suite.measurement.warmup_steps}) if suite.measurement.warmup_steps else gen
    out_dir = Path(spec["out_dir"])
    last_case: str | None = None
    edits_run = 0  # edits this worker started: the first pays for compilation and lazy loading
    cold = True  # no edit has run in this process yet: a restarted or resumed worker starts cold
    for item in spec["items"]:
        case_id, repeat = item[0], item[1]
        case = cases[case_id]
        if len(item) > 2:  # a chained case's turn: a case of its own, id "<case>@t<k>" (runner/chains.py)
            case = chain_turn(case, item[2], out_dir, variant_name)
            case_id = case.id
        key = f"{variant_name}/{case_id}/{repeat}"
        # Warm up before each case's first repeat, and before this process's first timed edit
        # whatever its repeat: a worker restarted (or resumed) at repeat 1 would otherwise time a
        # cold edit. The record says how many warm-up edits ran just before it.
        warmups = suite.measurement.warmup_runs if (repeat == 0 or cold) else 0
        events.send("start", key=key, warmup_edits=warmups)
        seed = case.seed(gen.seed) if gen.seed_policy == "case-id" else gen.seed
        record: dict[str, Any] = {"seed": seed, "warmup_edits": warmups}
        fault = faults.get(case_id)
        progress = EditProgress()
        try:
            images = case.load_images()
            # A suite's `area` gives each case its own size, at its source's aspect ratio (suite.output_size).
            size = case.source_size()
            case_gen, case_warm_gen = gen.for_source(size), warm_gen.for_source(size)

            def on_step(step: int, _fault: str | None = fault) -> None:
                if _fault and step == 0:
                    _trigger(_fault)

            if case_id != last_case:
                # Each case's peaks are its own: what earlier cases left in the allocator's cache goes
                # before the case's first edit (its warm-up, where there is one), outside any timed
                # window; the case's repeats reuse what it allocated itself.
                release_cache(loaded.device)
                last_case = case_id
            for _ in range(warmups):
                progress = EditProgress(warmup=True)
                cold = False
                edits_run += 1
                warm = run_edit(loaded, images, case.instruction, case_warm_gen, seed, nvml, suite.measurement.nvml_period_s,
                                progress=progress, cache=runtime.cache)
                if edits_run == 1:
                    record.update(_first_call(warm, warm_gen, warmup=True))
            progress = EditProgress()
            cold = False
            edits_run += 1
            result = run_edit(loaded, images, case.instruction, case_gen, seed, nvml, suite.measurement.nvml_period_s, on_step,
                              progress, cache=runtime.cache)
            if edits_run == 1:
                record.update(_first_call(result, gen, warmup=False))
            record.update(
                status="OK",
                latency_s=result.latency_s,
                encode_s=result.encode_s,
                denoise_s=result.denoise_s,
                decode_s=result.decode_s,
                step_s=result.step_s,
                steps=gen.steps,
                true_cfg=gen.true_cfg_scale > 1,
                output_width=result.width,
                output_height=result.height,
                output_finite=result.output_finite,
                output_constant=result.output_constant,
                **result.memory.as_record(),
                **result.energy.as_record(),
                **result.activity.as_record(),
                **result.forwards.as_record(),
                # Measured after every edit, not once: CUDA loads kernels lazily, so the
                # memory outside the allocator grows as new kernels are first used.
                cuda_context_bytes=_cuda_context_bytes(nvml, loaded.device),
            )
            monitor.edit_done(result.energy, result.activity, case_id)
            png = _png_bytes(result.image)
            record["output_sha256"] = "sha256:" + hashlib.sha256(png).hexdigest()
            if repeat == 0:
                from ..results import atomic_write_bytes

                rel = Path("images") / variant_name / f"{case_id}.png"
                atomic_write_bytes(out_dir / rel, png)
                record["output_path"] = str(rel)
                # Scored later, in a process of its own (runner/scoring.py): no metric model may
                # sit in the memory this process's peaks measure.
        except Exception as err:
            evidence = oom_evidence(err)
            oom = evidence is not None
            record.update(status="OOM" if oom else "ERROR", error=f"{type(err).__name__}: {str(err)[:2000]}",
                          oom_evidence=evidence,
                          # Kept apart from the OK records' fields: summaries never read it.
                          at_failure=progress.as_record())
            if not oom:
                # the innermost frames: where it failed, not how the worker got there
                record["traceback"] = traceback.format_exc(limit=-12)
            release_memory(loaded.device)
            events.send("record", key=key, record=record)
            if oom and not device_usable(loaded.device):
                events.send("ended", info=monitor.end_info())
                return EXIT_RESTART
            continue
        events.send("record", key=key, record=record)
    events.send("ended", info=monitor.end_info())
    return 0


def _first_call(result: Any, gen: Any, *, warmup: bool) -> dict[str, Any]:
    """The worker's first edit (cold start: compilation, lazy kernel loading, first allocations),
    kept apart from the timed repeats: the first warm-up edit, or the first timed edit without one."""
    return {"first_call_s": result.latency_s, "first_call_warmup": warmup, "first_call_steps": gen.steps}


def _cuda_context_bytes(nvml: Any, device: Any) -> int | None:
    """NVML's per-process figure minus what the allocator reserved: the CUDA context and
    libraries' own memory (cuBLAS workspaces and the like), which no allocator counter sees."""
    if device.type != "cuda" or not nvml.available:
        return None
    import torch

    mine = nvml.process_used(os.getpid())
    if mine is None:
        return None
    return mine - int(torch.cuda.memory_reserved(device))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""Distilled variants: a step-distilled LoRA (`method = "lora"`) or a smaller student
transformer trained to imitate the base (`method = "student"`).

```toml
[[variants]]
name = "lightning-4"
kind = "distilled"
method = "lora"
lora = "loras/Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors"
steps = 4                    # the LoRA's step count (required)
# true_cfg_scale = 1.0       # default for LoRAs: step-distilled models run without CFG
# fuse = true                # merge into the weights (no LoRA compute per step)
# scheduler_preset = "lightning"; [variants.scheduler] overrides single settings

[[variants]]
name = "student-40"
kind = "distilled"
method = "student"
checkpoint = "students/qie-40"        # made by `qie-bench distill SUITE --student-layers 40 --out ...`

[[variants]]
name = "student-1"
kind = "distilled"
method = "student"
train_if_missing = true               # train it now if not built yet (cached per base + options)
student_layers = 1
training = { steps = 150 }
```

**lora.** Loaded with diffusers' `pipe.load_lora_weights(path)` (which needs the `peft`
package), then fused into the transformer (`fuse = true`: `fuse_lora` + `unload_lora_weights`,
so inference costs what the base costs) or kept as a live adapter scaled by `lora_scale`. The
scheduler is rebuilt from the pipeline's own config updated by `scheduler_preset` and then by the
`scheduler` table (any `FlowMatchEulerDiscreteScheduler` setting). The `lightning` preset is the
configuration published with the Qwen-Image-Lightning LoRAs: exponential time shift with
base_shift = max_shift = ln 3 and dynamic shifting, which is the constant shift 3
(3t / (1 + 2t)) at every resolution, shift_terminal unset. Relative paths are read from the
current directory, and a missing file is an error when the suite is read.

**student.** A `QwenImageTransformer2DModel` with fewer blocks replaces `pipe.transformer`. It
comes from a checkpoint folder (`qie_bench.distill.checkpoint`: `save_pretrained` files plus
`qie_student.json` with sha256 of each, verified on load, and the teacher's architecture, checked
against this suite's model) or, with `train_if_missing`, is trained while the variant is built:
initialised from `student_layers` of the teacher's blocks (evenly spaced, or the most influential
by the depth-pruning score with `init = "score"`), distilled on the suite's cases
(`qie_bench.distill.train`), and stored in `checkpoint` if given, else in the variant cache.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch

from ..distill import surgery
from ..fingerprint import file_sha256
from ..distill.surgery import component_dtypes
from ..distill.train import TrainingConfig
from ..errors import UserInputError
from ..models import LoadPlan, module_weight_bytes
from .base import DTYPES, VARIANTS, GenerationChange, Variant, VariantReport, built_report
from .options import DistillOptions, SchedulerOverrides

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 1  # part of cache keys: bump when student training changes
ADAPTER_NAME = "qie_bench_lora"

# Published with lightx2v/Qwen-Image-Lightning (its README's scheduler_config, "we use shift=3
# in distillation"), used for the Qwen-Image-Edit-2509 Lightning LoRAs too.
LIGHTNING_SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 1.0986122886681098,  # ln 3
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 1.0986122886681098,  # ln 3
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
SCHEDULER_PRESETS: dict[str, dict[str, Any]] = {"lightning": LIGHTNING_SCHEDULER, "keep": {}}

def scheduler_config(base: dict[str, Any], preset: str, overrides: SchedulerOverrides) -> dict[str, Any]:
    """The scheduler config: the pipeline's, updated by the preset, then by the overrides."""
    cfg = {k: v for k, v in dict(base).items() if not k.startswith("_")}
    cfg.update(SCHEDULER_PRESETS[preset])
    cfg.update(overrides.as_dict())
    return cfg


def _where(name: str) -> str:
    return f"variants ('{name}')"


def _bytes(module: Any) -> dict[str, int]:
    b, n = module_weight_bytes(module)
    return {"weights_bytes": b, "params": n}


def _release(device: torch.device) -> None:
    """Free what the replaced teacher held, so memory measured after the build is the student's."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@VARIANTS.register
class DistilledVariant(Variant):
    kind = "distilled"
    Options = DistillOptions
    description = "a step-distilled LoRA, or a student transformer with fewer blocks"
    options: DistillOptions

    def load_plan(self, source: str) -> LoadPlan:
        return LoadPlan(dtype=DTYPES[self.options.dtype])

    def _overrides(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {}
        if o.steps is not None:
            out["steps"] = o.steps
        if o.true_cfg_scale is not None:
            out["true_cfg_scale"] = o.true_cfg_scale
        elif o.method == "lora":
            out["true_cfg_scale"] = 1.0
        return out

    def apply(self, loaded: Any) -> VariantReport:
        t0 = time.perf_counter()
        changes = self._apply_lora(loaded) if self.options.method == "lora" else self._apply_student(loaded)
        changes["build_s"] = round(time.perf_counter() - t0, 3)
        changes["component_dtypes"] = component_dtypes(loaded.pipe)
        return built_report(loaded.pipe, changes, generation=GenerationChange(**self._overrides()))

    # -- lora ----------------------------------------------------------------------------------

    def _apply_lora(self, loaded: Any) -> dict[str, Any]:
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.utils import USE_PEFT_BACKEND

        o, where = self.options, _where(self.name)
        if not USE_PEFT_BACKEND:
            why = "is not installed" if importlib.util.find_spec("peft") is None else "is older than diffusers requires"
            raise UserInputError(f"{where}.method", f"method = 'lora' loads LoRAs through the 'peft' package, which {why}",
                                 "pip install -U peft")
        pipe = loaded.pipe
        old = dict(pipe.scheduler.config)
        cfg = scheduler_config(old, o.scheduler_preset, o.scheduler)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        path = Path(o.lora).expanduser()
        file = path if path.is_file() else path / "pytorch_lora_weights.safetensors"
        before = _bytes(pipe.transformer)
        try:
            pipe.load_lora_weights(str(file), adapter_name=ADAPTER_NAME)
        except (ValueError, KeyError, RuntimeError, OSError) as err:
            raise UserInputError(f"{where}.lora", f"cannot load '{o.lora}' into this transformer: "
                                 f"{str(err).splitlines()[0][:300]}") from None
        lora_params = sum(p.numel() for n, p in pipe.transformer.named_parameters() if "lora_" in n)
        lora_modules = sum(1 for n, _m in pipe.transformer.named_modules() if n.endswith(f"lora_A.{ADAPTER_NAME}"))
        if lora_modules == 0:
            raise UserInputError(f"{where}.lora", f"'{o.lora}' matched no module of this transformer")
        if o.fuse:
            pipe.fuse_lora(components=["transformer"], lora_scale=o.lora_scale, adapter_names=[ADAPTER_NAME])
            pipe.unload_lora_weights()
        else:
            pipe.set_adapters([ADAPTER_NAME], adapter_weights=[o.lora_scale])
        pipe.transformer.requires_grad_(False).eval()
        changed = {k: {"was": old.get(k), "now": v} for k, v in cfg.items() if old.get(k) != v}
        return {
            "method": "lora",
            "lora": str(file),
            "lora_sha256": file_sha256(file),
            "lora_modules": lora_modules,
            "lora_params": lora_params,
            "fused": o.fuse,
            "lora_scale": o.lora_scale,
            "scheduler_preset": o.scheduler_preset,
            "scheduler_changed": changed,
            "transformer_before": before,
            "transformer_after": _bytes(pipe.transformer),
        }

    # -- student -------------------------------------------------------------------------------

    def _apply_student(self, loaded: Any) -> dict[str, Any]:
        from ..distill.checkpoint import load_student, teacher_config

        o, where = self.options, _where(self.name)
        pipe = loaded.pipe
        teacher = pipe.transformer
        total = len(teacher.transformer_blocks)
        dtype = DTYPES[o.dtype]
        before = _bytes(teacher)
        ckpt = Path(o.checkpoint).expanduser() if o.checkpoint else None
        exists = ckpt is not None and ((ckpt / "qie_student.json").is_file() or (ckpt / "config.json").is_file())
        if exists or (ckpt is not None and not o.train_if_missing):
            assert ckpt is not None
            student, meta = load_student(ckpt, teacher, dtype, loaded.device, f"{where}.checkpoint")
            source = str(ckpt)
            status = "checkpoint" if (ckpt / "qie_student.json").is_file() else "external checkpoint (unverified)"
        else:
            assert o.student_layers is not None
            if o.student_layers >= total:
                raise UserInputError(f"{where}.student_layers", f"must be fewer than the teacher's {total} blocks "
                                     f"(got {o.student_layers})", f"use 1 to {total - 1}")
            student, meta, source, status = self._train_or_cached(loaded, ckpt, teacher_config(teacher))
        pipe.transformer = student.to(device=loaded.device, dtype=dtype).eval().requires_grad_(False)
        del teacher
        _release(loaded.device)
        return {
            "method": "student",
            "source": source,
            "status": status,
            "teacher_layers": total,
            "student_layers": len(student.transformer_blocks),
            "config_num_layers": student.config.num_layers,
            "kept_blocks": meta.get("student", {}).get("kept_blocks"),
            "init": meta.get("student", {}).get("init"),
            "errors": meta.get("errors"),
            "files": meta.get("files"),
            "transformer_before": before,
            "transformer_after": _bytes(student),
        }

    def _train_or_cached(self, loaded: Any, ckpt: Path | None, tcfg: dict[str, Any]) -> tuple[Any, dict[str, Any], str, str]:
        from ..distill import context
        from ..distill.checkpoint import save_student
        from .cache import VariantCache, variant_cache_key

        o, where = self.options, _where(self.name)
        ctx = context.current(f"{where}.train_if_missing", "training a student")
        extra = {"what": "student", "algorithm": ALGORITHM_VERSION, "case_set": ctx.case_set.fingerprint,
                 "generation": ctx.generation.model_dump(mode="json")}
        teacher = loaded.pipe.transformer
        cache = VariantCache()
        key = variant_cache_key(self, loaded, extra=extra) if ckpt is None and cache.enabled else None
        if key is not None:
            found = cache.load(key, loaded.device)
            if found is not None:
                state_dict, meta = found
                student = surgery.student_from_teacher(teacher, meta["student"]["kept_blocks"])
                student.load_state_dict(state_dict, strict=True)
                return student, meta, f"variant cache {key[:12]}", "cache hit"
        student, meta = train_student(loaded, ctx, o.student_layers, o.init, o.training, log=log.info)
        if ckpt is not None:
            save_student(student, ckpt, meta)
            return student, meta, str(ckpt), "trained (saved to checkpoint)"
        if key is not None:
            cache.store(key, student.state_dict(), meta)
            return student, meta, f"variant cache {key[:12]}", "trained (cached)"
        return student, meta, "trained (not cached)", "trained"


def train_student(loaded: Any, ctx: Any, layers: int, init: str, cfg: TrainingConfig,
                  log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Distil a `layers`-block student from `loaded.pipe.transformer` on the suite's cases.
    Returns (student in fp32, checkpoint metadata). Shared by the variant and `qie-bench distill`."""
    from ..distill.checkpoint import teacher_config
    from ..distill.student import block_plan, distill, small_cpu_threads

    teacher = loaded.pipe.transformer
    with small_cpu_threads(loaded):
        result = distill(loaded, ctx, cfg, lambda influence: block_plan(teacher, layers, init, influence),
                         need_influence=init == "score", log=log)
    rec = result.record
    meta = {
        "teacher": {"identity": loaded.identity, "config": teacher_config(teacher), "layers": rec["teacher_layers"],
                    "dtype": str(surgery.transformer_dtype(teacher)).removeprefix("torch.")},
        "student": {"layers": layers, "kept_blocks": rec["kept_blocks"], "init": init, "feature_map": rec["feature_map"]},
        "training": rec["training"],
        "data": rec["data"],
        "errors": rec["errors"],
        "history": rec["history"],
        "influence": rec["influence"],
        "seconds": rec["seconds"],
        "loss": "alpha * MSE(student, teacher velocity) + (1 - alpha) * T^2 * KL(softmax_c(teacher/T) || softmax_c(student/T))"
                " + feature_weight * relative MSE of mapped block outputs",
    }
    return result.student, meta

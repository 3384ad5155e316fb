"""A noise model of a run, to test the gate against realistic re-runs instead of hand-set numbers.

A `NoiseModel` holds the "true" per-case figures of every variant (latency level, step-time
profile, memory peaks, quality scores, statuses) and how re-runs scatter around them:

- latency: level x exp(run shift + variant shift + residual). The residual is drawn from a pool of
  within-case, repeat-to-repeat log deviations — fitted from a real run, where the pool carries
  that machine's outliers too. The run shift (clocks, thermals, a neighbour on the host) is common
  to every item of one run; the variant shift is common to the items of one variant in one run,
  i.e. to one worker process (where its memory, threads and kernels landed: measured at 3–7 % sd
  between identical variants of one run on a GPU runner). A single run shows neither, so fitted
  to one run their sizes are stated assumptions; `fit_runs` measures both from repeated runs.
- memory: level x (1 + residual), residuals fitted the same way (near zero on a GPU).
- quality: the case's score plus a small per-case re-run noise (a seeded edit is deterministic on
  one machine; kernels chosen at run time can still move a score slightly).

`NoiseModel.synthetic` builds one from seeded draws (what the tests use), `NoiseModel.fit` from a
real run directory (what `benchmarks/gate_false_positive.py` uses). `sample` draws the records of
one simulated run, optionally with a planted regression; `write_run_dir` writes them through
`qie_bench.results` exactly as the runner does (the summary by the runner's own builder), and `run_data` builds the same thing in memory.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qie_bench.gate.rundata import RunData
from qie_bench.results import SCHEMA_VERSION, RecordLog, atomic_write_json, build_summary as _build_summary, validate_records

MEMORY_FIELDS = ("peak_vram_bytes", "peak_vram_process_bytes", "torch_peak_allocated_bytes", "torch_peak_reserved_bytes",
                 "rss_peak_bytes")


@dataclass(frozen=True)
class CaseTruth:
    """The true figures of one case on one variant."""

    latency_s: float
    step_fractions: tuple[float, ...]  # each step's share of the latency
    memory: Mapping[str, int | None]
    metrics: Mapping[str, float]
    statuses: tuple[str, ...]  # per repeat: OK, OOM, ... (copied, never drawn)
    output_finite: bool = True
    output_constant: bool = False


@dataclass(frozen=True)
class RunMeta:
    """What makes two simulated runs comparable: fingerprints and the suite's [gates]."""

    suite_name: str = "synthetic"
    suite_fingerprint: str = "sha256:" + "5" * 64
    case_set_name: str = "edit-v1"
    case_set_fingerprint: str = "sha256:" + "c" * 64
    model: Mapping[str, Any] = field(default_factory=lambda: {"source": "pretrained", "id": "Qwen/Qwen-Image-Edit-2509",
                                                              "revision": None})
    hardware_class: str = "gpu:NVIDIA H100 80GB HBM3"
    metric_weights: str | None = "real"
    baseline_variant: str | None = "bf16"
    gates: Mapping[str, Any] = field(default_factory=dict)
    generation: Mapping[str, Any] = field(default_factory=lambda: {"steps": 8})
    measurement: Mapping[str, Any] = field(default_factory=lambda: {"repeats": 3})
    environment: Mapping[str, Any] = field(default_factory=dict)
    variant_static: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # weights_bytes, params


@dataclass(frozen=True)
class NoiseModel:
    variants: tuple[str, ...]
    cases: tuple[str, ...]
    repeats: int
    truth: Mapping[str, Mapping[str, CaseTruth]]
    latency_residuals: np.ndarray  # pool of log deviations of one repeat from its case's level
    memory_residuals: np.ndarray  # pool of relative deviations
    run_shift_sd: float  # sd of the log shift common to a whole run
    quality_noise: Mapping[str, float]  # per metric: sd of a case's score between re-runs
    meta: RunMeta = RunMeta()
    variant_shift_sd: float = 0.0  # sd of the log shift common to one variant's items in one run
    fitted_from: int = 1  # runs the shifts were measured from (1: they are assumptions)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def synthetic(cls, seed: int = 0, *, variants: tuple[str, ...] = ("bf16", "nf4"), cases: int = 12, repeats: int = 3,
                  steps: int = 8, jitter_sd: float = 0.02, outlier_rate: float = 0.03, run_shift_sd: float = 0.01,
                  meta: RunMeta | None = None) -> NoiseModel:
        """A world drawn from seeded distributions shaped like GPU runs of the real model.

        Cases differ in latency by ~25 % (number of reference images), repeats scatter by
        `jitter_sd` with occasional slow outliers (+10…50 % in `outlier_rate` of items), whole
        runs shift by `run_shift_sd`. Memory peaks are fixed per case to within ±1 MiB.
        """
        rng = np.random.default_rng(seed)
        case_ids = tuple(f"case-{i:02d}" for i in range(cases))
        speed = {"bf16": 1.0, "fp16": 0.98, "nf4": 1.35, "int8": 2.1}
        vram = {"bf16": 46 * 2**30, "fp16": 46 * 2**30, "nf4": 17 * 2**30, "int8": 27 * 2**30}
        case_level = np.exp(rng.normal(np.log(6.0), 0.25, size=cases))
        case_images = rng.integers(1, 4, size=cases)
        base_scores = {
            "clip_iqa": rng.normal(0.62, 0.08, cases), "clip_score": rng.normal(0.31, 0.03, cases),
            "ssim": np.clip(rng.normal(0.72, 0.08, cases), 0, 1), "psnr": rng.normal(21.0, 3.0, cases),
        }
        truth: dict[str, dict[str, CaseTruth]] = {}
        for v in variants:
            fidelity = v != (meta.baseline_variant if meta else "bf16")
            per_case: dict[str, CaseTruth] = {}
            for i, case in enumerate(case_ids):
                profile = np.full(steps, 0.9 / steps) * np.exp(rng.normal(0, 0.02, steps))
                metrics = {k: float(vals[i] + (rng.normal(-0.01, 0.01) * (1 if k != "psnr" else 30) if fidelity else 0))
                           for k, vals in base_scores.items()}
                if fidelity:
                    metrics |= {"ssim_vs_baseline": float(np.clip(rng.normal(0.93, 0.02), 0, 1)),
                                "psnr_vs_baseline": float(rng.normal(31.0, 2.0)),
                                "lpips_vs_baseline": float(abs(rng.normal(0.05, 0.015)))}
                mem = int(vram.get(v, 30 * 2**30) + case_images[i] * 0.35 * 2**30 + rng.integers(0, 64) * 2**20)
                per_case[case] = CaseTruth(
                    latency_s=float(case_level[i] * (1 + 0.15 * (case_images[i] - 1)) * speed.get(v, 1.2)),
                    step_fractions=tuple(float(x) for x in profile),
                    memory={"peak_vram_bytes": mem + 600 * 2**20, "peak_vram_process_bytes": mem + 500 * 2**20,
                            "torch_peak_allocated_bytes": mem - 900 * 2**20, "torch_peak_reserved_bytes": mem,
                            "rss_peak_bytes": int(9 * 2**30 + rng.integers(0, 256) * 2**20)},
                    metrics=metrics, statuses=("OK",) * repeats)
            truth[v] = per_case
        pool = rng.normal(0.0, jitter_sd, 20000)
        outliers = rng.random(pool.size) < outlier_rate
        pool[outliers] += np.log1p(rng.uniform(0.10, 0.50, outliers.sum()))
        mem_pool = rng.normal(0.0, 2**20 / (40 * 2**30), 20000)  # ±1 MiB on ~40 GiB: allocator peaks are fixed
        noise = {"clip_iqa": 0.002, "clip_score": 0.0005, "ssim": 0.001, "psnr": 0.05, "ssim_vs_baseline": 0.001,
                 "psnr_vs_baseline": 0.05, "lpips_vs_baseline": 0.0005}
        static = {v: {"weights_bytes": int(vram.get(v, 30 * 2**30) * 0.83), "params": 28_849_460_275} for v in variants}
        meta = meta or RunMeta()
        meta = replace(meta, variant_static=static, generation={"steps": steps}, measurement={"repeats": repeats})
        return cls(variants=tuple(variants), cases=case_ids, repeats=repeats, truth=truth, latency_residuals=pool,
                   memory_residuals=mem_pool, run_shift_sd=run_shift_sd, quality_noise=noise, meta=meta)

    @classmethod
    def fit(cls, run: RunData, *, run_shift_sd: float = 0.01, quality_noise_frac: float | None = None) -> NoiseModel:
        """Fit the model to one real run: per-case levels, the pooled within-case residuals of
        latency and memory (scaled by sqrt(R/(R-1)) so that a residual has the spread of one
        repeat, not of one repeat minus the mean), the per-case scores and the statuses.

        One thing a single run cannot show is a parameter: the run-to-run shift (`run_shift_sd`).
        The re-run noise of a case's score is `quality_noise_frac` x the spread of that score
        between cases; left as None it is read from the run: 0 when every case's repeats produced
        byte-identical images (a deterministic pipeline re-scores identically), else 0.05."""
        variants = tuple(v for v in run.variants if run.records_of(v))
        lat_res: list[float] = []
        mem_res: list[float] = []
        truth: dict[str, dict[str, CaseTruth]] = {}
        repeats = 1
        metric_values: dict[str, list[float]] = {}
        for v in variants:
            per_case: dict[str, CaseTruth] = {}
            for case, recs in sorted(run.cases_of(v).items()):
                recs = sorted(recs, key=lambda r: r.repeat)
                repeats = max(repeats, len(recs))
                ok = [r for r in recs if r.ok and r.latency_s]
                lat = np.array([r.latency_s for r in ok], dtype=float)
                if lat.size >= 2:
                    logs = np.log(lat)
                    lat_res.extend((logs - logs.mean()) * math.sqrt(lat.size / (lat.size - 1)))
                memory: dict[str, int | None] = {}
                for key in MEMORY_FIELDS:
                    vals = np.array([getattr(r, key) for r in ok if getattr(r, key) is not None], dtype=float)
                    memory[key] = int(np.median(vals)) if vals.size else None
                    if vals.size >= 2 and np.median(vals) > 0:
                        rel = vals / np.median(vals) - 1
                        mem_res.extend((rel - rel.mean()) * math.sqrt(vals.size / (vals.size - 1)))
                first = next((r for r in ok if r.step_s), None)
                fractions = (tuple(float(s) / first.latency_s for s in first.step_s or [])  # type: ignore[operator]
                             if first is not None else ())
                scores = {}
                r0 = next((r for r in recs if r.repeat == 0 and r.ok), None)
                if r0 is not None:
                    for name in (r0.metrics or {}):
                        val = r0.metric(name)
                        if val is not None and math.isfinite(val):
                            scores[name] = val
                            metric_values.setdefault(name, []).append(val)
                per_case[case] = CaseTruth(
                    latency_s=float(np.median(lat)) if lat.size else 0.0, step_fractions=fractions, memory=memory,
                    metrics=scores, statuses=tuple(r.status.value for r in recs),
                    output_finite=all(r.output_finite is not False for r in recs),
                    output_constant=any(r.output_constant is True for r in recs))
            truth[v] = per_case
        if not lat_res:
            raise ValueError("the run has no case with two OK repeats: its repeat-to-repeat noise cannot be fitted")
        cases = tuple(sorted({c for per in truth.values() for c in per}))
        env = run.fingerprint.get("environment") or {}
        meta = RunMeta(
            suite_name=(run.fingerprint.get("suite") or {}).get("name", "fitted"),
            suite_fingerprint=(run.fingerprint.get("suite") or {}).get("fingerprint", ""),
            case_set_name=(run.fingerprint.get("case_set") or {}).get("name", ""),
            case_set_fingerprint=(run.fingerprint.get("case_set") or {}).get("fingerprint", ""),
            model=dict(run.fingerprint.get("model") or {}), hardware_class=env.get("hardware_class", ""),
            metric_weights=(run.weights or {}).get("metrics"), baseline_variant=run.baseline_variant,
            gates=dict(run.gates), generation=run.generation, measurement=run.measurement, environment=env,
            variant_static={v: {k: (run.variant_summaries.get(v) or {}).get(k) for k in ("weights_bytes", "params")}
                            for v in variants})
        if quality_noise_frac is None:
            quality_noise_frac = 0.0 if deterministic_outputs(run) else 0.05
        noise = {m: quality_noise_frac * float(np.std(vals)) for m, vals in metric_values.items()}
        return cls(variants=variants, cases=cases, repeats=repeats, truth=truth,
                   latency_residuals=np.asarray(lat_res), memory_residuals=np.asarray(mem_res or [0.0]),
                   run_shift_sd=run_shift_sd, quality_noise=noise, meta=meta)

    @classmethod
    def fit_runs(cls, runs: list[RunData], *, quality_noise_frac: float | None = None) -> NoiseModel:
        """Fit to repeated runs of one suite on one machine: everything `fit` reads from one run
        (per-case levels and the repeat-to-repeat residuals, pooled over all runs), plus the two
        shifts a single run cannot show, measured from the runs' differences.

        Each run r and variant v get a shift u[r, v]: the mean over cases of (the case's mean log
        latency in r - its mean over all runs). Split into a part common to the run, c[r] = mean
        over variants, and the rest, p[r, v] = u[r, v] - c[r] (one worker process per variant), the
        usual two-way ANOVA estimates give sd(p)^2 = sum p^2 / ((R-1)(V-1)) and sd(c)^2 = sum c^2 /
        (R-1) - sd(p)^2 / V. The residuals' own share of u (sd / sqrt(items)) is left in: it is small
        next to either, and leaving it in errs on the side of more noise, not less."""
        if len(runs) < 2:
            raise ValueError("fit_runs needs at least two runs of the same suite")
        models = [cls.fit(r, run_shift_sd=0.0, quality_noise_frac=quality_noise_frac) for r in runs]
        first = models[0]
        variants = tuple(v for v in first.variants if all(v in m.truth for m in models))
        cases = tuple(c for c in first.cases if all(c in m.truth[v] and m.truth[v][c].latency_s > 0
                                                     for m in models for v in variants))
        if len(variants) < 1 or len(cases) < 1:
            raise ValueError("the runs share no variant and case with OK timings")
        logs = np.array([[[math.log(m.truth[v][c].latency_s) for c in cases] for v in variants] for m in models])
        case_mean = logs.mean(axis=0)  # variants x cases, over runs
        u = (logs - case_mean).mean(axis=2)  # runs x variants
        n_runs, n_var = u.shape
        common = u.mean(axis=1)
        part = u - common[:, None]
        var_p = float((part**2).sum() / ((n_runs - 1) * (n_var - 1))) if n_var > 1 else 0.0
        var_c = float((common**2).sum() / (n_runs - 1)) - (var_p / n_var if n_var > 1 else 0.0)
        if n_var == 1:  # one variant: the two cannot be told apart; call it all per-variant
            var_p, var_c = max(var_c, 0.0), 0.0
        # The levels: each case's geometric mean over the runs (the first run's truths otherwise).
        truth = {v: dict(first.truth[v]) for v in first.variants}
        for i, v in enumerate(variants):
            for j, c in enumerate(cases):
                truth[v][c] = replace(truth[v][c], latency_s=float(math.exp(case_mean[i, j])))
        residuals = np.concatenate([m.latency_residuals for m in models])
        memory = np.concatenate([m.memory_residuals for m in models])
        return replace(first, truth=truth, latency_residuals=residuals, memory_residuals=memory,
                       run_shift_sd=math.sqrt(max(var_c, 0.0)), variant_shift_sd=math.sqrt(max(var_p, 0.0)),
                       fitted_from=n_runs)

    # -- sampling ----------------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, *, run_id: str = "sim", latency_factor: Mapping[str, float] | None = None,
               metric_shift: Mapping[tuple[str, str], float | Mapping[str, float]] | None = None,
               memory_factor: Mapping[str, float] | None = None,
               statuses: Mapping[tuple[str, str, int], str] | None = None,
               outputs: Mapping[tuple[str, str, int], str] | None = None,
               drop: set[str] | None = None) -> list[dict[str, Any]]:
        """Records of one simulated run.

        latency_factor: {variant: 1.10} plants a 10 % slowdown; metric_shift: {(variant, metric):
        -0.03} moves every case's score (or {case: shift} only some); memory_factor likewise;
        statuses: {(variant, case, repeat): "OOM"} forces a status; outputs: {(variant, case,
        repeat): "nonfinite" | "constant"} breaks an OK item's image; drop: item keys left out
        (an interrupted run).
        """
        outputs = outputs or {}
        latency_factor, metric_shift = latency_factor or {}, metric_shift or {}
        memory_factor, statuses, drop = memory_factor or {}, statuses or {}, drop or set()
        shift = rng.normal(0.0, self.run_shift_sd) if self.run_shift_sd > 0 else 0.0
        records: list[dict[str, Any]] = []
        for v in self.variants:
            v_shift = shift + (rng.normal(0.0, self.variant_shift_sd) if self.variant_shift_sd > 0 else 0.0)
            for case in self.cases:
                t = self.truth[v].get(case)
                if t is None:
                    continue
                for r in range(len(t.statuses) if t.statuses else self.repeats):
                    key = f"{v}/{case}/{r}"
                    if key in drop:
                        continue
                    status = statuses.get((v, case, r), t.statuses[r] if r < len(t.statuses) else "OK")
                    rec: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "key": key, "variant": v,
                                           "case_id": case, "repeat": r, "attempt": 0, "status": status, "error": None,
                                           "seed": int(hashlib.sha256(case.encode()).hexdigest()[:8], 16)}
                    if status != "OK":
                        rec["error"] = {"OOM": "OutOfMemoryError: CUDA out of memory", "TIMEOUT": "no result within 900 s"}.get(
                            status, "RuntimeError: simulated failure")
                        records.append(rec)
                        continue
                    mult = math.exp(v_shift + float(rng.choice(self.latency_residuals))) * latency_factor.get(v, 1.0)
                    latency = t.latency_s * mult
                    steps = [latency * f * math.exp(float(rng.normal(0, 0.005))) for f in t.step_fractions]
                    rest = max(latency - sum(steps), 0.0)
                    rec.update(latency_s=latency, encode_s=rest * 0.7, denoise_s=sum(steps), decode_s=rest * 0.3,
                               step_s=steps, steps=len(steps),
                               output_finite=t.output_finite and outputs.get((v, case, r)) != "nonfinite",
                               output_constant=t.output_constant or outputs.get((v, case, r)) == "constant",
                               output_sha256="sha256:" + hashlib.sha256(f"{v}/{case}".encode()).hexdigest())
                    for k, level in t.memory.items():
                        rec[k] = (None if level is None else
                                  int(level * (1 + float(rng.choice(self.memory_residuals))) * memory_factor.get(v, 1.0)))
                    if r == 0 and t.metrics:
                        metrics: dict[str, float] = {}
                        for name, value in t.metrics.items():
                            planted = metric_shift.get((v, name), 0.0)
                            if isinstance(planted, Mapping):
                                planted = planted.get(case, 0.0)
                            noisy = value + float(rng.normal(0.0, self.quality_noise.get(name, 0.0))) + float(planted)
                            if name.startswith("ssim"):
                                noisy = min(noisy, 1.0)
                            metrics[name] = noisy
                        rec["metrics"] = metrics
                    records.append(rec)
        return records

    def planned_keys(self) -> list[str]:
        return [f"{v}/{c}/{r}" for v in self.variants for c in self.cases if c in self.truth[v]
                for r in range(len(self.truth[v][c].statuses) or self.repeats)]


# ---------------------------------------------------------------------------------------------
# Writing runs (through qie_bench.results, as the runner does) and building them in memory


def deterministic_outputs(run: RunData) -> bool:
    """Whether every case's OK repeats produced byte-identical images (same output_sha256)."""
    hashes: dict[tuple[str, str], set[str]] = {}
    for v in run.variants:
        for r in run.records_of(v):
            h = (r.model_extra or {}).get("output_sha256")
            if r.ok and h:
                hashes.setdefault((v, r.case_id), set()).add(h)
    return bool(hashes) and all(len(h) == 1 for h in hashes.values())


def _environment(meta: RunMeta) -> dict[str, Any]:
    gpu = meta.hardware_class.removeprefix("gpu:") if meta.hardware_class.startswith("gpu:") else None
    base = {"qie_bench": "0.1.0", "project": {"commit": None, "dirty": None}, "python": "3.11.7",
            "platform": "Linux", "cpu": meta.hardware_class.removeprefix("cpu:") if not gpu else "Intel Xeon",
            "cpu_count": 16, "torch_cuda": "12.8" if gpu else None, "gpu_name": gpu,
            "gpu_memory_bytes": 85_520_809_984 if gpu else None, "driver": "570.124.06" if gpu else None,
            "packages": {"torch": "2.8.0", "diffusers": "0.36.0"}}
    env = {**base, **dict(meta.environment)}
    env["hardware_class"] = meta.hardware_class
    env.setdefault("device", "cuda:0" if gpu else "cpu")
    return env


def run_json(meta: RunMeta, run_id: str, planned: list[str]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "created_at": "2025-09-14T00:00:00.000000Z",
        "command": ["simulate"],
        "suite": {"name": meta.suite_name, "path": f"suites/{meta.suite_name}.toml", "fingerprint": meta.suite_fingerprint},
        "case_set": {"name": meta.case_set_name, "fingerprint": meta.case_set_fingerprint,
                     "cases": len({k.split("/")[1] for k in planned})},
        "model": dict(meta.model), "baseline_variant": meta.baseline_variant,
        "plan": {"suite_fingerprint": meta.suite_fingerprint, "case_set_fingerprint": meta.case_set_fingerprint,
                 "items": planned},
        "environment": _environment(meta),
    }


def build_summary(meta: RunMeta, run_id: str, records: list[dict[str, Any]], planned: list[str],
                  validate: bool = True) -> dict[str, Any]:
    """summary.json for simulated records, by the same builder the runner uses."""
    run = {**run_json(meta, run_id, planned),
           "suite_config": {"gates": dict(meta.gates), "generation": dict(meta.generation),
                            "measurement": dict(meta.measurement)}}
    builds = {v: {**dict(meta.variant_static.get(v) or {}), "build_s": 30.0, "changes": {}, "device": None}
              for v in dict.fromkeys([k.split("/")[0] for k in planned] + [r["variant"] for r in records])}
    recs = validate_records(records, f"simulated records of {run_id}")
    summary = _build_summary(run, recs, builds, finished_at="2025-09-14T01:00:00.000000Z", validate=validate)
    # The simulated environment says what hardware it stands for; no build recorded a device.
    summary["fingerprint"]["environment"] = _environment(meta)
    for s in summary["variants"].values():
        s["build"] = None
    summary["weights"]["metrics"] = meta.metric_weights
    summary["weights"]["note"] = "simulated"
    return summary


def write_run_dir(out: Path, meta: RunMeta, run_id: str, records: list[dict[str, Any]], planned: list[str],
                  *, write_summary: bool = True) -> Path:
    """Write run.json, cases.jsonl (RecordLog, one fsynced line per record) and summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run.json", run_json(meta, run_id, planned))
    log = RecordLog(out / "cases.jsonl")
    try:
        for rec in records:
            log.append(rec)
    finally:
        log.close()
    if write_summary:
        atomic_write_json(out / "summary.json", build_summary(meta, run_id, records, planned))
    return out


def run_data(meta: RunMeta, run_id: str, records: list[dict[str, Any]], planned: list[str], label: str = "simulated",
             validate: bool = True) -> RunData:
    """The `RunData` that `load_run` would give for `write_run_dir(...)`, without the disk.
    `validate=False` skips the summary's jsonschema check (the benchmark's inner loop)."""
    import json

    from qie_bench.results import json_safe

    summary = build_summary(meta, run_id, records, planned, validate=validate)
    # Round-trip through JSON so that inf/nan become strings exactly as on disk.
    recs = json.loads(json.dumps(json_safe(records), allow_nan=False))
    return RunData(label=label, run_id=run_id, fingerprint=summary["fingerprint"], weights=summary["weights"],
                   gates=summary["gates"], baseline_variant=summary["baseline_variant"], variants=list(summary["variants"]),
                   variant_summaries=summary["variants"], records=validate_records(recs, label), planned_keys=list(planned),
                   summary_complete=summary["complete"], generation=summary["generation"], measurement=summary["measurement"])

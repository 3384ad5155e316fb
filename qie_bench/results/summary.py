"""summary.json: per-variant aggregates of a run, built by ONE function from run.json, the records
and the variants' build files, and read back into typed models.

Everything that writes a summary — the orchestrator at the end of a run, `baseline promote` for a
run that was killed before its summary, the gate's noise simulation — calls `build_summary`, so
a baseline and a run are always aggregated the same way.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..errors import UserInputError
from .io import SCHEMA_VERSION, from_json_number, schema_text
from .measures import Family, Measure, measure, measures
from .records import ATTEMPTED, Record, Status, latest_by_key

# What summary.json keeps of a variant's build file.
_BUILD_FIELDS = ("kind", "options", "device", "components", "cuda_context_bytes", "memory_budget_bytes",
                 "allocator_cap_bytes", "context_at_cap_bytes", "offload", "metric_descriptions", "report")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def percentile(values: Sequence[float], q: float) -> float | None:
    # Linear interpolation between closest ranks (numpy's default), documented in the schema.
    return float(np.percentile(values, q)) if values else None


def _statistic(values: list[float], statistic: str) -> float | int | None:
    if not values:
        return None
    if statistic == "max":
        return max(values)
    if statistic == "first":
        return values[0]
    if statistic == "mean":
        return float(np.mean(values))
    return percentile(values, float(statistic.removeprefix("p")))


def _values(records: Sequence[Record], m: Measure) -> list[Any]:
    assert m.field is not None
    out: list[Any] = []
    for r in records:
        v = r.value(m.field)
        if isinstance(v, list):
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


def summarize_variant(records: Sequence[Record], built: Mapping[str, Any] | None,
                      ended: Sequence[Mapping[str, Any]] = (), prices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate one variant's records. Failed items are counted, never silently dropped:
    `status_counts` and `complete` say how many of the planned items the means stand on.
    `ended`: what each worker reported when it finished (GPU state, energy of the timed phase);
    `prices`: the suite's `[cost]` ($/kWh, $/GPU-hour) for the cost per 1,000 edits."""
    counts = Counter(r.status for r in records)
    ok = [r for r in records if r.ok]
    attempts = sum(counts[s] for s in ATTEMPTED)
    out: dict[str, Any] = {"status_counts": {s.value: counts.get(s, 0) for s in Status}, "records": len(records)}
    for m in measures(Family.LATENCY) + measures(Family.MEMORY):
        out[m.key] = _statistic(_values(ok, m), m.statistic or "max")
    built = built or {}
    out.update(
        oom_rate=(counts.get(Status.OOM, 0) / attempts) if attempts else None,
        nonfinite_outputs=sum(1 for r in ok if r.output_finite is False),
        constant_outputs=sum(1 for r in ok if r.output_constant is True),
        weights_bytes=built.get("weights_bytes"),
        params=built.get("params"),
        build_s=built.get("build_s"),
        load_s=built.get("load_s"),
        changes=built.get("changes", {}),
    )
    # Per-variant figures read from records: the first call (a worker's first edit, recorded on
    # whichever record it preceded, OK or not) and the transformer's forwards per OK edit.
    out["first_call_s"] = _statistic(_values(records, measure("first_call_s")), "first")
    for key in ("transformer_forwards", "cache_hits"):
        m = measure(key)
        out[key] = _statistic(_values(ok, m), m.statistic or "mean")
    out.update(_energy_and_cost(out, prices or {}))
    out["gpu"] = _gpu_summary(built, ended)
    # Quality: one value per case (repeat 0; repeats of a seeded edit give the same image).
    metric_values: dict[str, list[float]] = {}
    for r in ok:
        if r.repeat != 0:
            continue
        for name, value in (r.metrics or {}).items():
            if value is not None:
                metric_values.setdefault(name, []).append(from_json_number(value))  # type: ignore[arg-type]
    out["metrics"] = {name: {"mean": float(np.mean(v)), "n": len(v)} for name, v in sorted(metric_values.items())}
    for name, stats in out["metrics"].items():
        out[name] = stats["mean"]
    return out


def _energy_and_cost(s: Mapping[str, Any], prices: Mapping[str, Any]) -> dict[str, Any]:
    """Edits per kWh from the mean energy per edit; the cost of 1,000 edits from the suite's prices
    (energy at $/kWh plus GPU time at $/GPU-hour; either price may be absent, both absent = null)."""
    energy, latency = s.get("energy_j"), s.get("latency_mean_s")
    kwh, gpu_hour = prices.get("usd_per_kwh"), prices.get("usd_per_gpu_hour")
    cost = None
    if (kwh is not None or gpu_hour is not None) and (energy is not None or kwh is None) and latency is not None:
        cost = 1000 * ((energy / 3.6e6 * kwh if kwh is not None else 0.0)
                       + (latency / 3600 * gpu_hour if gpu_hour is not None else 0.0))
    return {"edits_per_kwh": 3.6e6 / energy if energy else None, "cost_per_1000_edits_usd": cost}


def _gpu_summary(built: Mapping[str, Any] | None, ended: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The GPU's state around the variant: power limit at start, throttling and other processes seen
    while measuring, energy of the whole timed phase (to check the per-edit figures against)."""
    start = (built or {}).get("gpu_state_at_start")
    if start is None and not ended:
        return None
    seen = [e.get("throttle_reasons_seen") for e in ended if e.get("throttle_reasons_seen") is not None]

    def total(key: str) -> float | None:
        values = [e.get(key) for e in ended]
        return sum(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]

    others = {p["pid"]: p for e in ended for p in (e.get("other_gpu_processes_seen") or [])}
    others.update({p["pid"]: p for p in ((start or {}).get("other_processes") or [])})
    return {
        "power_limit_w": (start or {}).get("power_limit_w"),
        "throttled": any(e.get("throttled") for e in ended) if ended else None,
        "throttle_reasons_seen": sorted({r for rs in seen for r in rs}) if seen else None,
        "edits_throttled": total("edits_throttled"),
        "other_processes": list(others.values()),
        "timed_edits_energy_j": total("timed_edits_energy_j"),
        "timed_phase_energy_j": total("timed_phase_energy_j"),
        "timed_span_energy_j": total("timed_span_energy_j"),
    }


def variant_order(run: Mapping[str, Any], records: Sequence[Record]) -> list[str]:
    """Variants in plan order (the baseline first), then any that only have records."""
    planned = (run.get("plan") or {}).get("items") or []
    return list(dict.fromkeys([k.split("/", 1)[0] for k in planned] + [r.variant for r in records]))


def build_summary(run: Mapping[str, Any], records: Sequence[Record], builds: Mapping[str, Mapping[str, Any]], *,
                  ended: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                  gates: Mapping[str, Any] | None = None, finished_at: str | None = None,
                  validate: bool = True) -> dict[str, Any]:
    """summary.json from run.json's content, the run's records and each variant's build info.

    The suite settings (generation, measurement, the [gates] table) come from the validated suite
    that run.json keeps; `gates` replaces the table (the gate reads thresholds from the suite in
    force, which may have changed since the run started).
    """
    suite_cfg = run.get("suite_config") or {}
    by_key = latest_by_key(records)
    records = list(by_key.values())
    planned_keys = list((run.get("plan") or {}).get("items") or [])
    planned = set(planned_keys)
    variants: dict[str, Any] = {}
    devices: set[str] = set()
    metric_weights: set[str] = set()
    for v in variant_order(run, records):
        info = builds.get(v)
        if info:
            if info.get("device"):
                devices.add(str(info["device"]))
            if info.get("metric_weights"):
                metric_weights.add(info["metric_weights"])
        s = summarize_variant([r for r in records if r.variant == v], info, (ended or {}).get(v, ()),
                              suite_cfg.get("cost"))
        s["planned"] = sum(1 for k in planned_keys if k.split("/", 1)[0] == v)
        s["complete"] = s["records"] == s["planned"] and s["status_counts"]["OK"] == s["planned"]
        s["build"] = {k: info.get(k) for k in _BUILD_FIELDS if k in info or k != "report"} if info else None
        variants[v] = s
    env = dict(run.get("environment") or {})
    device = next(iter(devices)) if len(devices) == 1 else None
    if device is None and not devices:  # nothing was built (every variant failed): the suite says where
        wanted = (suite_cfg.get("model") or {}).get("device", "auto")
        device = "cuda" if wanted == "cuda" or (wanted == "auto" and env.get("gpu_name")) else "cpu"
    env["hardware_class"] = (f"gpu:{env.get('gpu_name')}" if device and device.startswith("cuda")
                             else f"cpu:{env.get('cpu')}")
    env["device"] = device
    # The power limit decides the clocks a GPU can hold: runs under different limits are different
    # set-ups (the gate refuses to compare them).
    limits = {(b.get("gpu_state_at_start") or {}).get("power_limit_w") for b in builds.values()} - {None}
    env["power_limit_w"] = limits.pop() if len(limits) == 1 else (None if not limits else "mixed")
    model_src = (run.get("model") or {}).get("source")
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run["run_id"],
        "created_at": run.get("created_at"),
        "finished_at": finished_at or utc_now(),
        "complete": planned <= set(by_key),
        "planned_items": len(planned),
        "recorded_items": len(set(by_key) & planned),
        "baseline_variant": run.get("baseline_variant"),
        "weights": {
            "model": "pretrained" if model_src == "pretrained" else f"random ({model_src})",
            "metrics": (metric_weights.pop() if len(metric_weights) == 1 else ("mixed" if metric_weights else None)),
            "note": ("Model weights are RANDOM: memory and speed are real, quality numbers are not."
                     if model_src != "pretrained" else "Real model weights."),
        },
        "fingerprint": {
            "environment": env,
            "model": run.get("model"),
            "suite": run.get("suite"),
            "case_set": run.get("case_set"),
        },
        "gates": dict(gates if gates is not None else (suite_cfg.get("gates") or {})),
        "cost": dict(suite_cfg.get("cost") or {}),
        "generation": dict(suite_cfg.get("generation") or {}),
        "measurement": dict(suite_cfg.get("measurement") or {}),
        "variants": variants,
    }
    if validate:
        check_summary(summary, f"summary of run {run['run_id']}")
    return summary


@functools.lru_cache(maxsize=1)
def _summary_validator() -> Any:
    """A jsonschema validator for summary.schema.json, built once."""
    import jsonschema

    schema = json.loads(schema_text("summary.schema.json"))
    return jsonschema.validators.validator_for(schema)(schema)


def check_summary(summary: Mapping[str, Any], where: str) -> None:
    """jsonschema check of a summary (summary.schema.json), as a one-line UserInputError."""
    error = next(iter(sorted(_summary_validator().iter_errors(summary), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise UserInputError(where, f"does not match the summary schema at {at}: {error.message[:200]}",
                             "it was edited or written by another qie-bench version; re-run")


def validate_summary(summary: Mapping[str, Any]) -> None:
    """Check a summary against `qie_bench/schema/summary.schema.json` (raises UserInputError)."""
    check_summary(summary, "summary")


# ---------------------------------------------------------------------------------------------
# Typed views of a summary (what readers use)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class MetricSummary(_Model):
    mean: float | str | None
    n: int

    @property
    def value(self) -> float | None:
        return from_json_number(self.mean)


class VariantSummary(_Model):
    """One variant's aggregates; metric means are also top-level extra keys (`summary[name]`)."""

    status_counts: dict[str, int]
    records: int
    planned: int
    complete: bool
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_mean_s: float | None = None
    step_p50_s: float | None = None
    step_p95_s: float | None = None
    peak_vram_bytes: int | None = None
    peak_vram_process_bytes: int | None = None
    torch_peak_allocated_bytes: int | None = None
    torch_peak_reserved_bytes: int | None = None
    rss_peak_bytes: int | None = None
    oom_rate: float | None = None
    nonfinite_outputs: int = 0
    constant_outputs: int = 0
    weights_bytes: int | None = None
    params: int | None = None
    build_s: float | None = None
    load_s: float | None = None
    first_call_s: float | None = None
    transformer_forwards: float | None = None
    cache_hits: float | None = None
    changes: dict[str, Any] = {}
    metrics: dict[str, MetricSummary] = {}
    build: dict[str, Any] | None = None

    def get(self, key: str) -> float | None:
        """A measure or a metric mean by key, as a float (None when absent)."""
        if key in self.metrics:
            return self.metrics[key].value
        v = getattr(self, key, None) if key in type(self).model_fields else (self.model_extra or {}).get(key)
        return None if v is None or isinstance(v, (dict, list, bool)) else from_json_number(v)

    @property
    def metric_descriptions(self) -> dict[str, Any]:
        return dict((self.build or {}).get("metric_descriptions") or {})


class Fingerprint(_Model):
    environment: dict[str, Any]
    model: dict[str, Any]
    suite: dict[str, Any]
    case_set: dict[str, Any]

    @property
    def hardware_class(self) -> str | None:
        return self.environment.get("hardware_class")


class RunSummary(_Model):
    schema_version: int
    run_id: str
    created_at: str | None = None
    finished_at: str | None = None
    complete: bool
    planned_items: int = 0
    recorded_items: int = 0
    baseline_variant: str | None = None
    weights: dict[str, Any]
    fingerprint: Fingerprint
    gates: dict[str, Any] = {}
    generation: dict[str, Any] = {}
    measurement: dict[str, Any] = {}
    variants: dict[str, VariantSummary]

    @property
    def model_source(self) -> str:
        return str(self.fingerprint.model.get("source", "?"))

    @property
    def random_model(self) -> bool:
        return self.model_source != "pretrained"

    @property
    def metric_weights(self) -> str | None:
        return self.weights.get("metrics")

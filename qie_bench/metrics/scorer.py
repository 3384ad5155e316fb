"""``Scorer``: builds the configured metrics once, then scores outputs one by one or in batches.

Used by the runner (every OK output image) and by ``qie-bench score``::

    scorer = Scorer(MetricsConfig(weights="random"))
    values = scorer.score(ScoreInputs(output=out, source=src, baseline_output=base, mask=mask, caption=text))
    # {"clip_iqa": 0.51, "ssim": 0.83, ..., "clip_score": 23.0}; None where a reference is missing

Values are plain floats (``inf`` for the PSNR of identical pixels) or ``None``;
:meth:`Scorer.score_detailed` also gives the reason for each ``None`` and notes such as a resize.
Write them to JSON through :func:`qie_bench.metrics.to_json_value`.

Missing real weights are an error by default. ``missing_weights="skip"`` (what ``qie-bench
score`` uses when no metric was named) leaves out the metrics whose model files are missing:
their values are ``None`` with the reason, and :attr:`Scorer.skipped` says which and why. A
metric named explicitly is never skipped, and nothing falls back to random weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import torch

from .base import Metric, MetricResult
from .config import MetricsConfig
from .prepared import Prepared, ScoreInputs
from .registry import REGISTRY
from .weights import ModelSpec, ModelStore

__all__ = ["MetricResult", "ScoreInputs", "Scorer"]


class Scorer:
    """The configured metrics, with their models loaded once.

    ``weights_kind`` (``"real"`` or ``"random"``) must be recorded with every score set.
    Construction with ``weights="real"`` raises :class:`~qie_bench.errors.UserInputError` listing
    every missing weight file before building anything, unless ``missing_weights="skip"`` and the
    config's metric list is the default one (``config.names_given`` is False): then the metrics
    whose files are missing are left out and listed in :attr:`skipped` (name -> reason).
    """

    def __init__(self, config: MetricsConfig, *, missing_weights: Literal["error", "skip"] = "error") -> None:
        started = time.perf_counter()
        self.config = config
        self.weights_kind: str = config.weights
        self.device = torch.device(config.device)
        classes = [REGISTRY.get(name) for name in config.names]
        locations = {key: getattr(config, key) for cls in classes
                     if cls.model is not None and (key := cls.model.config_key) is not None}
        store = ModelStore(config.weights, config.weights_dir, config.device, config.random_seed, locations)
        needs: dict[ModelSpec, list[str]] = {}
        for cls in classes:
            if cls.model is not None:
                needs.setdefault(cls.model, []).append(cls.name)
        missing = store.locate_all(needs)
        self.skipped: dict[str, str] = {}
        if missing and (missing_weights == "error" or config.names_given):
            raise store.missing_error(missing)
        for spec, message in missing.items():
            for name in needs[spec]:
                self.skipped[name] = f"real weights not found: {message}"
        self.metrics: list[Metric] = [
            cls(store.get(cls.model) if cls.model is not None else None) for cls in classes if cls.name not in self.skipped
        ]
        self.build_seconds = time.perf_counter() - started

    @property
    def names(self) -> tuple[str, ...]:
        """The metrics computed (the configured ones less :attr:`skipped`)."""
        return tuple(metric.name for metric in self.metrics)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per metric: direction, range, reference, region, library, version, backbone, weights, …"""
        return {metric.name: metric.describe() for metric in self.metrics}

    def score(self, inputs: ScoreInputs) -> dict[str, float | None]:
        """All configured metrics for one output."""
        return self.score_many([inputs])[0]

    def score_many(self, batch: Sequence[ScoreInputs]) -> list[dict[str, float | None]]:
        """All configured metrics for several outputs; model-based metrics run on stacked batches."""
        return [{name: result.value for name, result in row.items()} for row in self.score_many_detailed(batch)]

    def score_detailed(self, inputs: ScoreInputs) -> tuple[dict[str, MetricResult], list[str]]:
        """Like :meth:`score`, with the reason for every ``None`` and notes (e.g. a resize)."""
        results, notes = self._run([inputs])
        return results[0], notes[0]

    def score_with_details(self, inputs: ScoreInputs) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
        """``(values, details)`` for one output: a record's ``metrics`` and ``metric_details``
        (the latter only for metrics that give a detail, e.g. the text OCR recognised)."""
        results = self.score_many_detailed([inputs])[0]
        return ({name: r.value for name, r in results.items()},
                {name: r.detail for name, r in results.items() if r.detail is not None})

    def score_many_detailed(self, batch: Sequence[ScoreInputs]) -> list[dict[str, MetricResult]]:
        """Like :meth:`score_many`, keeping each value's :class:`MetricResult` (value + reason)."""
        return self._run(batch)[0]

    def _run(self, batch: Sequence[ScoreInputs]) -> tuple[list[dict[str, MetricResult]], list[list[str]]]:
        prepared = [Prepared(inputs, self.device) for inputs in batch]  # validates masks up front
        rows: list[dict[str, MetricResult]] = [{} for _ in prepared]
        metrics = {metric.name: metric for metric in self.metrics}
        with torch.inference_mode():
            for name in self.config.names:  # the configured order, skipped metrics in their place
                if name in metrics:
                    results = metrics[name](prepared)
                else:
                    results = [MetricResult(None, self.skipped[name]) for _ in prepared]
                for row, result in zip(rows, results, strict=True):
                    row[name] = result
        return rows, [item.notes for item in prepared]

"""``Scorer``: builds the configured metrics once, then scores outputs one by one or in batches.

Used by the runner (every OK output image) and by ``qie-bench score``::

    scorer = Scorer(MetricsConfig(weights="random"))
    values = scorer.score(ScoreInputs(output=out, source=src, baseline_output=base, mask=mask, caption=text))
    # {"clip_iqa": 0.51, "ssim": 0.83, ..., "clip_score": 23.0}; None where a reference is missing

Values are plain floats (``inf`` for the PSNR of identical pixels) or ``None``;
:meth:`Scorer.score_detailed` also gives the reason for each ``None`` and notes such as a resize.
Write them to JSON through :func:`qie_bench.metrics.to_json_value`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from .base import Metric, MetricResult, Prepared, ScoreInputs
from .config import MetricsConfig
from .registry import REGISTRY
from .weights import ModelStore

__all__ = ["MetricResult", "ScoreInputs", "Scorer"]


class Scorer:
    """The configured metrics, with their models loaded once.

    ``weights_kind`` (``"real"`` or ``"random"``) must be recorded with every score set.
    Construction with ``weights="real"`` raises :class:`~qie_bench.errors.UserInputError` listing
    every missing weight file before building anything.
    """

    def __init__(self, config: MetricsConfig) -> None:
        started = time.perf_counter()
        self.config = config
        self.weights_kind: str = config.weights
        self.device = torch.device(config.device)
        classes = [REGISTRY.get(name) for name in config.names]
        store = ModelStore(config.weights, config.weights_dir, config.device, config.random_seed)
        needs: dict[str, list[str]] = {}
        for cls in classes:
            if cls.model_key is not None:
                needs.setdefault(cls.model_key, []).append(cls.name)
        store.preflight(needs)
        self.metrics: list[Metric] = [cls(store.get(cls.model_key) if cls.model_key else None) for cls in classes]
        self.build_seconds = time.perf_counter() - started

    @property
    def names(self) -> tuple[str, ...]:
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
        with torch.inference_mode():
            for metric in self.metrics:
                for row, result in zip(rows, metric(prepared), strict=True):
                    row[metric.name] = result
        return rows, [item.notes for item in prepared]

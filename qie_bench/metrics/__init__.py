"""Image-quality metrics: every OK output of a run is scored; ``qie-bench score`` scores files.

Each metric is a pure function over tensors plus a small registered class that says what the
number means (direction, range, reference, convention, fidelity rank, the weights it needs),
one module per metric family in :mod:`qie_bench.metrics.catalog`. Public entry points::

    from qie_bench.metrics import MetricsConfig, Scorer, ScoreInputs, to_json_value

Attributes are imported lazily so that importing the package (the CLI does, for every command)
does not import torch, torchmetrics, pyiqa or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetricsConfig": "qie_bench.metrics.config",
    "Scorer": "qie_bench.metrics.scorer",
    "ScoreInputs": "qie_bench.metrics.prepared",
    "MetricResult": "qie_bench.metrics.base",
    "Reference": "qie_bench.metrics.base",
    "to_json_value": "qie_bench.metrics.base",
    "from_json_value": "qie_bench.metrics.base",
    "REGISTRY": "qie_bench.metrics.registry",
    "register_metric": "qie_bench.metrics.registry",
    "load_image": "qie_bench.metrics.images",
    "load_mask": "qie_bench.metrics.images",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qie_bench.metrics' has no attribute {name!r}")

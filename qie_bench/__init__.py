"""qie-bench: does a compressed Qwen-Image-Edit-2509 variant still deserve to ship?

Data flows one way: suite (suite.py, plan.py) -> cases (cases.py) x variants (variants/) -> runner
(runner/) -> records and summaries (results/) -> score (metrics/) -> gate (gate/) and reports
(report/). The Python API (api.py) is exported here::

    import qie_bench
    result = qie_bench.run(qie_bench.load_suite("suites/smoke.toml"), out="runs/api")

Names are imported on first use, so `import qie_bench` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {"load_suite", "run", "score", "gate", "RunResult"}
__all__ = sorted(_API | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("qie_bench.api"), name)
    raise AttributeError(f"module 'qie_bench' has no attribute {name!r}")

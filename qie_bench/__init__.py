"""qie-bench: does a compressed Qwen-Image-Edit-2509 variant still deserve to ship?

Data flows one way: suite (suite.py) -> cases (cases.py) x variants (variants/) -> runner
(runner/) -> records (results.py) -> gate (gate.py) and reports (report/).
"""

__version__ = "0.1.0"

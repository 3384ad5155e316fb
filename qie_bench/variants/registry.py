"""The build side of every kind: importing this module registers each in `VARIANTS`."""

from . import compose, distill, dtype, fp8, gguf, prune, quantize  # noqa: F401  (each registers its kind)
from .base import VARIANTS

__all__ = ["VARIANTS"]

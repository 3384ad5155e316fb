"""The build side of every kind: importing this module registers each in `VARIANTS`."""

from .base import VARIANTS
from .compose import ComposeVariant
from .distill import DistilledVariant
from .dtype import DtypeVariant
from .fp8 import Fp8Variant
from .gguf import GGUFVariant
from .prune import PrunedVariant
from .quantize import Int8Variant, NF4Variant

# Each import above registers its kind; the names say which class builds which.
BUILDERS = (ComposeVariant, DistilledVariant, DtypeVariant, Fp8Variant, GGUFVariant, Int8Variant, NF4Variant, PrunedVariant)

__all__ = ["BUILDERS", "VARIANTS"]

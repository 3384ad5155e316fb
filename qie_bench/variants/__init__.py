"""Compression variants. To add one: a module here with one `Variant` subclass decorated with
`@VARIANTS.register`, and its import below."""

from .base import VARIANTS, Variant, VariantOptions, VariantReport  # noqa: F401
from . import dtype  # noqa: F401,E402  (registers "dtype")
from . import quantize  # noqa: F401,E402  (registers "int8", "nf4")
from . import compose  # noqa: F401,E402  (registers "compose")
from . import prune  # noqa: F401,E402  (registers "pruned")
from . import distill  # noqa: F401,E402  (registers "distilled")

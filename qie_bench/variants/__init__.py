"""Compression variants.

Light (no torch): `options` — every kind's options and the `OPTIONS` registry that validates a
suite, and `RuntimeOptions` (compile, attention backend, step cache: how any variant runs); `report`
— the typed `VariantReport` a build records. Heavy (torch, diffusers): each
kind's build module and the `VARIANTS` registry (`registry.py`), and `runtime.py` (applies
`RuntimeOptions` to a built variant), imported only by the worker
(and loaded here on first use of `VARIANTS`, `Variant` or `DTYPES`).

To add a kind: an options class in `options.py` (`@OPTIONS.register("kind")`), a module here
with one `Variant` subclass (`Options = ThatOptions`, `@VARIANTS.register`), and its import in
`registry.py`.
"""

from __future__ import annotations

from typing import Any

from .options import OPTIONS, VariantOptions  # noqa: F401

_HEAVY = {"VARIANTS", "Variant", "DTYPES", "VariantRegistry"}


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        from . import base, registry  # noqa: F401  (registry imports every kind's build module)

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

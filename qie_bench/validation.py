"""Turn a pydantic validation error into the parts of a one-line UserInputError:
where (the dotted key), what is wrong, and how to fix it (with did-you-mean for typos)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from .errors import did_you_mean


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names accepted at `loc` (the parent of the offending key), for did-you-mean hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe_validation_error(err: dict[str, Any], model: type[BaseModel], raw: dict[str, Any] | None = None) -> tuple[str, str, str | None]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = _format_loc(loc)
    # Name the variant by its `name`, not only by index: "variants[2] ('nf4-all')".
    if loc and loc[0] == "variants" and len(loc) > 1 and isinstance(loc[1], int):
        try:
            key = key.replace(f"variants[{loc[1]}]", f"variants[{loc[1]}] ('{(raw or {})['variants'][loc[1]]['name']}')", 1)
        except (KeyError, IndexError, TypeError):
            pass
    kind = err["type"]
    if kind == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _allowed_keys(model, loc[:-1]))
        allowed = ", ".join(_allowed_keys(model, loc[:-1]))
        return key, "unknown key", hint or (f"allowed keys: {allowed}" if allowed else None)
    if kind == "missing":
        return key, "missing required key", None
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        got = err.get("input")
        hint = did_you_mean(str(got), re.findall(r"'([^']*)'", expected))
        return key, f"'{got}' is not allowed", (hint + " " if hint else "") + f"allowed: {expected}"
    msg = err["msg"].removeprefix("Value error, ")
    return key, msg[0].lower() + msg[1:] if msg else msg, None

"""How a variant's `apply(loaded)` reaches the suite it is built for.

Depth pruning by measured importance, recovery training and `train_if_missing` students need
the suite's case set and generation settings; the `Variant.apply(loaded)` contract passes only
the loaded pipeline. The builder states the suite explicitly::

    with building_for(suite):
        report = variant.apply(loaded)

(the runner's worker, `qie-bench distill` and the tests do this).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError


@dataclass(frozen=True)
class BuildContext:
    """The suite a variant is built for and its case set (with the suite's selection applied)."""

    suite: Any  # qie_bench.suite.Suite
    case_set: Any  # qie_bench.cases.CaseSet

    @classmethod
    def from_suite(cls, suite: Any) -> BuildContext:
        from ..cases import load_case_set

        case_set = load_case_set(suite.case_set_dir(), max_image_pixels=suite.cases.max_image_pixels)
        if suite.cases.select:
            case_set = case_set.select(suite.cases.select)
        return cls(suite, case_set)

    @property
    def generation(self) -> Any:
        return self.suite.generation


_CURRENT: contextvars.ContextVar[BuildContext | None] = contextvars.ContextVar("qie_bench_build_context", default=None)


@contextlib.contextmanager
def building_for(suite_or_context: Any) -> Iterator[BuildContext]:
    """Make `suite` (or a ready `BuildContext`) the one variants are built for, in this block."""
    ctx = suite_or_context if isinstance(suite_or_context, BuildContext) else BuildContext.from_suite(suite_or_context)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def current(where: str, why: str) -> BuildContext:
    """The suite being built for, or a one-line UserInputError naming `where` and saying `why`
    the variant needs it."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise UserInputError(
            where,
            f"{why} needs the suite's case set, and this variant is being built outside a suite",
            "build it with `with qie_bench.distill.context.building_for(suite): variant.apply(loaded)`",
        )
    return ctx

"""Which executor runs a plan's units: `local` (the default) or `ray`, by name, with their options.
Ray is imported only when it is asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .executors import Executor, LocalExecutor


def _local(**options: Any) -> Executor:
    from ..errors import UserInputError

    if options:
        raise UserInputError("--executor local", f"takes no {', '.join(sorted(options))}", "use --executor ray")
    return LocalExecutor()


def _ray(**options: Any) -> Executor:
    from .ray_executor import RayExecutor  # Ray is imported only here, only when asked for

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": _local, "ray": _ray}


def make_executor(kind: str = "local", **options: Any) -> Executor:
    """The executor called `kind` (a key of `EXECUTORS`); `options` go to its constructor."""
    from ..errors import UserInputError, did_you_mean

    if kind not in EXECUTORS:
        raise UserInputError("--executor", f"unknown executor '{kind}'", did_you_mean(kind, list(EXECUTORS))
                             or f"choose {' or '.join(EXECUTORS)}")
    return EXECUTORS[kind](**options)

"""The metric registry: name -> :class:`~qie_bench.metrics.base.Metric` subclass.

Modelled on pyiqa's registry: registering a second class under a taken name is an error (two
metrics silently sharing a record key would corrupt results), and looking up an unknown name
suggests the closest known one.

The built-in metric modules are imported on first lookup, not when this module is imported, so
``qie-bench --help`` and config parsing that never touches metrics stay fast.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

from ..errors import UserInputError, did_you_mean

if TYPE_CHECKING:
    from .base import Metric

M = TypeVar("M", bound="type[Metric]")

# This order (then registration order within a module) is the default order of
# `MetricsConfig.names` and of printed tables.
BUILTIN_MODULES = (
    "qie_bench.metrics.clip_iqa",
    "qie_bench.metrics.ssim",
    "qie_bench.metrics.psnr",
    "qie_bench.metrics.lpips",
    "qie_bench.metrics.clip_score",
    "qie_bench.metrics.text_accuracy",
    "qie_bench.metrics.locality",
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownMetricError(UserInputError, ValueError):
    """An unknown metric name. A ValueError too, so pydantic validators report it as a field error."""


class MetricRegistry:
    """Maps metric names to classes; rejects duplicates; suggests close names for typos."""

    def __init__(self, builtin_modules: tuple[str, ...] = ()) -> None:
        self._classes: dict[str, type[Metric]] = {}
        self._order: dict[str, tuple[int, int]] = {}  # name -> (module rank, registration number)
        self._builtin_modules = builtin_modules
        self._loaded = not builtin_modules

    def register(self, cls: M) -> M:
        """Class decorator: add ``cls`` under ``cls.name``.

        Raises ValueError for a malformed name or a name already taken by another class. The
        same class re-registered (its module was reloaded) replaces the old entry.
        """
        name = cls.name
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} must be lower_snake_case")
        existing = self._classes.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"metric name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
                f"cannot register {cls.__module__}.{cls.__qualname__} under the same name"
            )
        self._classes[name] = cls
        module = cls.__module__
        rank = self._builtin_modules.index(module) if module in self._builtin_modules else len(self._builtin_modules)
        self._order.setdefault(name, (rank, len(self._order)))
        return cls

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the modules call register() while importing
            for module in self._builtin_modules:
                importlib.import_module(module)

    def names(self) -> tuple[str, ...]:
        """All registered names: built-in modules in ``BUILTIN_MODULES`` order, then the rest.

        The order does not depend on which metric module happened to be imported first.
        """
        self._ensure_loaded()
        return tuple(sorted(self._classes, key=self._order.__getitem__))

    def get(self, name: str) -> type[Metric]:
        """The class registered under ``name``; :class:`UnknownMetricError` with a hint otherwise."""
        self._ensure_loaded()
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownMetricError(f"metric '{name}'", "unknown metric", self._hint(name)) from None

    def _hint(self, name: str) -> str:
        """difflib's closest name; else names containing the word (``lpips`` -> ``lpips_vs_baseline``,
        too short a match for difflib); else the full list."""
        close = did_you_mean(name, self._classes)
        if close:
            return close
        containing = [known for known in self.names() if name and name.lower() in known]
        if len(containing) == 1:
            return f"did you mean '{containing[0]}'?"
        if containing:
            return f"did you mean one of: {', '.join(containing)}?"
        return f"known metrics: {', '.join(self.names())}"

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


REGISTRY = MetricRegistry(BUILTIN_MODULES)
register_metric = REGISTRY.register

"""The metric registry: name -> :class:`~qie_bench.metrics.base.Metric` subclass.

Modelled on pyiqa's registry: registering a second class under a taken name is an error (two
metrics silently sharing a record key would corrupt results), and looking up an unknown name
suggests the closest known one.

The metrics are the modules of :mod:`qie_bench.metrics.catalog`, discovered with ``pkgutil`` and
imported on first lookup (not when this module is imported), so adding a metric is adding one
module there. Those modules import torch only inside their functions: listing names and reading
declarations imports no torch.

Default order (``MetricsConfig.names``, printed tables, the keys of every record): by each
class's declared ``order``, then module name, then registration order within a module. It never
depends on which module happened to be imported first.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

from ..errors import UserInputError, did_you_mean

if TYPE_CHECKING:
    from .base import Direction, Metric

M = TypeVar("M", bound="type[Metric]")

CATALOG = "qie_bench.metrics.catalog"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownMetricError(UserInputError, ValueError):
    """An unknown metric name. A ValueError too, so pydantic validators report it as a field error."""


class MetricRegistry:
    """Maps metric names to classes; rejects duplicates; suggests close names for typos."""

    def __init__(self, package: str | None = None) -> None:
        self._classes: dict[str, type[Metric]] = {}
        self._registered: dict[str, int] = {}  # name -> registration number
        self._package = package
        self._loaded = package is None

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
        self._registered.setdefault(name, len(self._registered))
        return cls

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the modules call register() while importing
            package = importlib.import_module(self._package)  # type: ignore[arg-type]
            for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
                importlib.import_module(f"{self._package}.{module}")

    def _sort_key(self, name: str) -> tuple[int, str, int]:
        cls = self._classes[name]
        return (cls.order, cls.__module__, self._registered[name])

    def names(self) -> tuple[str, ...]:
        """All registered names in the default order (declared ``order``, module, registration)."""
        self._ensure_loaded()
        return tuple(sorted(self._classes, key=self._sort_key))

    def classes(self) -> tuple[type[Metric], ...]:
        """The registered classes, in :meth:`names` order."""
        return tuple(self._classes[name] for name in self.names())

    def fidelity_order(self) -> tuple[str, ...]:
        """Names of the metrics that declare a ``fidelity_rank``, best-preferred first (the
        report sorts its gallery and chooses its Pareto axis by this)."""
        ranked = [cls for cls in self.classes() if cls.fidelity_rank is not None]
        return tuple(cls.name for cls in sorted(ranked, key=lambda cls: cls.fidelity_rank))  # type: ignore[arg-type, return-value]

    def direction(self, name: str) -> Direction | None:
        """``"higher"``/``"lower"`` as the metric declares it, None for a name not registered."""
        self._ensure_loaded()
        cls = self._classes.get(name)
        return None if cls is None else cls.direction

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


REGISTRY = MetricRegistry(CATALOG)
register_metric = REGISTRY.register

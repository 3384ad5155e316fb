"""A suite and the choices of one invocation (variant and case subsets, budget, offload, size)
turned into a validated plan: which items run, in which order.

Both the command line (`qie-bench run`) and the Python API (`qie_bench.run`) come through here, so
an override is checked the same way whichever way it was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .cases import CaseSet, load_case_set
from .errors import UserInputError, did_you_mean
from .results import item_key
from .suite import CostConfig, GenerationConfig, MeasurementConfig, Suite


@dataclass(frozen=True)
class Overrides:
    """What one invocation changes in a suite. None = the suite's own setting.

    `variants` keeps only those (plus the baseline variant, unless `without_baseline`): fidelity
    metrics need the baseline's outputs. Budget, offload and size enter the suite fingerprint:
    a run under a budget or at another size is not comparable to one without.
    """

    variants: tuple[str, ...] | None = None
    cases: tuple[str, ...] | None = None
    without_baseline: bool = False
    memory_budget: str | int | None = None
    offload: str | None = None
    size: str | tuple[int, int] | None = None
    usd_per_kwh: float | None = None
    usd_per_gpu_hour: float | None = None


def _split(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items if str(v).strip())


def apply_overrides(suite: Suite, o: Overrides, *, where: dict[str, str] | None = None) -> Suite:
    """`suite` with the invocation's choices applied and checked by the suite's own rules.
    `where` names each option for error messages (the CLI passes its flags)."""
    names = {"variants": "variants", "cases": "cases", "memory_budget": "memory_budget", "offload": "offload",
             "size": "size", **(where or {})}
    wanted = _split(o.variants)
    if wanted is not None:
        known = [v.name for v in suite.variants]
        for w in wanted:
            if w not in known:
                raise UserInputError(names["variants"], f"no variant named '{w}' in suite '{suite.name}'",
                                     did_you_mean(w, known) or f"variants are: {', '.join(known)}")
        keep = list(wanted)
        if suite.baseline_variant and suite.baseline_variant not in keep:
            if o.without_baseline:
                suite = suite.model_copy(update={"baseline_variant": None})
            else:
                keep.insert(0, suite.baseline_variant)  # fidelity metrics need the baseline's outputs
        suite = suite.model_copy(update={"variants": tuple(v for v in suite.variants if v.name in keep)})
    selected = _split(o.cases)
    if selected:
        suite = suite.model_copy(update={"cases": suite.cases.model_copy(update={"select": selected})})
    prices = {k: v for k, v in (("usd_per_kwh", o.usd_per_kwh), ("usd_per_gpu_hour", o.usd_per_gpu_hour)) if v is not None}
    if prices:  # prices are policy: they change the cost shown, not the fingerprint
        try:
            cost = CostConfig.model_validate({**suite.cost.model_dump(), **prices})
        except ValidationError as err:
            problem = err.errors()[0]
            field = str(problem["loc"][0])
            raise UserInputError(names.get(field, field), problem["msg"]) from None
        suite = suite.model_copy(update={"cost": cost})
    measurement: dict[str, Any] = {}
    if o.memory_budget is not None:
        measurement["memory_budget"] = o.memory_budget
    if o.offload is not None:
        measurement["offload"] = o.offload
    generation: dict[str, Any] = {}
    if o.size is not None:
        if isinstance(o.size, str):
            m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", o.size)
            if not m:
                raise UserInputError(names["size"], f"'{o.size}' is not WIDTHxHEIGHT in pixels", "e.g. 512x512")
            generation = {"width": int(m.group(1)), "height": int(m.group(2))}
        else:
            generation = {"width": int(o.size[0]), "height": int(o.size[1])}
        if suite.generation.area is not None:  # one size for every case replaces the suite's area
            generation["area"] = None
    if measurement or generation:
        # Re-validated by the sections' own rules (model_copy would not check them).
        for section, cls, values, key in (("measurement", MeasurementConfig, measurement, None),
                                          ("generation", GenerationConfig, generation, "size")):
            if not values:
                continue
            try:
                validated = cls.model_validate({**getattr(suite, section).model_dump(), **values})
            except ValidationError as err:
                problem = err.errors()[0]
                field = str(problem["loc"][0]) if problem["loc"] else section
                raise UserInputError(names[key or field], f"{field} {problem['msg'].removeprefix('Value error, ')}") from None
            suite = suite.model_copy(update={section: validated})
        suite = suite.model_copy(update={"cli_overrides": {"measurement": measurement, "generation": generation}})
    return suite
@dataclass(frozen=True)
class Item:
    variant: str
    case_id: str
    repeat: int
    turn: int | None = None  # a chained case's turn (1-based); its key is "<variant>/<case>@t<k>/<repeat>"

    @property
    def key(self) -> str:
        return item_key(self.variant, self.case_id if self.turn is None else f"{self.case_id}@t{self.turn}", self.repeat)

    def spec(self) -> list[Any]:
        """What the worker receives for this item."""
        return [self.case_id, self.repeat] if self.turn is None else [self.case_id, self.repeat, self.turn]


@dataclass
class RunPlan:
    suite: Suite
    case_set: CaseSet
    variants: list[str]
    items: dict[str, list[Item]]

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.items.values())

    def identity(self) -> dict[str, Any]:
        """What a resumed run must match."""
        return {"suite_fingerprint": self.suite.fingerprint(), "case_set_fingerprint": self.case_set.fingerprint,
                "items": [i.key for v in self.variants for i in self.items[v]]}


def make_plan(suite: Suite) -> RunPlan:
    case_set = load_case_set(suite.case_set_dir(), max_image_pixels=suite.cases.max_image_pixels)
    if suite.cases.select:
        case_set = case_set.select(suite.cases.select)
    names = [v.name for v in suite.variants]
    # The baseline's outputs are the fidelity reference for every other variant: it runs first.
    if suite.baseline_variant:
        names.remove(suite.baseline_variant)
        names.insert(0, suite.baseline_variant)
    # A chain's turns run in order (each reads the previous turn's output), all repeats of a turn
    # before the next turn, so a run stopped between turns resumes at the next one.
    items = {v: [Item(v, c.id, r, t) for c in case_set.cases for t in (range(1, len(c.turns) + 1) if c.is_chain else (None,))
                 for r in range(suite.measurement.repeats)] for v in names}
    return RunPlan(suite, case_set, names, items)



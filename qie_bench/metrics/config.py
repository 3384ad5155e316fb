"""``MetricsConfig``: which metrics run, with which weights, on which device.

This is the ``[metrics]`` table of a suite file and what ``qie-bench score`` builds from its flags.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .registry import REGISTRY

# torch.device's grammar, checked without importing torch: "<type>" or "<type>:<index>" where
# <type> is one of torch's device types (c10/core/DeviceType.cpp). The tests compare this with
# torch.device itself.
DEVICE_TYPES = (
    "cpu", "cuda", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia", "xla", "lazy", "vulkan",
    "mps", "meta", "hpu", "mtia", "xpu", "ipu", "privateuseone",
)
_DEVICE = re.compile(rf"^(?:{'|'.join(DEVICE_TYPES)})(?::(?:0|[1-9][0-9]*))?$")


def default_metric_names() -> tuple[str, ...]:
    """Every registered metric that is on by default (a VLM judge is only run when named), in
    the registry's order."""
    return tuple(cls.name for cls in REGISTRY.classes() if cls.default_on)


class MetricsConfig(BaseModel):
    """Metric selection and model settings.

    ``names``        metrics to compute (default: all registered); unknown names fail with a
                     did-you-mean hint. A comma-separated string is accepted too.
    ``weights``      ``"real"`` pretrained weights from ``weights_dir`` or the libraries' caches
                     (missing files are an error, never downloaded), or ``"random"``: small
                     seeded models of the same classes, for plumbing tests; scores then mean
                     nothing and every score set says so.
    ``weights_dir``  extra folder searched first for real weights (layout: see ``weights.py``).
    ``device``       where metric models run; ``"cpu"`` by default so they never compete with
                     the model under test for GPU memory or time. Validated without torch.
    ``random_seed``  seed of the random-weight models.
    ``judge``        the VLM judge's weights (``judge_*`` metrics): a local Qwen2.5-VL-Instruct
                     directory, or a Qwen-Image-Edit checkpoint (directory or Hugging Face id in
                     the local cache) whose ``text_encoder/`` is one. Never downloaded. Unset in a
                     run of a ``pretrained`` model: that model's own text encoder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: tuple[str, ...] = Field(default_factory=default_metric_names)
    weights: Literal["real", "random"] = "real"
    weights_dir: str | None = None
    device: str = "cpu"
    random_seed: int = Field(default=0, ge=0)
    judge: str | None = None

    @field_validator("names", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("names")
    @classmethod
    def _known_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("at least one metric is needed")
        for name in names:
            REGISTRY.get(name)  # UnknownMetricError is a ValueError: pydantic reports it with the hint
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metric listed twice: {', '.join(duplicates)}")
        return names

    @property
    def names_given(self) -> bool:
        """Whether the metric list was named (a suite's ``[metrics] names``, ``--metrics``)
        rather than left to the default (every registered metric)."""
        return "names" in self.model_fields_set

    @field_validator("device")
    @classmethod
    def _valid_device(cls, device: str) -> str:
        if not _DEVICE.match(device):
            raise ValueError(f"not a torch device: {device!r} (expected e.g. 'cpu', 'cuda' or 'cuda:1')")
        return device

"""The words a metric declaration is made of: which way is better, what the output is compared
against, which pixels count. No torch, no PIL: declarations, the scorer's inputs and the gate
all read these."""

from __future__ import annotations

from enum import Enum
from typing import Literal

Direction = Literal["higher", "lower"]
# "inside_and_outside_mask": the metric needs pixels on both sides of the mask (a ratio).
Region = Literal["whole", "outside_mask", "inside_mask", "inside_and_outside_mask"]


class Reference(str, Enum):
    """What a metric compares the output against."""

    NONE = "none"  # no-reference: the output alone
    SOURCE = "source"  # the case's (first) input image
    BASELINE = "baseline"  # the baseline variant's output for the same case and seed (compression fidelity)
    TEXT = "text"  # the case's target caption
    EXPECTED_TEXT = "expected_text"  # the text the output must show (text cases), read by OCR
    INSTRUCTION = "instruction"  # the source image and the edit instruction (a VLM judge's semantic consistency)

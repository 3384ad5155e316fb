"""Did the edit do what was asked? ``judge_sc``, ``judge_pq``, ``judge_overall`` by a VLM judge.

The judge is Qwen2.5-VL-7B-Instruct, which a Qwen-Image-Edit-2509 user already has: it *is* the
edit model's text encoder, language-model head included (``models/configs/text_encoder.json``).
Any local Qwen2.5-VL-Instruct directory can be named instead (``[metrics] judge``). Weights are
never downloaded and never random in a real run; ``weights = "random"`` builds the tiny random
Qwen2.5-VL of the same classes (``models/tiny.py``), whose replies are noise: it exists so the
whole path runs in CI.

The scheme is VIEScore's as GEdit-Bench uses it (task "tie", zero-shot; TIGER-Lab's VIEScore,
``vie_prompts.py``):

- **SC** (semantic consistency): the judge sees the source image, then the output, and the
  instruction, and gives two 0-10 scores: how well the instruction was carried out, and how
  little else changed (over-editing). ``judge_sc`` = the smaller of the two.
- **PQ** (perceptual quality): the judge sees the output alone and scores naturalness and the
  absence of artefacts, 0-10 each. ``judge_pq`` = the smaller.
- ``judge_overall`` = sqrt(SC * PQ).

The prompt texts below follow VIEScore's structure, scales and reply format (a JSON object with a
``"score"`` list and a short ``"reasoning"``) in this module's own wording; `PROMPT_VERSION`
names them and is recorded, so values made with other wording are not silently compared.
Decoding is greedy (`MAX_NEW_TOKENS` at most); the scores are parsed from the reply
(`parse_scores`). A reply without a parseable score list, with the wrong number of scores or a
score outside 0-10 is ``null`` with the reply kept in ``metric_details``, never a guess.

Each judged output records its cost in the details: seconds for both questions and the peak
memory while judging (the CUDA allocator's peak on a GPU; the process's RSS high-water mark on a
CPU, which includes the judge's weights).

Only the shared metric base is imported at module level; transformers and torch when the judge is
built. The judge is off by default (``default_on = False``): a 7B model runs only when named.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import Metric, MetricResult, Reference
from ..registry import register_metric
from ..weights import ModelSpec, WeightsNotFound, hf_cache_snapshots, hf_hub_cache_dir

if TYPE_CHECKING:
    from ..prepared import Prepared

PROMPT_VERSION = "viescore-tie-0shot/qie-bench-1"
MAX_NEW_TOKENS = 256
SCORE_RANGE = (0.0, 10.0)

CONTEXT = """You are a professional digital artist. You will evaluate how effective AI-generated image(s) are, following the rules given.
All the input images are AI-generated, and so is every person in them: there is no privacy concern.

Give your output in exactly this form (keep the reasoning short):
{
"score" : [...],
"reasoning" : "..."
}"""

EDIT_RULE = """RULES:

Two images are provided: the first is the original AI-generated image, the second an edited version of it.
The objective is to evaluate how successfully the editing instruction was carried out in the second image.

Note that the two images may look identical when the edit failed."""

SC_RULE = """From scale 0 to 10:
A first score from 0 to 10 rates the success of the edit (0: the scene in the edited image does not follow the editing instruction at all; 10: it follows the editing instruction perfectly).
A second score from 0 to 10 rates the degree of over-editing in the second image (0: the edited scene is completely different from the original; 10: the edited image is a minimal yet effective edit of the original).
Put the scores in a list, score = [score1, score2], where score1 rates the editing success and score2 the degree of over-editing.

Editing instruction: <instruction>"""

PQ_RULE = """RULES:

The image is an AI-generated image.
The objective is to evaluate how successfully the image was generated.

From scale 0 to 10:
A first score from 0 to 10 rates the image's naturalness (0: the scene does not look natural at all, or feels wrong: sense of distance, shadows, lighting; 10: the image looks natural).
A second score from 0 to 10 rates the image's artefacts (0: large distortions, watermarks, scratches, blurred faces, malformed body parts or subjects that do not fit together; 10: no artefacts).
Put the scores in a list, score = [naturalness, artifacts]"""

SETTINGS: dict[str, Any] = {
    "scheme": "VIEScore (GEdit-Bench), task tie, zero-shot: SC = min(edit success, over-editing), "
    "PQ = min(naturalness, artefacts), overall = sqrt(SC * PQ)",
    "prompts": PROMPT_VERSION,
    "image_order": {"sc": ["source", "output"], "pq": ["output"]},
    "decoding": f"greedy, at most {MAX_NEW_TOKENS} new tokens",
    "dtype": "bfloat16 (real weights), float32 (random)",
}


# -- pure functions ---------------------------------------------------------------------------


def sc_prompt(instruction: str) -> str:
    """The SC question's text (the images come before it)."""
    return "\n".join([CONTEXT, EDIT_RULE, SC_RULE.replace("<instruction>", instruction)])


def pq_prompt() -> str:
    """The PQ question's text (the output image comes before it)."""
    return "\n".join([CONTEXT, PQ_RULE])


def chat_text(n_images: int, question: str) -> str:
    """One user turn in Qwen2.5-VL's chat format: ``n_images`` image placeholders, in the order
    the images are given, then the question; the assistant's turn opened for the reply. (The
    processor expands each ``<|image_pad|>`` to the image's tokens.) Written out rather than taken
    from a chat template, so the tiny tokenizer, which has none, builds the same text."""
    images = "".join("<|vision_start|><|image_pad|><|vision_end|>" for _ in range(n_images))
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n{images}{question}<|im_end|>\n<|im_start|>assistant\n")


_SCORE_LIST = re.compile(r'"?score"?\s*:\s*\[([^\[\]]*)\]', re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class Parsed:
    """Scores read from one reply, or why none could be."""

    scores: list[float] | None
    reason: str | None = None

    @property
    def value(self) -> float | None:
        return None if self.scores is None else min(self.scores)


def parse_scores(reply: str, expected: int = 2) -> Parsed:
    """The ``"score": [a, b]`` list of a reply (the last one, if the reply repeats itself).

    Accepts the JSON object VIEScore asks for, with or without a Markdown fence or text around it.
    ``None`` with a reason for: no score list, a non-number in it, a count other than
    ``expected``, a score outside 0-10.
    """
    found = _SCORE_LIST.findall(reply or "")
    if not found:
        return Parsed(None, "no score list in the reply")
    parts = [p.strip() for p in found[-1].split(",") if p.strip()]
    if not parts or not all(_NUMBER.match(p) for p in parts):
        return Parsed(None, f"score list is not numbers: [{found[-1].strip()[:80]}]")
    scores = [float(p) for p in parts]
    if len(scores) != expected:
        return Parsed(None, f"expected {expected} scores, got {len(scores)}")
    lo, hi = SCORE_RANGE
    if not all(lo <= s <= hi for s in scores):
        return Parsed(None, f"score outside {lo:g}-{hi:g}: {scores}")
    return Parsed(scores)


def overall(sc: float | None, pq: float | None) -> float | None:
    """VIEScore's overall score: sqrt(SC * PQ); None when either is missing."""
    return None if sc is None or pq is None else math.sqrt(sc * pq)


# -- the judge ---------------------------------------------------------------------------------


@dataclass
class Judgement:
    """Both questions for one output: replies, parsed scores, cost."""

    sc_reply: str | None
    pq_reply: str | None
    sc: Parsed
    pq: Parsed
    seconds: float
    peak_memory_bytes: int | None
    peak_memory_kind: str
    extra: dict[str, Any] = field(default_factory=dict)

    def detail(self, which: str) -> dict[str, Any]:
        base = {"seconds": self.seconds, "peak_memory_bytes": self.peak_memory_bytes,
                "peak_memory_kind": self.peak_memory_kind, "prompts": PROMPT_VERSION}
        if which == "sc":
            return {**base, "reply": self.sc_reply, "scores": self.sc.scores, "reason": self.sc.reason}
        if which == "pq":
            return {**base, "reply": self.pq_reply, "scores": self.pq.scores, "reason": self.pq.reason}
        return {**base, "sc": self.sc.value, "pq": self.pq.value}


class QwenJudge:
    """A Qwen2.5-VL model + processor that answers a question about images, greedily."""

    def __init__(self, model: Any, processor: Any, device: Any) -> None:
        self.model, self.processor, self.device = model, processor, device

    def ask(self, images: Sequence[Any], question: str) -> str:
        import torch

        tokenizer = self.processor.tokenizer
        inputs = self.processor(text=[chat_text(len(images), question)], images=list(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1,
                                      temperature=None, top_p=None, top_k=None,
                                      pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = out[0, inputs["input_ids"].shape[1]:]
        return tokenizer.decode(new, skip_special_tokens=True)

    def judge(self, source: Any, output: Any, instruction: str | None) -> Judgement:
        import torch

        cuda = getattr(self.device, "type", str(self.device)) == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        sc_reply = self.ask([source, output], sc_prompt(instruction)) if instruction else None
        pq_reply = self.ask([output], pq_prompt())
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        if cuda:
            peak, kind = int(torch.cuda.max_memory_allocated(self.device)), "cuda allocator peak allocated"
        else:
            import resource

            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process RSS high-water mark"
        sc = parse_scores(sc_reply) if sc_reply is not None else Parsed(None, "no edit instruction")
        return Judgement(sc_reply, pq_reply, sc, parse_scores(pq_reply), seconds, peak, kind)


# -- weights ------------------------------------------------------------------------------------


def _is_qwen25vl(d: Path) -> bool:
    try:
        config = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "qwen2_5_vl" and any(d.glob("*.safetensors"))


def judge_dirs(root: Path) -> tuple[Path, Path]:
    """``(model dir, processor dir)`` of a Qwen2.5-VL-Instruct directory or of a Qwen-Image-Edit
    checkpoint (``text_encoder/`` + ``processor/``); WeightsNotFound otherwise."""
    if _is_qwen25vl(root):
        return root, root
    if _is_qwen25vl(root / "text_encoder"):
        for name in ("processor", "tokenizer"):
            if (root / name).is_dir():
                return root / "text_encoder", root / name
    raise WeightsNotFound([str(root)], [f"{root} is neither a Qwen2.5-VL-Instruct directory (config.json with "
                                        "model_type qwen2_5_vl and *.safetensors) nor a Qwen-Image-Edit checkpoint "
                                        "with text_encoder/ and processor/"])


def locate_judge(where: Path | None) -> Path:
    """The judge's directory from ``[metrics] judge``: a local directory, or a Hugging Face id
    found in the local hub cache. Nothing is downloaded."""
    if where is None:
        raise WeightsNotFound(["[metrics] judge"], ["no judge named"])
    if where.is_dir():
        judge_dirs(where)
        return where
    looked = [str(where)]
    for snapshot in hf_cache_snapshots(hf_hub_cache_dir(), str(where)):
        looked.append(str(snapshot))
        try:
            judge_dirs(snapshot)
            return snapshot
        except WeightsNotFound:
            continue
    raise WeightsNotFound(looked, [f"{where} is not a directory, nor a Hugging Face id in the local cache"])


def build_real(path: Path, device: Any) -> QwenJudge:
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model_dir, processor_dir = judge_dirs(path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, torch_dtype=torch.bfloat16, local_files_only=True, use_safetensors=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(processor_dir, local_files_only=True)
    return QwenJudge(model, processor, device)


# The tiny judge's processor keeps images small (the toy vision tower): at most 112x112 pixels.
TINY_MAX_PIXELS = 112 * 112


def build_random(seed: int, device: Any) -> QwenJudge:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ...models.tiny import TinySizes, build_processor, build_tokenizer, text_encoder_config
    from ..weights import seeded

    tokenizer = build_tokenizer()
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(text_encoder_config(TinySizes(), tokenizer)).to(device).eval()
    return QwenJudge(model, build_processor(tokenizer, TINY_MAX_PIXELS), device)


JUDGE_MODEL = ModelSpec(
    key="qwen25vl_judge",
    label="a Qwen2.5-VL-Instruct judge ([metrics] judge)",
    real_backbone="Qwen2.5-VL-Instruct (bf16)",
    random_backbone="tiny random Qwen2.5-VL (models/tiny.py sizes)",
    locate=locate_judge,
    build_real=build_real,
    build_random=build_random,
    how_to_get="set [metrics] judge (score-run --judge) to a local Qwen2.5-VL-7B-Instruct directory or a "
               "Qwen-Image-Edit-2509 checkpoint (its text_encoder/ is the judge)",
    config_key="judge",
)


# -- metrics ------------------------------------------------------------------------------------


def _judged(item: Prepared, judge: QwenJudge) -> Judgement:
    """Both questions once per output, shared by the three metrics."""
    return item.memo(("judge",), lambda: judge.judge(item.source, item.output, item.inputs.instruction))


class _JudgeMetric(Metric):
    direction = "higher"
    range = SCORE_RANGE
    order = 80
    library = "transformers"
    function = "Qwen2_5_VLForConditionalGeneration.generate (greedy) + qie_bench parse_scores"
    model = JUDGE_MODEL
    settings = SETTINGS
    default_on = False
    which: str

    @property
    def judge(self) -> QwenJudge:
        assert self.loaded is not None
        return self.loaded.model

    def value_of(self, judgement: Judgement) -> tuple[float | None, str | None]:
        """The parsed score this metric reports (`which` names it), with why it is None."""
        part = getattr(judgement, self.which)
        return part.value, part.reason

    def compute(self, batch: Sequence[Prepared]) -> list[MetricResult]:
        results = []
        for item in batch:
            judgement = _judged(item, self.judge)
            value, reason = self.value_of(judgement)
            results.append(MetricResult(value, reason, judgement.detail(self.which)))
        return results


@register_metric
class JudgeSC(_JudgeMetric):
    """Semantic consistency: min(edit success, over-editing), source + output + instruction."""

    name = "judge_sc"
    label = "judge SC (VLM)"
    reference = Reference.INSTRUCTION
    which = "sc"


@register_metric
class JudgePQ(_JudgeMetric):
    """Perceptual quality: min(naturalness, artefacts), the output alone."""

    name = "judge_pq"
    label = "judge PQ (VLM)"
    reference = Reference.NONE
    which = "pq"


@register_metric
class JudgeOverall(_JudgeMetric):
    """sqrt(SC * PQ)."""

    name = "judge_overall"
    label = "judge overall (VLM)"
    headline = True
    reference = Reference.INSTRUCTION
    which = "overall"

    def value_of(self, judgement: Judgement) -> tuple[float | None, str | None]:
        value = overall(judgement.sc.value, judgement.pq.value)
        reason = None if value is not None else "; ".join(
            f"{name}: {p.reason}" for name, p in (("SC", judgement.sc), ("PQ", judgement.pq)) if p.reason)
        return value, reason

"""The VLM judge (judge_sc, judge_pq, judge_overall): prompts, image order, reply parsing, failure
handling, the tiny random Qwen2.5-VL end to end, and a fake judge with fixed replies through
aggregation (summary) and the gate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gate_fixtures import gate, make_world, no_fsync, promote, write_run
from PIL import Image

from qie_bench.gate.thresholds import metric_direction
from qie_bench.metrics import MetricsConfig, ScoreInputs, Scorer
from qie_bench.metrics.catalog import judge as J
from qie_bench.metrics.prepared import Prepared
from qie_bench.metrics.registry import REGISTRY
from qie_bench.metrics.weights import LoadedModel, WeightsNotFound
from qie_bench.results.measures import Direction


def _image(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


# -- prompts -----------------------------------------------------------------------------------


def test_sc_prompt_carries_the_instruction_after_the_rules() -> None:
    text = J.sc_prompt("把标签改为“新品上市”")
    assert text.startswith(J.CONTEXT)
    assert text.rstrip().endswith("Editing instruction: 把标签改为“新品上市”")
    assert "<instruction>" not in text
    assert text.index("first is the original") < text.index("score = [score1, score2]")


def test_pq_prompt_has_no_instruction_and_asks_for_two_scores() -> None:
    text = J.pq_prompt()
    assert "Editing instruction" not in text and "<instruction>" not in text
    assert "score = [naturalness, artifacts]" in text


def test_chat_text_puts_one_placeholder_per_image_before_the_question() -> None:
    text = J.chat_text(2, "Q?")
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    f"<|im_start|>user\n{pad}{pad}Q?<|im_end|>\n<|im_start|>assistant\n")
    assert J.chat_text(0, "Q?").count("<|image_pad|>") == 0


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "scores"), [
    ('{\n"score" : [7, 9],\n"reasoning" : "hat added, background kept"\n}', [7.0, 9.0]),
    ('```json\n{"score": [3.5, 10], "reasoning": "ok"}\n```', [3.5, 10.0]),
    ('Output: {"score" : [0, 0], "reasoning": "nothing changed"}', [0.0, 0.0]),
    # a reply that repeats itself: the last list is the answer
    ('{"score": [1, 2]} ... corrected: {"score": [6, 8], "reasoning": "x"}', [6.0, 8.0]),
    ("score: [5, 6]", [5.0, 6.0]),
])
def test_parse_good_replies(reply: str, scores: list[float]) -> None:
    parsed = J.parse_scores(reply)
    assert parsed.scores == scores and parsed.reason is None
    assert parsed.value == min(scores)  # VIEScore takes the smaller score


@pytest.mark.parametrize(("reply", "reason"), [
    ("", "no score list in the reply"),
    ("The edit looks fine, I would say 8 out of 10.", "no score list in the reply"),
    ('{"score": [seven, 9]}', "score list is not numbers: [seven, 9]"),
    ('{"score": []}', "score list is not numbers: []"),
    ('{"score": [7]}', "expected 2 scores, got 1"),
    ('{"score": [7, 8, 9]}', "expected 2 scores, got 3"),
    ('{"score": [11, 9]}', "score outside 0-10: [11.0, 9.0]"),
    ('{"score": [-1, 9]}', "score outside 0-10: [-1.0, 9.0]"),
])
def test_parse_malformed_or_out_of_range_replies_give_none_with_a_reason(reply: str, reason: str) -> None:
    parsed = J.parse_scores(reply)
    assert parsed.scores is None and parsed.value is None
    assert parsed.reason == reason


def test_overall_is_the_geometric_mean_and_none_when_either_is_missing() -> None:
    assert J.overall(4.0, 9.0) == 6.0
    assert J.overall(0.0, 9.0) == 0.0
    assert J.overall(None, 9.0) is None and J.overall(4.0, None) is None


# -- declarations ------------------------------------------------------------------------------


def test_judge_metrics_are_declared_higher_is_better_and_off_by_default() -> None:
    for name in ("judge_sc", "judge_pq", "judge_overall"):
        cls = REGISTRY.get(name)
        assert cls.direction == "higher" and cls.range == (0.0, 10.0) and cls.default_on is False
        assert metric_direction(name) is Direction.HIGHER
    assert "judge_overall" not in MetricsConfig().names  # a 7B model runs only when named
    assert "ssim" in MetricsConfig().names


def test_a_real_judge_without_weights_is_a_user_error(tmp_path: Path) -> None:
    from qie_bench.errors import UserInputError

    with pytest.raises(UserInputError, match=r"no judge named.*\[metrics\] judge"):
        Scorer(MetricsConfig(names=["judge_overall"], weights="real"))
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(UserInputError, match="neither a Qwen2.5-VL-Instruct directory"):
        Scorer(MetricsConfig(names=["judge_overall"], weights="real", judge=str(tmp_path)))


def test_judge_dirs_accepts_a_qwen25vl_dir_and_an_edit_checkpoint(tmp_path: Path) -> None:
    vl = tmp_path / "vl"
    vl.mkdir()
    (vl / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (vl / "model.safetensors").write_bytes(b"")
    assert J.judge_dirs(vl) == (vl, vl)
    ckpt = tmp_path / "edit"
    (ckpt / "processor").mkdir(parents=True)
    (ckpt / "text_encoder").mkdir()
    (ckpt / "text_encoder" / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (ckpt / "text_encoder" / "model-00001-of-00004.safetensors").write_bytes(b"")
    assert J.judge_dirs(ckpt) == (ckpt / "text_encoder", ckpt / "processor")
    assert J.locate_judge(ckpt) == ckpt
    with pytest.raises(WeightsNotFound):
        J.judge_dirs(tmp_path)


# -- a fake judge with fixed replies -----------------------------------------------------------


class FakeJudge(J.QwenJudge):
    """Answers the SC and PQ questions with fixed replies, and records what it was shown."""

    def __init__(self, sc_reply: str, pq_reply: str) -> None:
        super().__init__(None, None, "cpu")
        self.replies = {"sc": sc_reply, "pq": pq_reply}
        self.asked: list[tuple[str, list[Any]]] = []

    def ask(self, images: Any, question: str) -> str:
        which = "sc" if "Editing instruction" in question else "pq"
        self.asked.append((which, list(images)))
        return self.replies[which]


def _fake_metrics(judge: J.QwenJudge) -> list[Any]:
    loaded = LoadedModel(J.JUDGE_MODEL.key, judge, "fake", "random", "fixed replies")
    return [REGISTRY.get(n)(loaded) for n in ("judge_sc", "judge_pq", "judge_overall")]


def _judge_values(judge: J.QwenJudge, inputs: ScoreInputs) -> dict[str, Any]:
    item = Prepared(inputs)
    return {m.name: m([item])[0] for m in _fake_metrics(judge)}


def test_image_order_source_then_output_for_sc_output_alone_for_pq() -> None:
    source, output = _image(1), _image(2)
    fake = FakeJudge('{"score": [8, 6]}', '{"score": [9, 7]}')
    results = _judge_values(fake, ScoreInputs(output=output, source=source, instruction="add a hat"))
    assert [w for w, _ in fake.asked] == ["sc", "pq"], "both questions asked once, shared by the three metrics"
    (_, sc_images), (_, pq_images) = fake.asked
    assert [np.asarray(i).tobytes() for i in sc_images] == [np.asarray(source).tobytes(), np.asarray(output).tobytes()]
    assert [np.asarray(i).tobytes() for i in pq_images] == [np.asarray(output).tobytes()]
    assert results["judge_sc"].value == 6.0 and results["judge_pq"].value == 7.0
    assert results["judge_overall"].value == pytest.approx(math.sqrt(42.0))
    detail = results["judge_sc"].detail
    assert detail["reply"] == '{"score": [8, 6]}' and detail["scores"] == [8.0, 6.0]
    assert detail["seconds"] >= 0 and detail["peak_memory_bytes"] > 0


def test_an_unparseable_reply_is_none_with_the_reply_kept() -> None:
    fake = FakeJudge("I cannot judge this.", '{"score": [9, 7]}')
    results = _judge_values(fake, ScoreInputs(output=_image(2), source=_image(1), instruction="add a hat"))
    sc, pq, overall = results["judge_sc"], results["judge_pq"], results["judge_overall"]
    assert sc.value is None and sc.reason == "no score list in the reply"
    assert sc.detail["reply"] == "I cannot judge this."
    assert pq.value == 7.0
    assert overall.value is None and overall.reason == "SC: no score list in the reply"


def test_no_instruction_leaves_sc_unavailable_but_pq_is_judged() -> None:
    fake = FakeJudge('{"score": [8, 6]}', '{"score": [9, 7]}')
    results = _judge_values(fake, ScoreInputs(output=_image(2), source=_image(1)))
    assert results["judge_sc"].value is None and results["judge_sc"].reason == "no edit instruction"
    assert results["judge_pq"].value == 7.0
    assert [w for w, _ in fake.asked] == ["pq"]


def test_fake_judge_scores_aggregate_and_gate(tmp_path: Path) -> None:
    """Per-case judge values from fixed replies planted into runs: the summary's mean is theirs,
    and `judge_overall = "-0.5"` / `text_accuracy = "-0.05"` fail a drop beyond them, pass within."""

    def values(sc: float, pq: float) -> float:
        fake = FakeJudge(f'{{"score": [{sc}, 10]}}', f'{{"score": [{pq}, 10]}}')
        return _judge_values(fake, ScoreInputs(output=_image(2), source=_image(1), instruction="x"))["judge_overall"].value

    base_value, small_drop, big_drop = values(8, 8), values(8, 7.5), values(6, 6)  # 8.0, 7.75, 6.0
    assert (base_value, big_drop) == (8.0, 6.0) and base_value - small_drop < 0.5

    gates = {"judge_overall": "-0.5", "text_accuracy": "-0.05"}
    world = make_world(gates=gates)

    def plant(judge_value: float, text_value: float):
        def _t(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for r in records:
                if r["status"] == "OK" and r["repeat"] == 0:
                    r["metrics"] = {**(r.get("metrics") or {}), "judge_overall": judge_value, "text_accuracy": text_value}
            return records
        return _t

    with no_fsync():
        base_run = write_run(tmp_path / "base", world, seed=1, transform=plant(base_value, 0.9))
        summary = json.loads((base_run / "summary.json").read_text())
        for v in summary["variants"].values():
            assert v["metrics"]["judge_overall"]["mean"] == pytest.approx(8.0)
        baseline = tmp_path / "baseline.json"
        assert promote(base_run, baseline) == 0
        ok = write_run(tmp_path / "ok", world, seed=2, transform=plant(small_drop, 0.88))
        judge_bad = write_run(tmp_path / "jb", world, seed=3, transform=plant(big_drop, 0.9))
        text_bad = write_run(tmp_path / "tb", world, seed=4, transform=plant(base_value, 0.8))
        assert gate(ok, baseline) == 0
        assert gate(judge_bad, baseline) == 1
        assert gate(text_bad, baseline) == 1


# -- the tiny random Qwen2.5-VL end to end -----------------------------------------------------


def test_tiny_random_judge_end_to_end_replies_are_kept_and_unparseable() -> None:
    scorer = Scorer(MetricsConfig(names=["judge_sc", "judge_pq", "judge_overall"], weights="random"))
    assert scorer.describe()["judge_sc"]["weights"] == "random"
    inputs = ScoreInputs(output=_image(2, 96), source=_image(1, 96), instruction="Add a red hat")
    values, details = scorer.score_with_details(inputs)
    again, details2 = scorer.score_with_details(inputs)
    assert details["judge_sc"]["reply"] == details2["judge_sc"]["reply"], "greedy decoding: the same reply twice"
    for name in ("judge_sc", "judge_pq"):
        assert isinstance(details[name]["reply"], str) and details[name]["reply"]
        # random weights: noise, so no score list; recorded as null with the reply, never a guess
        assert values[name] is None and details[name]["scores"] is None and details[name]["reason"]
    assert values["judge_overall"] is None
    assert details["judge_overall"]["seconds"] > 0 and details["judge_overall"]["peak_memory_bytes"] > 0

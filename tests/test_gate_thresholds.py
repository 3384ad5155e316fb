"""The [gates] table: threshold strings, directions and one-line errors naming the key."""

from __future__ import annotations

import re

import pytest

from qie_bench.errors import UserInputError
from qie_bench.gate import Direction, metric_direction, parse_gates
from qie_bench.gate.thresholds import Worse, check_gate_variants, parse_threshold


@pytest.mark.parametrize(("name", "text", "limit", "relative", "worse"), [
    ("latency_p95_s", "+10%", 0.10, True, Worse.UP),
    ("latency_p95_s", "10%", 0.10, True, Worse.UP),  # unsigned: the direction decides
    ("latency_p95_s", "+250ms", 0.25, False, Worse.UP),
    ("peak_vram_bytes", "+3%", 0.03, True, Worse.UP),
    ("peak_vram_bytes", "+512MiB", 512 * 2**20, False, Worse.UP),
    ("ssim_vs_baseline", "-0.02", 0.02, False, Worse.DOWN),
    ("clip_iqa", "-6%", 0.06, True, Worse.DOWN),
    ("clip_iqa", "6%", 0.06, True, Worse.DOWN),
    ("lpips_vs_baseline", "+0.01", 0.01, False, Worse.UP),
    ("oom_rate", "0", 0.0, False, Worse.UP),
    ("oom_rate", 0, 0.0, False, Worse.UP),  # a TOML number reads like the string
    ("psnr", "±1.0", 1.0, False, Worse.BOTH),
    ("psnr", "+-2%", 0.02, True, Worse.BOTH),
    ("psnr", "+/- 0.5", 0.5, False, Worse.BOTH),
    ("my_custom_score", "-5%", 0.05, True, Worse.DOWN),  # unknown metric: the sign says which way is worse
    ("my_custom_cost", "+5%", 0.05, True, Worse.UP),
])
def test_good_thresholds(name: str, text: str, limit: float, relative: bool, worse: Worse) -> None:
    t = parse_threshold(name, text, f"gates.{name}")
    assert t.limit == pytest.approx(limit) and t.relative is relative and t.worse is worse and not t.off


@pytest.mark.parametrize(("raw", "key", "words"), [
    ({"latency_p95_s": "10 percent"}, "gates.latency_p95_s", "unknown unit 'percent'"),
    ({"latency_p95_s": "+10%%"}, "gates.latency_p95_s", "is not a threshold"),
    ({"latency_p95_s": ""}, "gates.latency_p95_s", "is not a threshold"),
    ({"latency_p95_s": "fast"}, "gates.latency_p95_s", "is not a threshold"),
    ({"latency_p95_s": "--5%"}, "gates.latency_p95_s", "is not a threshold"),
    ({"latency_p95_s": "-10%"}, "gates.latency_p95_s", "lower is better"),  # would only ever fail on speed-ups
    ({"ssim_vs_baseline": "+0.02"}, "gates.ssim_vs_baseline", "higher is better"),
    ({"latency_p95_s": "+10GiB"}, "gates.latency_p95_s", "unknown unit"),
    ({"peak_vram_bytes": "+3 parsecs"}, "gates.peak_vram_bytes", "unknown unit"),
    ({"step_p90_s": "+5%"}, "gates.step_p90_s", "did you mean 'step_p95_s'"),
    ({"peak_vram_bytes": "+3pc"}, "gates.peak_vram_bytes", "unknown unit"),
    ({"latency_p95_s": True}, "gates.latency_p95_s", "must be a string"),
    ({"latency_p95_s": ["+10%"]}, "gates.latency_p95_s", "must be a string"),
    ({"my_custom_score": "5%"}, "gates.my_custom_score", "no sign"),
    ({"latncy_p95_s": "+10%"}, "gates.latncy_p95_s", "did you mean 'latency_p95_s'"),
    ({"nonfinite_outputs": "0"}, "gates.nonfinite_outputs", "always checked"),
    ({"nf4": {"latency_p95_s": "x"}}, "gates.nf4.latency_p95_s", "is not a threshold"),
    ({"nf4": {"deeper": {"a": "1"}}}, "gates.nf4.deeper", "cannot be nested"),
])
def test_bad_thresholds_name_the_key(raw: dict, key: str, words: str) -> None:
    with pytest.raises(UserInputError) as info:
        parse_gates(raw, where="suites/x.toml: gates")
    err = info.value
    assert err.where == f"suites/x.toml: {key}" and words in str(err), str(err)
    assert "\n" not in str(err)
    # Where the fix shows an example threshold, that example parses.
    example = re.search(r'= "([^"]+)"', err.fix or "")
    if example:
        name = key.rsplit(".", 1)[-1]
        parse_threshold(name, "-5%" if name == "my_custom_score" else example.group(1), "x")


def test_gates_table_with_overrides_and_off() -> None:
    gates = parse_gates({"latency_p95_s": "+10%", "ssim_vs_baseline": "-0.02",
                         "nf4": {"latency_p95_s": "+25%"}, "bf16": {"ssim_vs_baseline": "off"}})
    assert gates.for_variant("nf4")["latency_p95_s"].describe() == "+25%"
    assert gates.for_variant("fp16")["latency_p95_s"].describe() == "+10%"
    assert "ssim_vs_baseline" not in gates.for_variant("bf16")
    assert gates.keys() == ["latency_p95_s", "ssim_vs_baseline"]
    assert parse_gates({}).empty and parse_gates(None).empty
    with pytest.raises(UserInputError, match="did you mean 'nf4'"):
        check_gate_variants(parse_gates({"nf5": {"latency_p95_s": "+1%"}}), ["bf16", "nf4"])


def test_directions() -> None:
    lower = ["latency_p95_s", "step_p50_s", "peak_vram_bytes", "weights_bytes", "oom_rate", "lpips_vs_baseline"]
    higher = ["ssim", "psnr_outside_mask", "ssim_vs_baseline", "clip_iqa", "clip_score"]
    assert all(metric_direction(n) is Direction.LOWER for n in lower)
    assert all(metric_direction(n) is Direction.HIGHER for n in higher)
    assert metric_direction("mystery") is None


def test_threshold_arithmetic() -> None:
    up = parse_threshold("latency_p95_s", "+10%", "x")
    assert not up.exceeded(0.10) and up.exceeded(0.1001) and not up.exceeded(-0.5)
    down = parse_threshold("ssim", "-0.02", "x")
    assert down.exceeded(-0.03) and not down.exceeded(+0.5)
    window = parse_threshold("psnr", "±1", "x")
    assert window.exceeded(1.5) and window.exceeded(-1.5) and not window.exceeded(0.9)
    zero = parse_threshold("oom_rate", "0", "x")
    assert zero.exceeded(1e-9) and not zero.exceeded(0.0)

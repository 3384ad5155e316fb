"""Pixel metrics (SSIM, PSNR; whole, outside the mask, vs baseline) against scikit-image, edge cases,
the registry, the config and JSON encoding. No model weights involved."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from metric_fixtures import (
    SSIM_RADIUS,
    as_float,
    blob_mask,
    blurred,
    brighter,
    jpeg,
    noisy,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    random_image,
    rectangle_mask,
    skimage_photo,
    skimage_ssim,
    skimage_ssim_map_torch_borders,
)
from PIL import Image
from pydantic import ValidationError
from scipy.ndimage import binary_dilation
from skimage.metrics import peak_signal_noise_ratio

from qie_bench.errors import UserInputError
from qie_bench.metrics import (
    MetricsConfig,
    ScoreInputs,
    Scorer,
    from_json_value,
    to_json_value,
)
from qie_bench.metrics.base import Metric, Reference
from qie_bench.metrics.catalog.ssim import ssim_map, windows_outside
from qie_bench.metrics.images import to_tensor
from qie_bench.metrics.registry import REGISTRY, MetricRegistry, UnknownMetricError

PIXEL_METRICS = ("ssim", "psnr", "ssim_outside_mask", "psnr_outside_mask", "ssim_vs_baseline", "psnr_vs_baseline")
# The shipped metrics, in the order records have always had; a metric added later comes after
# them (its declared `order` defaults to after the shipped ones), so tests compare this prefix.
ALL_METRICS = (
    "clip_iqa", "ssim", "ssim_outside_mask", "ssim_vs_baseline", "psnr", "psnr_outside_mask", "psnr_vs_baseline",
    "lpips_vs_baseline", "clip_score", "text_accuracy", "text_found", "change_inside_mask", "change_outside_mask",
    "change_ratio",
)

# Tolerances. PSNR: the MSE is float64 on both sides, but torchmetrics takes log(10) of a float32
# tensor, a relative error of ~5e-8 (3.5e-7 dB at 7.7 dB), hence a relative tolerance. SSIM is float32 in the harness
# (torchmetrics on CPU is ~10x slower in float64) and float64 in scikit-image; the variance terms
# E[x^2] - E[x]^2 cancel in float32, so on smooth photos single map pixels differ by up to ~1.5e-3
# and the image means by up to ~1.1e-5 (measured over the pairs below; random noise: 2.5e-7).
# Both are far below the 1e-3..5e-3 effect of the border convention, and below any quality
# difference worth reporting.
PSNR_RTOL = 1e-7
SSIM_MEAN_ATOL = 2e-5
SSIM_PIXEL_ATOL = 2e-3


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    # Pixel metrics need no weights, so weights="real" builds nothing and needs no file.
    return Scorer(MetricsConfig(names=PIXEL_METRICS))


def _pairs() -> dict[str, tuple[Image.Image, Image.Image]]:
    # Real photos at half size (256 x 256 and 200 x 300) keep the float64 scikit-image references
    # fast; the equivalence does not depend on size.
    astronaut = skimage_photo("astronaut").reduce(2)
    coffee = skimage_photo("coffee").reduce(2)
    return {
        "random": (random_image(64, 80, seed=1), random_image(64, 80, seed=2)),
        "astronaut-noise": (noisy(astronaut, 12.0, seed=3), astronaut),
        "astronaut-jpeg": (jpeg(astronaut, 30), astronaut),
        "coffee-blur": (blurred(coffee, 2.0), coffee),
        "coffee-brighter": (brighter(coffee, 1.15), coffee),
    }


PAIRS = _pairs()


@functools.cache
def reference_map(pair: str) -> np.ndarray:
    """scikit-image SSIM map of a pair with torch-style borders (H x W x 3), computed once."""
    return skimage_ssim_map_torch_borders(*PAIRS[pair])


@functools.cache
def our_map(pair: str) -> np.ndarray:
    """The harness's SSIM map of a pair (H x W x 3, float64 copy), computed once."""
    output, source = PAIRS[pair]
    return ssim_map(to_tensor(output), to_tensor(source))[0].permute(1, 2, 0).double().numpy()


def _score(scorer: Scorer, output: Image.Image, source: Image.Image, **kwargs) -> dict:
    return scorer.score(ScoreInputs(output=output, source=source, **kwargs))


# -- SSIM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=list(PAIRS))
def test_ssim_map_interior_equals_skimage(pair: str) -> None:
    """Away from the 5-px border the maps are the same quantity; their means match skimage's mssim."""
    output, source = PAIRS[pair]
    ours = our_map(pair)
    mssim, reference = skimage_ssim(output, source, full=True)
    r = SSIM_RADIUS
    np.testing.assert_allclose(ours[r:-r, r:-r], reference[r:-r, r:-r], atol=SSIM_PIXEL_ATOL, rtol=0)
    # scikit-image's reported SSIM is exactly the mean of its map's interior.
    assert ours[r:-r, r:-r].mean() == pytest.approx(mssim, abs=SSIM_MEAN_ATOL)


@pytest.mark.parametrize("pair", PAIRS, ids=list(PAIRS))
def test_ssim_whole_image_equals_skimage_with_torch_borders(scorer: Scorer, pair: str) -> None:
    """The reported `ssim` (torchmetrics: whole map, reflect-padded borders) equals scikit-image's
    map on numpy-reflect-padded images, averaged over every original pixel."""
    output, source = PAIRS[pair]
    np.testing.assert_allclose(our_map(pair), reference_map(pair), atol=SSIM_PIXEL_ATOL, rtol=0)
    assert _score(scorer, output, source)["ssim"] == pytest.approx(reference_map(pair).mean(), abs=SSIM_MEAN_ATOL)


def test_ssim_border_convention_differs_from_skimage_default_only_slightly(scorer: Scorer) -> None:
    """Documented difference: skimage averages the cropped map, torchmetrics the whole padded map.

    The 5-px border is ~8% of a 256 x 256 image; its pixels score lower (mirrored windows), so the
    two conventions differ by ~1e-2 here (~5e-3 at 512 px), far more than float32 error.
    """
    output, source = PAIRS["astronaut-noise"]
    ours = _score(scorer, output, source)["ssim"]
    assert ours != pytest.approx(skimage_ssim(output, source), abs=SSIM_MEAN_ATOL)
    assert ours == pytest.approx(skimage_ssim(output, source), abs=2e-2)


@pytest.mark.parametrize("pair", ["random", "astronaut-jpeg", "coffee-blur"])
@pytest.mark.parametrize("mask_kind", ["rectangle", "blobs"])
def test_ssim_outside_mask_equals_skimage_map_on_same_pixels(scorer: Scorer, pair: str, mask_kind: str) -> None:
    output, source = PAIRS[pair]
    h, w = source.height, source.width
    mask = rectangle_mask(h, w, (h // 4, w // 3, h // 2, w // 2 + 7)) if mask_kind == "rectangle" else blob_mask(h, w, 7)
    keep = ~binary_dilation(mask, np.ones((2 * SSIM_RADIUS + 1,) * 2, dtype=bool))  # windows clear of the mask
    assert keep.any() and (keep != ~mask).any()
    scores = _score(scorer, output, source, mask=mask)
    # Whole-map reference (torch borders) averaged over the pixels whose window is outside the mask.
    assert scores["ssim_outside_mask"] == pytest.approx(reference_map(pair)[keep].mean(), abs=SSIM_MEAN_ATOL)
    # And against scikit-image's own map on the outside pixels away from the border.
    r = SSIM_RADIUS
    ours_map = our_map(pair)
    _, reference = skimage_ssim(output, source, full=True)
    interior = np.zeros_like(keep)
    interior[r:-r, r:-r] = True
    assert ours_map[keep & interior].mean() == pytest.approx(reference[keep & interior].mean(), abs=SSIM_MEAN_ATOL)


# -- PSNR ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", PAIRS, ids=list(PAIRS))
def test_psnr_equals_skimage(scorer: Scorer, pair: str) -> None:
    output, source = PAIRS[pair]
    reference = peak_signal_noise_ratio(np.asarray(source), np.asarray(output), data_range=255)
    assert _score(scorer, output, source)["psnr"] == pytest.approx(reference, rel=PSNR_RTOL)


@pytest.mark.parametrize("pair", ["random", "astronaut-noise", "coffee-brighter"])
def test_psnr_outside_mask_equals_skimage_on_same_pixels(scorer: Scorer, pair: str) -> None:
    output, source = PAIRS[pair]
    mask = blob_mask(source.height, source.width, 11)
    keep = ~mask
    reference = peak_signal_noise_ratio(np.asarray(source)[keep], np.asarray(output)[keep], data_range=255)
    assert _score(scorer, output, source, mask=mask)["psnr_outside_mask"] == pytest.approx(reference, rel=PSNR_RTOL)


def test_vs_baseline_metrics_compare_output_with_baseline_output(scorer: Scorer) -> None:
    output, baseline = PAIRS["astronaut-jpeg"]
    source = skimage_photo("coffee").resize(baseline.size)  # unrelated: must not be used
    scores = _score(scorer, output, source, baseline_output=baseline)
    assert scores["psnr_vs_baseline"] == pytest.approx(
        peak_signal_noise_ratio(np.asarray(baseline), np.asarray(output), data_range=255), rel=PSNR_RTOL
    )
    assert scores["ssim_vs_baseline"] == pytest.approx(
        skimage_ssim_map_torch_borders(output, baseline).mean(), abs=SSIM_MEAN_ATOL
    )


# -- edge cases, checked by hand ------------------------------------------------------------


def test_identical_images_give_infinite_psnr_and_ssim_one(scorer: Scorer) -> None:
    image = skimage_photo("coffee").reduce(2)
    mask = rectangle_mask(image.height, image.width, (10, 10, 50, 50))
    scores = _score(scorer, image, image.copy(), baseline_output=image.copy(), mask=mask)
    for key in ("psnr", "psnr_outside_mask", "psnr_vs_baseline"):
        assert scores[key] == math.inf
    for key in ("ssim", "ssim_outside_mask", "ssim_vs_baseline"):
        assert scores[key] == pytest.approx(1.0, abs=1e-6)
    encoded = json.dumps(to_json_value(scores), allow_nan=False)  # strict JSON: no Infinity token
    assert json.loads(encoded)["psnr"] == "inf"
    assert from_json_value(json.loads(encoded))["psnr"] == math.inf


def test_only_the_masked_region_changed_gives_infinite_psnr_outside(scorer: Scorer) -> None:
    source = skimage_photo("astronaut").reduce(2)
    mask = rectangle_mask(256, 256, (50, 50, 100, 110))
    edited = np.asarray(source).copy()
    edited[mask] = 255 - edited[mask]
    scores = _score(scorer, Image.fromarray(edited), source, mask=mask)
    assert scores["psnr_outside_mask"] == math.inf
    assert math.isfinite(scores["psnr"])
    # Windows that overlap the mask are excluded, so SSIM outside cannot see the edit (issue 14
    # item 8: it read 0.974 when it averaged every outside pixel). Exactly 1: every kept window
    # holds identical pixels in both images, so each map value is x / x.
    assert scores["ssim_outside_mask"] == 1.0
    assert scores["ssim"] < 0.95


def test_ssim_outside_mask_at_the_border_and_with_the_mask_everywhere_near(scorer: Scorer) -> None:
    """A mask touching the image border: reflect padding mirrors only pixels within the window,
    so an edit confined to it still scores 1. A mask leaving no pixel 6 px away: None + reason."""
    source = skimage_photo("coffee").reduce(2)  # 300 x 200
    h, w = source.height, source.width
    mask = rectangle_mask(h, w, (0, 0, 40, 60))
    edited = np.asarray(source).copy()
    edited[mask] = 0
    assert _score(scorer, Image.fromarray(edited), source, mask=mask)["ssim_outside_mask"] == 1.0
    stripes = np.zeros((h, w), dtype=bool)
    stripes[4::10, :] = True  # rows 4, 14, ..., 194: every row is within 5 of one, and most are not masked
    results, _ = scorer.score_detailed(ScoreInputs(output=Image.fromarray(edited), source=source, mask=stripes))
    assert results["ssim_outside_mask"].value is None and "more than 5 px" in results["ssim_outside_mask"].reason
    assert results["psnr_outside_mask"].value is not None


def test_windows_outside_is_the_eroded_outside_region() -> None:
    """Hand-checked: one masked pixel removes the 11 x 11 square around it, clipped at the border."""
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[2, 25] = True
    keep = windows_outside(mask)
    expected = np.ones((20, 30), dtype=bool)
    expected[0:8, 20:30] = False  # rows 2-5..2+5 (clipped at 0), columns 25-5..25+5 (clipped at 29)
    np.testing.assert_array_equal(keep.numpy(), expected)


@pytest.mark.parametrize(("a", "b"), [(0.2, 0.2), (0.2, 0.6), (0.0, 1.0), (0.5, 0.45)])
def test_constant_images(scorer: Scorer, a: float, b: float) -> None:
    """Constant images: variances are 0, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1).

    (float32 leaves ~1e-8 of spurious variance, against C2 = 9e-4: up to ~1e-4 on the contrast term.)
    """
    level_a, level_b = round(a * 255), round(b * 255)
    out = Image.new("RGB", (40, 30), (level_a,) * 3)
    src = Image.new("RGB", (40, 30), (level_b,) * 3)
    x, y, c1 = level_a / 255, level_b / 255, 0.01**2
    scores = _score(scorer, out, src)
    assert scores["ssim"] == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), abs=2e-4)
    if level_a == level_b:
        assert scores["psnr"] == math.inf
    else:
        assert scores["psnr"] == pytest.approx(10 * math.log10(1 / (x - y) ** 2), rel=PSNR_RTOL)


def test_empty_mask_means_whole_image(scorer: Scorer) -> None:
    output, source = PAIRS["coffee-blur"]
    scores = _score(scorer, output, source, mask=np.zeros((source.height, source.width), dtype=bool))
    assert scores["ssim_outside_mask"] == pytest.approx(scores["ssim"], abs=1e-7)
    assert scores["psnr_outside_mask"] == pytest.approx(scores["psnr"], rel=1e-12)


def test_full_mask_gives_none_with_reason(scorer: Scorer) -> None:
    output, source = PAIRS["random"]
    results, _ = scorer.score_detailed(
        ScoreInputs(output=output, source=source, mask=np.ones((source.height, source.width), dtype=bool))
    )
    for key in ("ssim_outside_mask", "psnr_outside_mask"):
        assert results[key].value is None
        assert "whole image" in results[key].reason
    assert results["ssim"].value is not None


def test_missing_references_give_none_not_zero(scorer: Scorer) -> None:
    output, source = PAIRS["random"]
    results, _ = scorer.score_detailed(ScoreInputs(output=output, source=source))
    assert results["ssim_outside_mask"].value is None and results["ssim_outside_mask"].reason == "case has no mask"
    assert results["psnr_vs_baseline"].value is None and "baseline" in results["psnr_vs_baseline"].reason
    assert results["ssim"].value is not None and results["ssim"].reason is None


def test_mask_of_wrong_shape_is_a_user_error(scorer: Scorer) -> None:
    output, source = PAIRS["random"]
    with pytest.raises(UserInputError, match="source image is 64x80"):
        scorer.score(ScoreInputs(output=output, source=source, mask=np.zeros((80, 64), dtype=bool)))


def test_non_bool_mask_counts_nonzero_as_editable(scorer: Scorer) -> None:
    output, source = PAIRS["random"]
    mask = blob_mask(64, 80, 3)
    as_bool = _score(scorer, output, source, mask=mask)
    as_uint8 = _score(scorer, output, source, mask=mask.astype(np.uint8) * 255)
    assert as_uint8 == as_bool


def test_output_of_another_size_is_resized_bicubic_to_the_source(scorer: Scorer) -> None:
    source = skimage_photo("astronaut").reduce(2)
    output = blurred(source, 1.5).resize((192, 150), Image.Resampling.LANCZOS)
    mask = rectangle_mask(256, 256, (0, 0, 64, 64))  # source coordinates
    results, notes = scorer.score_detailed(ScoreInputs(output=output, source=source, mask=mask))
    expected = output.resize(source.size, Image.Resampling.BICUBIC)
    assert results["psnr"].value == pytest.approx(
        peak_signal_noise_ratio(np.asarray(source), np.asarray(expected), data_range=255), rel=PSNR_RTOL
    )
    assert results["psnr_outside_mask"].value == pytest.approx(
        peak_signal_noise_ratio(np.asarray(source)[~mask], np.asarray(expected)[~mask], data_range=255), rel=PSNR_RTOL
    )
    assert results["ssim"].value == pytest.approx(skimage_ssim_map_torch_borders(expected, source).mean(), abs=SSIM_MEAN_ATOL)
    assert notes == ["vs source: output resized from 192x150 to 256x256 (PIL bicubic)"]


def test_non_rgb_modes_are_scored_as_rgb(scorer: Scorer) -> None:
    gray = skimage_photo("coffee").convert("L")
    rgba = gray.convert("RGBA")
    scores = _score(scorer, rgba, gray)
    assert scores["psnr"] == math.inf


def test_score_many_equals_score_one_by_one(scorer: Scorer) -> None:
    batch = [
        ScoreInputs(output=o, source=s, mask=blob_mask(s.height, s.width, i), baseline_output=s if i % 2 else None)
        for i, (o, s) in enumerate(PAIRS.values())
    ]
    assert scorer.score_many(batch) == [scorer.score(item) for item in batch]


# -- registry and config -------------------------------------------------------------------


def test_registry_lists_every_metric_in_order() -> None:
    assert REGISTRY.names()[: len(ALL_METRICS)] == ALL_METRICS
    for name in REGISTRY.names():
        cls = REGISTRY.get(name)
        assert cls.name == name
        assert cls.direction in ("higher", "lower")
        assert cls.range[0] < cls.range[1]
        assert isinstance(cls.reference, Reference)
        assert cls.__module__.startswith("qie_bench.metrics.catalog.")  # discovered, not listed


def test_declarations_drive_the_gate_and_the_report() -> None:
    """Directions and the fidelity order come from the metric classes (nowhere else lists them)."""
    from qie_bench.gate.thresholds import Direction, known_gate_keys, metric_direction
    from qie_bench.report.data import fidelity_preference

    for cls in REGISTRY.classes():
        assert metric_direction(cls.name) is Direction(cls.direction)
        assert cls.name in known_gate_keys()
    assert REGISTRY.get("lpips_vs_baseline").direction == "lower"
    # The report's order of preference, as it was when the report listed it itself.
    assert fidelity_preference() == (
        "lpips_vs_baseline", "ssim_vs_baseline", "psnr_vs_baseline", "ssim_outside_mask", "psnr_outside_mask",
        "ssim", "psnr", "clip_iqa", "clip_score",
    )
    assert REGISTRY.get("clip_iqa").model.key == "clip_rn50"
    assert REGISTRY.get("clip_score").model.key == "clip_vit_l14"
    assert REGISTRY.get("lpips_vs_baseline").model.key == "lpips_alex"
    assert REGISTRY.get("ssim").model is None


def test_registry_discovers_a_package_and_orders_by_declared_order(tmp_path, monkeypatch) -> None:
    """A metric module dropped into the scanned package is found; `order` (then module name,
    then registration order) decides the default order, not import order or file names."""
    package = tmp_path / "extra_metrics"
    package.mkdir()
    (package / "__init__.py").write_text("")
    template = (
        "from qie_bench.metrics.base import Metric, Reference\n"
        "from {pkg} import REG\n"
        "@REG.register\n"
        "class {cls}(Metric):\n"
        "    name = '{name}'\n    direction = 'higher'\n    range = (0.0, 1.0)\n"
        "    reference = Reference.SOURCE\n    library = 'numpy'\n    function = 'x'\n{extra}"
        "    def compute(self, batch):\n        return [0.0] * len(batch)\n"
    )
    (package / "a_late.py").write_text(template.format(pkg="extra_metrics", cls="Late", name="late", extra=""))
    (package / "z_early.py").write_text(template.format(pkg="extra_metrics", cls="Early", name="early",
                                                         extra="    order = 5\n"))
    (package / "__init__.py").write_text("from qie_bench.metrics.registry import MetricRegistry\n"
                                         "REG = MetricRegistry('extra_metrics')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import extra_metrics

    assert extra_metrics.REG.names() == ("early", "late")
    assert extra_metrics.REG.direction("late") == "higher" and extra_metrics.REG.direction("nope") is None


def test_registry_rejects_duplicates_and_suggests_names() -> None:
    registry = MetricRegistry()

    class First(Metric):
        name = "sharpness"

    class Second(Metric):
        name = "sharpness"

    registry.register(First)
    registry.register(First)  # the same class again (module reload) is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Second)
    with pytest.raises(UnknownMetricError, match="did you mean 'sharpness'") as info:
        registry.get("sharpnes")
    assert isinstance(info.value, UserInputError) and isinstance(info.value, ValueError)


def test_config_defaults_and_validation() -> None:
    config = MetricsConfig()
    on = tuple(n for n in REGISTRY.names() if REGISTRY.get(n).default_on)
    assert config.names == on and config.names[: len(ALL_METRICS)] == ALL_METRICS
    assert {"judge_sc", "judge_pq", "judge_overall"} <= set(REGISTRY.names()) - set(on)  # a 7B judge only when named
    assert config.weights == "real" and config.device == "cpu"
    assert MetricsConfig(names="ssim, psnr").names == ("ssim", "psnr")
    with pytest.raises(ValidationError, match="did you mean 'ssim'"):
        MetricsConfig(names=("ssmi",))
    with pytest.raises(ValidationError, match="listed twice"):
        MetricsConfig(names=("ssim", "ssim"))
    with pytest.raises(ValidationError):
        MetricsConfig(weights="pretrained")
    with pytest.raises(ValidationError):
        MetricsConfig(weight_dir="/tmp")  # extra="forbid": a typo is not ignored
    with pytest.raises(ValidationError, match="not a torch device"):
        MetricsConfig(device="gpu0")
    with pytest.raises(ValidationError):
        config.weights = "random"  # frozen
    assert not config.names_given and MetricsConfig(names="ssim").names_given


@pytest.mark.parametrize("device", [
    "cpu", "cuda", "cuda:0", "cuda:12", "mps", "meta", "xpu:1", "cpu:0", "hip", "privateuseone",
    "gpu0", "gpu:0", "cuda:-1", "cuda:x", "CUDA", "cuda:0 ", " cuda", "", "cuda:01", "cuda:0:1", "cuda:", "cuda1",
])
def test_device_validation_without_torch_agrees_with_torch(device: str) -> None:
    try:
        torch.device(device)
        accepted_by_torch = True
    except (RuntimeError, ValueError):
        accepted_by_torch = False
    try:
        MetricsConfig(device=device)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == accepted_by_torch


def test_declarations_and_config_need_no_torch() -> None:
    """Listing metrics, reading every declaration, the gate's directions and validating a
    MetricsConfig import neither torch nor the metric libraries nor PIL (a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qie_bench.metrics.registry import REGISTRY\n"
        "from qie_bench.metrics.config import MetricsConfig\n"
        "from qie_bench.gate.thresholds import metric_direction\n"
        "names = REGISTRY.names()\n"
        "assert len(names) >= 9, names\n"
        "for n in names:\n"
        "    d = REGISTRY.get(n).declaration()\n"
        "    assert d['direction'] in ('higher', 'lower') and metric_direction(n) is not None\n"
        "MetricsConfig(names=','.join(names), device='cuda:1', weights='real')\n"
        "MetricsConfig()\n"
        "heavy = [m for m in ('torch', 'torchmetrics', 'pyiqa', 'transformers', 'torchvision', 'PIL') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_describe_records_library_version_and_settings(scorer: Scorer) -> None:
    described = scorer.describe()
    assert set(described) == set(PIXEL_METRICS)
    ssim_info = described["ssim_outside_mask"]
    assert ssim_info["library"] == "torchmetrics" and ssim_info["version"]
    assert ssim_info["reference"] == "source" and ssim_info["region"] == "outside_mask"
    assert ssim_info["weights"] == "none"
    assert to_json_value(described["psnr"])["range"] == [0.0, "inf"]
    # The SSIM convention is recorded with every SSIM (the gate compares it; issue 14 item 9).
    assert described["ssim"]["convention"] == described["ssim_vs_baseline"]["convention"]
    assert "whole map" in described["ssim"]["convention"] and "reflect" in described["ssim"]["convention"]
    assert "outside the mask" in ssim_info["convention"] and ssim_info["convention"] != described["ssim"]["convention"]
    assert described["psnr"]["convention"] is None


def test_to_json_value_handles_non_finite_nested_values() -> None:
    value = {"a": math.inf, "b": [-math.inf, math.nan, 1.5, None], "c": (np.float32(2.0),), "d": Reference.TEXT}
    encoded = to_json_value(value)
    assert encoded == {"a": "inf", "b": ["-inf", "nan", 1.5, None], "c": [2.0], "d": "text"}
    json.dumps(encoded, allow_nan=False)
    decoded = from_json_value(encoded)
    assert decoded["a"] == math.inf and math.isnan(decoded["b"][1])


def test_pixel_metric_functions_batch(scorer: Scorer) -> None:
    """The pure functions take (B, C, H, W) batches and give one value per image."""
    from qie_bench.metrics.catalog.psnr import psnr
    from qie_bench.metrics.catalog.ssim import ssim

    (o1, s1), (o2, s2) = PAIRS["random"], (random_image(64, 80, 5), random_image(64, 80, 6))
    preds = torch.cat([to_tensor(o1), to_tensor(o2)])
    target = torch.cat([to_tensor(s1), to_tensor(s2)])
    batched = ssim(preds, target)
    assert batched.shape == (2,)
    assert float(batched[1]) == pytest.approx(float(ssim(to_tensor(o2), to_tensor(s2))[0]), abs=1e-7)
    assert float(psnr(preds.double(), target.double())[0]) == pytest.approx(
        peak_signal_noise_ratio(as_float(s1), as_float(o1), data_range=1.0), rel=PSNR_RTOL
    )

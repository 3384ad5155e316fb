"""`qie-bench score`: table and JSON output, and the one-line exit-2 errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from metric_fixtures import (
    blurred,
    empty_caches,
    forbid_network,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    rectangle_mask,
    skimage_photo,
)
from PIL import Image

from qie_bench.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("score")
    source = skimage_photo("coffee").reduce(2)  # 300 x 200
    paths = {
        "source": root / "source.png",
        "output": root / "output.png",
        "small": root / "small.png",
        "reference": root / "reference.png",
        "mask": root / "mask.png",
        "bad_mask": root / "bad_mask.png",
        "not_image": root / "notes.png",
    }
    source.save(paths["source"])
    blurred(source, 1.0).save(paths["output"])
    blurred(source, 1.0).resize((150, 100)).save(paths["small"])
    blurred(source, 1.2).save(paths["reference"])
    Image.fromarray(rectangle_mask(200, 300, (20, 30, 90, 120)).astype(np.uint8) * 255).save(paths["mask"])
    Image.new("L", (64, 64), 255).save(paths["bad_mask"])
    paths["not_image"].write_text("this is not a PNG")
    return {key: str(path) for key, path in paths.items()}


def test_score_prints_a_table(files, capsys) -> None:
    code = main([
        "score", "--source", files["source"], "--output", files["small"], "--reference", files["reference"],
        "--mask", files["mask"], "--caption", "a cup of coffee", "--weights", "random",
    ])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["metric", "value", "better", "reference", "backbone"]
    for name in ("clip_iqa", "ssim_outside_mask", "psnr_vs_baseline", "lpips_vs_baseline", "clip_score"):
        assert any(line.startswith(name + " ") for line in lines), name
    assert "metric weights: random" in out
    assert "note: vs source: output resized from 150x100 to 300x200 (PIL bicubic)" in out


def test_score_json_is_strict_json_with_inf_as_string(files, capsys) -> None:
    argv = ["score", "--source", files["source"], "--output", files["source"], "--metrics", "ssim,psnr,psnr_vs_baseline"]
    code = main([*argv, "--json"])
    payload = json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    assert code == 0
    assert payload["scores"] == {"ssim": 1.0, "psnr": "inf", "psnr_vs_baseline": None}
    assert payload["reasons"] == {"psnr_vs_baseline": "no baseline output to compare with"}
    assert payload["metrics"]["psnr"]["range"] == [0.0, "inf"]
    assert payload["weights_kind"] == "real"  # the default; pixel metrics need no weight file


@pytest.mark.parametrize(
    ("flag", "key", "message"),
    [
        ("--output", "missing", "file not found"),
        ("--output", "not_image", "not an image Pillow can read"),
        ("--output", "directory", "is a directory"),
        ("--reference", "not_image", "not an image Pillow can read"),
        ("--mask", "bad_mask", "mask is 64x64 but the source image is 300x200"),
    ],
)
def test_bad_files_exit_2_naming_the_file(files, tmp_path, capsys, flag: str, key: str, message: str) -> None:
    path = {"missing": str(tmp_path / "nope.png"), "directory": str(tmp_path)}.get(key) or files[key]
    argv = ["score", "--source", files["source"], "--output", files["output"], "--metrics", "ssim"]
    if flag == "--output":
        argv[argv.index("--output") + 1] = path
    else:
        argv += [flag, path]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qie-bench: error: {path}: ") and message in err
    assert len(err.splitlines()) == 1  # one line, no traceback


def test_unknown_metric_exits_2_with_suggestion(files, capsys) -> None:
    assert main(["score", "--source", files["source"], "--output", files["output"], "--metrics", "ssim,lpips"]) == 2
    assert "metric 'lpips': unknown metric (did you mean 'lpips_vs_baseline'?)" in capsys.readouterr().err


def test_missing_real_weights_exit_2(files, tmp_path, monkeypatch, capsys) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    argv = ["score", "--source", files["source"], "--output", files["output"], "--metrics", "clip_iqa"]
    argv += ["--weights-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pretrained metric weights not found" in err and str(tmp_path / "RN50.pt") in err


# -- without CLIP/LPIPS weights (issue 13 item 10) --------------------------------------------

MODEL_METRICS = ("clip_iqa", "lpips_vs_baseline", "clip_score")


def test_default_metrics_without_weights_compute_the_rest_and_say_what_was_skipped(files, tmp_path, monkeypatch,
                                                                                   capsys) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    argv = ["score", "--source", files["source"], "--output", files["output"], "--reference", files["reference"],
            "--mask", files["mask"], "--caption", "a cup of coffee"]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["skipped"]) == set(MODEL_METRICS)
    assert str(tmp_path / "torch" / "hub" / "clip" / "RN50.pt") in payload["skipped"]["clip_iqa"]
    for name in MODEL_METRICS:
        assert payload["scores"][name] is None  # never a random-weight value
        assert payload["reasons"][name] == payload["skipped"][name]
        assert payload["skipped"][name].startswith("real weights not found: ") and "to get it" in payload["skipped"][name]
        assert name not in payload["metrics"]
    pixel = ("ssim", "ssim_outside_mask", "ssim_vs_baseline", "psnr", "psnr_outside_mask", "psnr_vs_baseline")
    assert all(isinstance(payload["scores"][name], float) for name in pixel)
    assert list(payload["scores"])[:9] == ["clip_iqa", *pixel[:3], *pixel[3:], "lpips_vs_baseline", "clip_score"]
    assert payload["weights_kind"] == "real"

    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("clip_iqa "))
    assert row.split()[1] == "-" and "skipped: real weights not found" in row
    assert "skipped 3 metrics (name them with --metrics to make missing weights an error):" in out
    assert any(line.startswith("  lpips_vs_baseline: real weights not found: torchvision AlexNet") for line in out.splitlines())


def test_named_metric_without_weights_is_still_an_error(files, tmp_path, monkeypatch, capsys) -> None:
    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    argv = ["score", "--source", files["source"], "--output", files["output"], "--metrics", "ssim,lpips_vs_baseline"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pretrained metric weights not found" in err and "lpips_vs_baseline" in err and len(err.strip().splitlines()) == 1


def test_suite_metric_names_without_weights_are_an_error(tmp_path, monkeypatch) -> None:
    """A suite's `[metrics] names` is an explicit list: the scorer refuses even when told it may skip."""
    from qie_bench.errors import UserInputError
    from qie_bench.metrics import MetricsConfig, Scorer

    empty_caches(monkeypatch, tmp_path)
    forbid_network(monkeypatch)
    with pytest.raises(UserInputError, match="CLIP RN50"):
        Scorer(MetricsConfig.model_validate({"names": ["ssim", "clip_iqa"]}), missing_weights="skip")
    assert Scorer(MetricsConfig(), missing_weights="skip").skipped.keys() == set(MODEL_METRICS)
    with pytest.raises(UserInputError):  # and the default (what runs use) never skips
        Scorer(MetricsConfig())


# -- images that are not 8-bit (issue 14 item 10) -------------------------------------------------


def _gray16(tmp_path) -> tuple[str, str, np.ndarray]:
    """A 16-bit grayscale PNG with real 16-bit detail, and the same picture at 8 bits."""
    gray8 = np.asarray(skimage_photo("coffee").reduce(2).convert("L"), dtype=np.uint16)
    low_bits = np.random.default_rng(5).integers(0, 128, gray8.shape, dtype=np.uint16)  # rounds back down to gray8
    gray16 = gray8 * 257 + low_bits
    path16, path8 = tmp_path / "gray16.png", tmp_path / "gray8.png"
    Image.fromarray(gray16).save(path16)
    Image.fromarray(gray8.astype(np.uint8)).save(path8)
    with Image.open(path16) as check:
        assert check.mode == "I;16"
    return str(path16), str(path8), gray16


def test_16bit_png_is_scaled_not_clipped(tmp_path, capsys) -> None:
    path16, path8, _ = _gray16(tmp_path)
    assert main(["score", "--source", path8, "--output", path16, "--metrics", "ssim,psnr", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]
    assert scores == {"ssim": 1.0, "psnr": "inf"}  # the same picture (clipped to white it scored 0.398)


def test_16bit_mask_is_thresholded_at_half_scale(tmp_path) -> None:
    from qie_bench.metrics import load_mask

    expected = rectangle_mask(40, 60, (5, 10, 25, 50))
    values = np.where(expected, 40000, 20000).astype(np.uint16)  # both > 255: clipping made all True
    Image.fromarray(values).save(tmp_path / "mask16.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "mask16.png", (60, 40)), expected)


def test_float_and_32bit_images(tmp_path, capsys) -> None:
    _, path8, gray16 = _gray16(tmp_path)
    Image.fromarray((gray16 / 65535).astype(np.float32)).save(tmp_path / "float.tiff")
    Image.fromarray(gray16.astype(np.int32)).save(tmp_path / "int32.tiff")
    for name in ("float.tiff", "int32.tiff"):
        with Image.open(tmp_path / name) as check:
            assert check.mode in ("F", "I"), check.mode
        assert main(["score", "--source", path8, "--output", str(tmp_path / name), "--metrics", "ssim", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["scores"]["ssim"] == pytest.approx(1.0, abs=1e-6), name
    Image.fromarray((gray16 / 257).astype(np.float32)).save(tmp_path / "float255.tiff")  # 0..255 floats: ambiguous
    negative = gray16.astype(np.int32)
    negative[0, 0] = -1
    Image.fromarray(negative).save(tmp_path / "negative.tiff")
    for name, words in (("float255.tiff", "outside [0, 1]"), ("negative.tiff", "are not 16-bit intensities")):
        path = str(tmp_path / name)
        assert main(["score", "--source", path8, "--output", path, "--metrics", "ssim"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"qie-bench: error: {path}: mode ") and words in err and len(err.splitlines()) == 1

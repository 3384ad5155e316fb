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

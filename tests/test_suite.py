"""Suite files are validated once, when read: each problem is one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qie_bench.cli import main
from qie_bench.errors import UserInputError
from qie_bench.suite import GenerationConfig, load_suite, output_size, parse_bytes, size_text

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_suites_validate() -> None:
    for path in sorted((ROOT / "suites").glob("*.toml")):
        suite = load_suite(path)
        assert suite.case_set_dir().is_dir(), path
        assert suite.fingerprint().startswith("sha256:")


def test_fingerprint_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    text = (ROOT / "suites" / "smoke.toml").read_text()
    a = tmp_path / "a.toml"
    a.write_text(text.replace("cases/edit-v3", str(ROOT / "suites/cases/edit-v3")))
    b = tmp_path / "b.toml"
    b.write_text("# another comment\n" + a.read_text())
    c = tmp_path / "c.toml"
    c.write_text(a.read_text().replace("steps = 4", "steps = 5"))
    assert load_suite(a).fingerprint() == load_suite(b).fingerprint()
    assert load_suite(a).fingerprint() != load_suite(c).fingerprint()


# (edit to smoke.toml, expected key in the message, expected words in the message)
BAD = [
    (("[generation]", "[generation]\nstpes = 3"), "generation.stpes", "did you mean 'steps'"),
    (('source = "tiny"', 'source = "tinny"'), "model.source", "did you mean 'tiny'"),
    (("\narea = 16384", "\nwidth = 100"), "generation.width", "multiple of 16"),
    (("repeats = 1", "repeats = 0"), "measurement.repeats", "greater than or equal to 1"),
    (("repeats = 1", 'repeats = "two"'), "measurement.repeats", "valid integer"),
    (('kind = "int8"', 'kind = "int9"'), "variants[1] ('int8').kind", "did you mean 'int8'"),
    (('dtype = "fp32"', 'dtype = "fp33"'), "variants[0] ('fp32').dtype", "did you mean 'fp32'"),
    (('backend = "bnb"', 'backend = "bnb"\nthreshhold = 6.0'), "variants[1] ('int8').threshhold", "did you mean 'threshold'"),
    (('name = "int8"', 'name = "fp32"'), "variants[1] ('fp32').name", "duplicate variant name"),
    (('baseline_variant = "fp32"', 'baseline_variant = "fp33"'), "baseline_variant", "did you mean 'fp32'"),
    (("[measurement]", '[measurement]\nmemory_budget = "12 gigs"'), "measurement.memory_budget", "not a size"),
    (('source = "tiny"', 'source = "pretrained"'), "model", "needs id"),
    (("[cases]", "[cases\n"), "smoke.toml", "malformed TOML"),
    (('name = "smoke"', 'name = "a b"'), "name", "should match pattern"),
    (("[model]", "[model]\ntiny_area = 3"), "model.tiny_area", "unknown key"),
    (('latency_p95_s = "+25%"', 'latency_p95_s = "+25 percent"'), "gates", "latency_p95_s"),
]


@pytest.mark.parametrize("edit,key,words", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_suite_is_one_line_error(tmp_path: Path, edit: tuple[str, str], key: str, words: str) -> None:
    text = (ROOT / "suites" / "smoke.toml").read_text()
    assert edit[0] in text, edit
    path = tmp_path / "smoke.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and key in msg and words in msg, msg


def test_cli_bad_suite_exit_2_and_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text((ROOT / "suites" / "smoke.toml").read_text().replace("steps = 4", "stpes = 4"))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "generation.stpes" in err and "did you mean 'steps'" in err
    assert not (tmp_path / "out").exists(), "nothing is written for a suite that does not validate"


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml")


@pytest.mark.parametrize("text,expected", [("12GiB", 12 * 2**30), ("8GB", 8 * 10**9), ("512MiB", 512 * 2**20), ("1.5 GiB", int(1.5 * 2**30))])
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_memory_budget_is_bytes_once_validated(tmp_path: Path) -> None:
    text = (ROOT / "suites" / "smoke.toml").read_text().replace("cases/edit-v3", str(ROOT / "suites/cases/edit-v3"))
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(text.replace("[measurement]", '[measurement]\nmemory_budget = "12GiB"'))
    b.write_text(text.replace("[measurement]", "[measurement]\nmemory_budget = 12884901888"))
    assert load_suite(a).measurement.memory_budget == 12 * 2**30
    # The same budget written as text or as bytes is the same suite.
    assert load_suite(a).fingerprint() == load_suite(b).fingerprint()


@pytest.mark.parametrize("n,text", [(12 * 2**30, "12GiB"), (512 * 2**20, "512MiB"), (8 * 10**9, "8GB"), (1000, "1KB"), (1023, "1023B")])
def test_size_text_is_read_back_by_parse_bytes(n: int, text: str) -> None:
    assert size_text(n) == text
    assert parse_bytes(text) == n


def test_suites_validate_without_torch() -> None:
    """Reading and validating every shipped suite imports neither torch nor any variant's build
    code (options are apart from build code; metric declarations import no torch)."""
    import subprocess
    import sys

    code = (
        "import sys, pathlib\n"
        "import qie_bench.suite as s\n"
        f"for p in sorted(pathlib.Path({str(ROOT / 'suites')!r}).glob('*.toml')): s.load_suite(p)\n"
        "heavy = [m for m in ('qie_bench.variants.base', 'qie_bench.variants.registry', 'qie_bench.models', 'diffusers') if m in sys.modules]\n"
        "print('heavy:' + ','.join(heavy))\n"
        "print('torch:' + str('torch' in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "heavy:\n" in out, out
    assert "torch:False" in out, out


# ----------------------------------------------------------------------------------------------
# Output size: [generation] area = N, each case at its source's aspect ratio
# ----------------------------------------------------------------------------------------------


def test_output_size_by_hand() -> None:
    # 3:2 at 16384 px: width = sqrt(16384 * 1.5) = 156.77 -> 9.80 x 16 -> 160; height = 156.77 / 1.5
    # = 104.51 -> 6.53 x 16 -> 112. 160x112 = 17920 px; 160 vs 112 * 1.5 = 168: 8 px off the ratio.
    assert output_size(16384, (300, 200)) == (160, 112)
    assert output_size(16384, (200, 300)) == (112, 160)  # portrait: the same, turned
    assert output_size(16384, (512, 512)) == (128, 128)  # square: the smoke suites' old 128x128
    # 4:3 at 512^2: sqrt(262144 * 4/3) = 591.2 -> 36.95 -> 592; 591.2 * 3/4 = 443.4 -> 27.71 -> 448
    assert output_size(262144, (512, 384)) == (592, 448)
    # 3:2 at 1 MP: 1254.1 -> 78.38 -> 1248; 836.1 -> 52.26 -> 832 (what diffusers' 32-px rule gives too)
    assert output_size(1048576, (300, 200)) == (1248, 832)
    assert output_size(256, (4000, 10)) == (320, 16)  # never below one 16-px step


def test_area_resolves_per_case_into_the_pipeline_kwargs() -> None:
    gen = GenerationConfig(steps=2, area=16384)
    kwargs = gen.for_source((300, 200)).pipeline_kwargs()
    assert (kwargs["width"], kwargs["height"]) == (160, 112)
    with pytest.raises(ValueError, match="for_source"):
        gen.pipeline_kwargs()  # never the pipeline's 1 MP default by accident
    fixed = GenerationConfig(width=64, height=48)
    assert fixed.for_source((300, 200)) is fixed  # width/height: one size for every case
    unset = GenerationConfig().for_source((300, 200)).pipeline_kwargs()
    assert "width" not in unset and "height" not in unset  # unset: the pipeline's ~1 MP default


@pytest.mark.parametrize("size", ["width = 128", "height = 128", "width = 128\nheight = 128"])
def test_area_and_width_height_are_mutually_exclusive(tmp_path: Path, size: str) -> None:
    import re

    text = (ROOT / "suites" / "smoke.toml").read_text().replace("cases/edit-v3", str(ROOT / "suites/cases/edit-v3"))
    text = re.sub(r"(?m)^(width|height|area) = \d+\n", "", text)  # whatever the file sets today
    path = tmp_path / "s.toml"
    path.write_text(text.replace("[generation]", f"[generation]\narea = 16384\n{size}", 1))
    with pytest.raises(UserInputError) as info:
        load_suite(path)
    msg = str(info.value)
    assert "\n" not in msg and f"{path}: generation.area: is given with" in msg and "either area" in msg, msg


def test_area_is_left_out_of_the_fingerprint_when_unset() -> None:
    """Suites that set no area fingerprint as before the key existed (their baselines still match)."""
    import hashlib
    import json

    suite = load_suite(ROOT / "benchmarks" / "smoke-noise-3rep.toml")
    assert suite.generation.area is None and suite.generation.width == 128
    data = suite.model_dump(mode="json", exclude={"path", "cli_overrides", "gates", "cost", "description"})
    for entry in data["variants"]:
        if entry.get("runtime") is None:
            entry.pop("runtime", None)
    del data["generation"]["area"]
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False)
    assert suite.fingerprint() == "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _cases_of(suite):
    """Every case a suite runs, a chain as each of its turns (turn k > 1 given a previous output
    of another size: the size follows the chain's original, not that output)."""
    from qie_bench.cases import load_case_set

    out = []
    for case in load_case_set(suite.case_set_dir(), check_images=False).select(suite.cases.select):
        if not case.is_chain:
            out.append(case)
            continue
        for k in range(1, len(case.turns) + 1):
            out.append(case.turn(k, None if k == 1 else Path("/nonexistent/previous-output.png")))
    return out


def test_every_shipped_suite_keeps_each_sources_aspect_ratio() -> None:
    from PIL import Image

    non_square = set()
    for path in sorted((ROOT / "suites").glob("*.toml")):
        suite = load_suite(path)
        assert suite.generation.area is not None, f"{path.name}: shipped suites size outputs by area"
        for case in _cases_of(suite):
            src = case.original_image_path or case.image_paths[0]
            with Image.open(src) as im:
                W, H = im.size  # the source the metrics compare with
            gen = suite.generation.for_source(case.source_size())  # what the runner does per case
            w, h = gen.width, gen.height
            assert w % 16 == 0 and h % 16 == 0, (path.name, case.id, w, h)
            assert abs(w - h * W / H) <= 16, (path.name, case.id, (W, H), (w, h))
            assert 0.8 < w * h / suite.generation.area < 1.2, (path.name, case.id, w, h)
            if W != H:
                non_square.add(case.id.split("@")[0])
    # the shipped sets' non-square sources (edit-v1/v2's ten, edit-v3's coffee chain) were all sized
    assert {"rm-spoon-coffee", "add-mug-table", "add-bottle-mug-table", "recolor-coin-gold", "chain-coffee-zh"} <= non_square


def test_a_chains_turns_are_all_made_at_the_size_of_its_first(tmp_path: Path) -> None:
    from PIL import Image

    from qie_bench.cases import load_case_set

    chain = load_case_set(ROOT / "suites" / "cases" / "edit-v3").get("chain-coffee-zh")
    previous = tmp_path / "turn1.png"
    Image.new("RGB", (48, 80)).save(previous)  # a previous output of another shape
    gen = GenerationConfig(area=16384)
    sizes = {gen.for_source(chain.turn(k, None if k == 1 else previous).source_size()).pipeline_kwargs()["width"]
             for k in range(1, len(chain.turns) + 1)}
    assert sizes == {160}  # 512x341 at 16384 px: 160x112, every turn


def test_size_override_replaces_the_suites_area() -> None:
    from qie_bench.plan import Overrides, apply_overrides

    suite = apply_overrides(load_suite(ROOT / "suites" / "smoke.toml"), Overrides(size="48x32"))
    g = suite.generation
    assert (g.area, g.width, g.height) == (None, 48, 32)
    assert g.for_source((451, 300)).pipeline_kwargs()["width"] == 48  # one size for every case

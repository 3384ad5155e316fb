"""Case sets: the shipped `edit-v1` and `edit-v2` sets, the loader's validation, fingerprints, seeds,
a team's own set (its own categories, a Chinese caption), CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qie_bench.cases import (
    CATEGORIES,
    DEFAULT_MAX_INSTRUCTION_CHARS,
    MAX_CAPTION_CHARS,
    MAX_EXPECTED_TEXT_CHARS,
    CaseSet,
    load_case_set,
)
from qie_bench.cli import main
from qie_bench.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "suites" / "cases" / "edit-v1"
SHIPPED_V2 = REPO / "suites" / "cases" / "edit-v2"
# edit-v2's expected texts, read off the instructions by hand
EXPECTED_TEXT = {
    "txt-price-mug": "$14.99",
    "txt-new-box": "新品",
    "txt-banner-bottle": "年终大促",
    "txtadd-slogan-bottle": "清爽一夏",
    "txtadd-caption-chelsea": "Monday mood",
    "txtadd-title-rocket": "LAUNCH NIGHT",
}

# The small broken-copy sets use these shipped cases: a masked single-image photo case, a
# masked procedural case and a 3-image case, so every kind of reference is exercised.
MINI_IDS = ("rm-spoon-coffee", "rm-watermark-bottle", "add-bottle-mug-table")


@pytest.fixture(scope="module")
def shipped() -> CaseSet:
    return load_case_set(SHIPPED)


def _manifest_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "cases.jsonl").read_text("utf-8").splitlines() if line.strip()]


def _write_rows(root: Path, rows: list[dict]) -> None:
    (root / "cases.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A 3-case copy of the shipped set (only the files those cases use), in tmp_path/mini."""
    root = tmp_path / "mini"
    rows = [r for r in _manifest_rows(SHIPPED) if r["id"] in MINI_IDS]
    rows.sort(key=lambda r: MINI_IDS.index(r["id"]))
    for r in rows:
        for rel in [*r["images"], *([r["mask"]] if r["mask"] else [])]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHIPPED / rel, root / rel)
    _write_rows(root, rows)
    return root


# ------------------------------------------------------------------------------------------
# The shipped set
# ------------------------------------------------------------------------------------------


def test_shipped_set_is_valid_and_balanced(shipped: CaseSet) -> None:
    cases = shipped.cases
    assert shipped.name == "edit-v1"
    assert len(cases) >= 16
    n_en = sum(c.language == "en" for c in cases)
    n_zh = sum(c.language == "zh" for c in cases)
    assert n_en + n_zh == len(cases)
    assert abs(n_en - n_zh) <= max(2, len(cases) // 5), (n_en, n_zh)
    assert sum(len(c.image_paths) > 1 for c in cases) >= 3
    assert sum(c.mask_path is not None for c in cases) >= 8
    assert {c.category for c in cases} == set(CATEGORIES)
    for c in cases:
        for p in (*c.image_paths, *([c.mask_path] if c.mask_path else [])):
            assert p.is_absolute() and p.is_relative_to(shipped.root)


def test_shipped_files_are_small_and_well_formed(shipped: CaseSet) -> None:
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 4_000_000
    for c in shipped.cases:
        images = c.load_images()
        assert all(im.mode == "RGB" and max(im.size) <= 512 for im in images)
        mask = c.load_mask()
        if c.mask_path is None:
            assert mask is None
            continue
        with Image.open(c.mask_path) as m:
            assert m.mode == "L"  # single-channel on disk, as documented
        assert mask is not None and mask.dtype == bool
        assert mask.shape == (images[0].height, images[0].width)
        assert 0 < mask.mean() < 1, f"{c.id}: mask must mark some but not all pixels"
    # every image/mask file in the folder is referenced (no stray files shipped by accident)
    referenced = {p for c in shipped.cases for p in (*c.image_paths, c.mask_path) if p}
    on_disk = {p.resolve() for p in SHIPPED.rglob("*.png")}
    assert on_disk == referenced


def test_manifest_keys_exact_and_ordered() -> None:
    keys = ["id", "category", "language", "instruction", "target_caption", "images", "mask", "source"]
    for row in _manifest_rows(SHIPPED):
        assert list(row) == keys
    with_text = [*keys[:5], "expected_text", *keys[5:]]
    for row in _manifest_rows(SHIPPED_V2):
        assert list(row) == (with_text if row["id"] in EXPECTED_TEXT else keys)


def test_edit_v2_is_edit_v1_plus_expected_text() -> None:
    v1, v2 = load_case_set(SHIPPED), load_case_set(SHIPPED_V2)
    assert v2.name == "edit-v2" and v2.fingerprint != v1.fingerprint
    assert {c.id: c.expected_text for c in v2.cases if c.expected_text} == EXPECTED_TEXT
    assert {c.id for c in v2.cases if c.category in ("text-replace", "text-add")} == set(EXPECTED_TEXT)
    assert all(c.expected_text is None for c in v1.cases)
    for a, b in zip(v1.cases, v2.cases, strict=True):
        # same cases otherwise: same ids (so same seeds), instructions, captions and file bytes
        assert (a.id, a.category, a.instruction, a.target_caption) == (b.id, b.category, b.instruction, b.target_caption)
        assert [p.read_bytes() for p in a.image_paths] == [p.read_bytes() for p in b.image_paths]
        assert (a.mask_path and a.mask_path.read_bytes()) == (b.mask_path and b.mask_path.read_bytes())
        if b.expected_text:
            assert b.expected_text in b.instruction
    # only the manifest and README differ, and no stray files
    files = sorted(p.relative_to(SHIPPED_V2) for p in SHIPPED_V2.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(SHIPPED) for p in SHIPPED.rglob("*") if p.is_file())


def test_every_shipped_suite_uses_the_current_case_sets() -> None:
    import tomllib

    for path in sorted((REPO / "suites").glob("*.toml")):
        # the smoke suites run the chained cases too, which edit-v3 adds to edit-v2 (tests/test_chains.py)
        want = "cases/edit-v3" if path.name in ("smoke.toml", "smoke-chains.toml") else "cases/edit-v2"
        assert tomllib.loads(path.read_text())["cases"]["path"] == want, path


@pytest.mark.parametrize("set_name", ["edit-v1", "edit-v2"])
def test_generator_is_deterministic(tmp_path: Path, set_name: str) -> None:
    spec = importlib.util.spec_from_file_location("make_caseset", REPO / "scripts" / "make_caseset.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = REPO / "suites" / "cases" / set_name
    out = tmp_path / set_name
    mod.generate(out, set_name)
    shipped_files = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    new_files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert new_files == shipped_files
    for rel in shipped_files:
        a, b = (shipped / rel).read_bytes(), (out / rel).read_bytes()
        if a != b and rel.suffix == ".png":
            same_pixels = np.array_equal(np.asarray(Image.open(shipped / rel)), np.asarray(Image.open(out / rel)))
            pytest.fail(
                f"{rel} differs from the shipped file ({'same pixels: a different zlib/Pillow encoder' if same_pixels else 'different pixels'})"
            )
        assert a == b, f"{rel} differs from the shipped file"


# ------------------------------------------------------------------------------------------
# Fingerprint, seeds, selection
# ------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_location_independent(shipped: CaseSet, tmp_path: Path) -> None:
    assert shipped.fingerprint.startswith("sha256:") and len(shipped.fingerprint) == 7 + 64
    assert load_case_set(SHIPPED).fingerprint == shipped.fingerprint
    copy = tmp_path / "edit-v1"
    shutil.copytree(SHIPPED, copy)
    assert load_case_set(copy).fingerprint == shipped.fingerprint
    # the quick path (no decoding) hashes the same bytes
    assert load_case_set(copy, check_images=False).fingerprint == shipped.fingerprint


def test_fingerprint_changes_with_one_image_byte(shipped: CaseSet, tmp_path: Path) -> None:
    copy = tmp_path / "edit-v1"
    shutil.copytree(SHIPPED, copy)
    target = copy / "images" / "mug_plain.png"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    # without decoding, only the bytes count
    assert load_case_set(copy, check_images=False).fingerprint != shipped.fingerprint
    # a valid re-encode with one changed pixel also changes it (full validation passes)
    img = np.asarray(Image.open(SHIPPED / "images" / "mug_plain.png")).copy()
    img[0, 0, 0] ^= 1
    Image.fromarray(img).save(target)
    assert load_case_set(copy).fingerprint != shipped.fingerprint


def test_fingerprint_changes_with_manifest(shipped: CaseSet, tmp_path: Path) -> None:
    copy = tmp_path / "edit-v1"
    shutil.copytree(SHIPPED, copy)
    rows = _manifest_rows(copy)
    rows[0]["target_caption"] += "."
    _write_rows(copy, rows)
    assert load_case_set(copy).fingerprint != shipped.fingerprint


def test_fingerprint_changes_with_expected_text(tmp_path: Path) -> None:
    v2 = load_case_set(SHIPPED_V2)
    copy = tmp_path / "edit-v2"
    shutil.copytree(SHIPPED_V2, copy)
    rows = _manifest_rows(copy)
    row = next(r for r in rows if r["id"] == "txt-price-mug")
    row["expected_text"] = "$14.98"
    _write_rows(copy, rows)
    changed = load_case_set(copy)
    assert changed.get("txt-price-mug").expected_text == "$14.98"
    assert changed.fingerprint != v2.fingerprint
    del row["expected_text"]  # dropping it is a change too
    _write_rows(copy, rows)
    dropped = load_case_set(copy)
    assert dropped.get("txt-price-mug").expected_text is None
    assert len({dropped.fingerprint, changed.fingerprint, v2.fingerprint}) == 3


def test_seed_depends_only_on_case_id(shipped: CaseSet, mini: Path) -> None:
    case = shipped.get("rm-spoon-coffee")
    expected = int.from_bytes(hashlib.sha256(b"0:rm-spoon-coffee").digest()[:4], "big")
    assert case.seed() == expected
    assert case.seed(7) == int.from_bytes(hashlib.sha256(b"7:rm-spoon-coffee").digest()[:4], "big")
    assert case.seed(7) != case.seed()
    # same id in another set, another position, another selection: same seed
    other = load_case_set(mini)
    assert other.cases[0].id == "rm-spoon-coffee" and shipped.cases.index(case) != 0
    assert other.cases[0].seed() == case.seed()
    assert shipped.select(["rm-spoon-coffee"]).cases[0].seed() == case.seed()
    rows = _manifest_rows(mini)
    _write_rows(mini, rows[::-1])
    assert load_case_set(mini).get("rm-spoon-coffee").seed() == case.seed()
    assert len({c.seed() for c in shipped.cases}) == len(shipped.cases)


def test_select(shipped: CaseSet) -> None:
    assert shipped.select([]) is shipped
    sub = shipped.select(["recolor", "rm-spoon-coffee"])
    ids = [c.id for c in sub.cases]
    assert "rm-spoon-coffee" in ids and all(c.category == "recolor" or c.id == "rm-spoon-coffee" for c in sub.cases)
    assert ids == [c.id for c in shipped.cases if c.id in ids]  # manifest order kept
    assert sub.fingerprint != shipped.fingerprint
    assert shipped.select(["rm-spoon-coffee", "recolor"]).fingerprint == sub.fingerprint
    assert shipped.select(list(CATEGORIES)).fingerprint == shipped.fingerprint
    with pytest.raises(UserInputError, match=r"no case id or category 'recolour'.*did you mean 'recolor'"):
        shipped.select(["recolour"])
    with pytest.raises(UserInputError, match=r"did you mean 'rm-spoon-coffee'"):
        shipped.select(["rm-spoon-cofee"])


def test_cli_validate_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "validate", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("OK: edit-v1: ")
        and "with masks" in out
        and "multi-image" in out
        and "en=" in out
        and "zh=" in out
    )
    assert load_case_set(SHIPPED).fingerprint in out
    assert main(["cases", "list", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "rm-spoon-coffee" in out and "add-bottle-mug-table" in out


# ------------------------------------------------------------------------------------------
# Broken inputs: each must fail with one line naming the file/case and the problem
# ------------------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny IDAT: a decompression-bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _edit(line: int, **changes: object) -> Callable[[Path], None]:
    """Mutate manifest row ``line`` (1-based); a value of ... deletes the key."""

    def apply(root: Path) -> None:
        rows = _manifest_rows(root)
        for k, v in changes.items():
            if v is ...:
                del rows[line - 1][k]
            else:
                rows[line - 1][k] = v
        _write_rows(root, rows)

    return apply


def _raw_line(line: int, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        lines = (root / "cases.jsonl").read_text("utf-8").splitlines()
        lines[line - 1] = text
        (root / "cases.jsonl").write_text("\n".join(lines) + "\n", "utf-8")

    return apply


def _file(rel: str, fn: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda root: fn(root / rel)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _save(img: Image.Image) -> Callable[[Path], None]:
    return lambda p: img.save(p, format="PNG")


def _save_as(img: Image.Image, fmt: str) -> Callable[[Path], None]:
    return lambda p: img.save(p, format=fmt)


def _symlink_outside(root: Path) -> None:
    outside = root.parent / "outside.png"
    shutil.copyfile(root / "images" / "coffee.png", outside)
    (root / "images" / "link.png").symlink_to(outside)
    _edit(2, images=["images/link.png"])(root)


L2 = "cases.jsonl:2 (case 'rm-watermark-bottle')"  # the row most cases below break
L3 = "cases.jsonl:3 (case 'add-bottle-mug-table')"
WM = "images/bottle_watermark.png"
WM_MASK = "masks/bottle_watermark.png"

BAD_INPUTS: list[tuple[str, Callable[[Path], None], str, str]] = [
    # (name, break the mini set, expected `where` fragment, expected problem fragment)
    ("manifest-missing", lambda r: (r / "cases.jsonl").unlink(), "cases.jsonl", "manifest is missing"),
    ("manifest-empty", lambda r: (r / "cases.jsonl").write_bytes(b""), "cases.jsonl", "manifest is empty"),
    ("manifest-blank-lines", lambda r: (r / "cases.jsonl").write_text("\n\n  \n"), "cases.jsonl", "manifest is empty"),
    ("manifest-not-utf8", lambda r: (r / "cases.jsonl").write_bytes(b'{"id": "\xff"}\n'), "cases.jsonl", "not UTF-8"),
    ("not-json", _raw_line(2, '{"id": "rm-watermark-bottle", '), "cases.jsonl:2", "not valid JSON"),
    ("not-an-object", _raw_line(2, '["rm-watermark-bottle"]'), "cases.jsonl:2", "expected a JSON object, got a list"),
    ("duplicate-key", _raw_line(2, '{"id": "a", "id": "b"}'), "cases.jsonl:2", "key 'id' appears twice"),
    ("unknown-key", _edit(2, instrution="x"), L2, "unknown key 'instrution' (did you mean 'instruction'?)"),
    ("missing-key", _edit(2, target_caption=...), L2, "missing key 'target_caption'"),
    ("wrong-type-images", _edit(2, images=WM), L2, "'images' must be a list, got a string"),
    ("wrong-type-mask", _edit(2, mask=5), L2, "'mask' must be a string or null, got a number"),
    ("wrong-type-id", _edit(2, id=12), "cases.jsonl:2", "'id' must be a string, got a number"),
    ("wrong-type-image-item", _edit(2, images=[None]), L2, "images[0] must be a string path, got null"),
    (
        "duplicate-id",
        _edit(2, id="rm-spoon-coffee"),
        "cases.jsonl:2 (case 'rm-spoon-coffee')",
        "duplicate id 'rm-spoon-coffee' (first used on line 1)",
    ),
    ("bad-id", _edit(2, id="Bad_ID"), "cases.jsonl:2 (case 'Bad_ID')", "bad id 'Bad_ID'"),
    ("id-with-newline", _edit(2, id="a\nb"), 'cases.jsonl:2 (case "a\\nb")', 'bad id "a\\nb"'),
    ("bad-category", _edit(2, category="Text Replace"), L2, "bad category 'Text Replace' (did you mean 'text-replace'?)"),
    ("bad-category-underscore", _edit(2, category="logo_swap"), L2, "bad category 'logo_swap' (did you mean 'logo-swap'?)"),
    ("bad-category-symbol", _edit(2, category="logo/swap"), L2, "lowercase letters, digits and single hyphens"),
    ("long-category", _edit(2, category="a" * 41), L2, "at most 40 characters"),
    ("wrong-type-expected-text", _edit(2, expected_text=14.99), L2, "'expected_text' must be a string, got a number"),
    ("null-expected-text", _edit(2, expected_text=None), L2, "'expected_text' must be a string, got null"),
    ("empty-expected-text", _edit(2, expected_text="  "), L2, "'expected_text' is empty"),
    (
        "long-expected-text",
        _edit(2, expected_text="a" * (MAX_EXPECTED_TEXT_CHARS + 1)),
        L2,
        f"'expected_text' is {MAX_EXPECTED_TEXT_CHARS + 1} characters long",
    ),
    ("multiline-expected-text", _edit(2, expected_text="轻奢系列\n新品上市"), L2, "has a line break"),
    ("misspelt-expected-text", _edit(2, expected_txt="x"), L2, "unknown key 'expected_txt' (did you mean 'expected_text'?)"),
    ("unknown-language", _edit(2, language="fr"), L2, "unknown language 'fr'"),
    (
        "language-mismatch",
        _edit(2, language="zh"),
        L2,
        "language is 'zh' but the instruction has no Chinese characters",
    ),
    ("empty-instruction", _edit(2, instruction="   "), L2, "'instruction' is empty"),
    (
        "long-instruction",
        _edit(2, instruction="a" * (DEFAULT_MAX_INSTRUCTION_CHARS + 1)),
        L2,
        f"over the limit of {DEFAULT_MAX_INSTRUCTION_CHARS}",
    ),
    ("empty-caption", _edit(2, target_caption=""), L2, "'target_caption' is empty"),
    (
        "long-caption",
        _edit(2, target_caption="a" * (MAX_CAPTION_CHARS + 1)),
        L2,
        f"'target_caption' is {MAX_CAPTION_CHARS + 1} characters long",
    ),
    ("no-images", _edit(2, images=[]), L2, "has 0 images"),
    (
        "four-images",
        _edit(3, images=["images/table_scene.png", "images/bottle_plain.png", "images/mug_plain.png", WM]),
        L3,
        "has 4 images",
    ),
    ("same-image-twice", _edit(2, images=[WM, WM]), L2, "lists the same image twice"),
    ("absolute-path", _edit(2, images=["/etc/hostname"]), L2, "image '/etc/hostname': absolute path"),
    ("dotdot-path", _edit(2, images=["../mini/" + WM]), L2, "path escapes the case-set folder"),
    ("dotdot-mask", _edit(2, mask="masks/../../x.png"), L2, "mask 'masks/../../x.png': path escapes"),
    ("symlink-outside", _symlink_outside, L2, "resolves outside the case-set folder"),
    ("missing-image", _edit(2, images=["images/nope.png"]), L2, "image 'images/nope.png': file not found"),
    ("missing-mask", _file(WM_MASK, Path.unlink), L2, f"mask '{WM_MASK}': file not found"),
    ("empty-image", _file(WM, lambda p: p.write_bytes(b"")), L2, f"image '{WM}': file is empty"),
    ("truncated-image", _file(WM, _truncate), L2, f"image '{WM}' is truncated or corrupt"),
    ("truncated-mask", _file(WM_MASK, _truncate), L2, f"mask '{WM_MASK}' is truncated or corrupt"),
    (
        "not-an-image",
        _file(WM, lambda p: p.write_text("hello, I am text")),
        L2,
        f"image '{WM}' is not a PNG, JPEG or WebP image",
    ),
    (
        "other-format",
        _file(WM, _save_as(Image.new("RGB", (8, 8)), "GIF")),
        L2,
        f"image '{WM}' is not a PNG, JPEG or WebP image",
    ),
    (
        "over-pixel-limit",
        _file(WM, lambda p: p.write_bytes(_png_header_only(5000, 5000))),
        L2,
        "5000x5000 = 25000000 pixels, over the limit of 16777216",
    ),
    (
        "decompression-bomb",
        _file(WM, lambda p: p.write_bytes(_png_header_only(60000, 60000))),
        L2,
        "too large to open safely",
    ),
    (
        "mask-wrong-size",
        _file(WM_MASK, _save(Image.new("L", (100, 80), 255))),
        L2,
        "is 100x80 but the first image is 512x512",
    ),
    ("mask-wrong-size-multi", _edit(3, mask=WM_MASK), L3, "is 512x512 but the first image is 512x384"),
    (
        "mask-in-colour",
        _file(WM_MASK, _save(Image.new("RGB", (512, 512), (255, 0, 0)))),
        L2,
        "has colours, not a grey mask",
    ),
    (
        "mask-16-bit",
        _file(WM_MASK, _save(Image.new("I;16", (512, 512), 40000))),
        L2,
        "image mode I;16, not a single-channel 8-bit mask",
    ),
    ("mask-all-black", _file(WM_MASK, _save(Image.new("L", (512, 512), 0))), L2, "is all black"),
]


@pytest.mark.parametrize(("name", "breaker", "where", "problem"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused(
    name: str, breaker: Callable[[Path], None], where: str, problem: str, mini: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    breaker(mini)  # the unbroken copy is valid (test_mini_copy_is_valid)
    with pytest.raises(UserInputError) as info:
        load_case_set(mini)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(mini) in msg and where in msg, msg
    assert problem in msg, msg
    # The CLI prints the same single line and exits 2.
    assert main(["cases", "validate", str(mini)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"qie-bench: error: {msg}"


def test_mini_copy_is_valid(mini: Path) -> None:
    """The broken-input tests start from this copy, so their failures are the breakage's."""
    assert [c.id for c in load_case_set(mini).cases] == list(MINI_IDS)


def test_folder_missing_or_not_a_directory(tmp_path: Path, mini: Path) -> None:
    with pytest.raises(UserInputError, match="case-set folder does not exist"):
        load_case_set(tmp_path / "nope")
    with pytest.raises(UserInputError, match=r"cases\.jsonl: is not a directory \(pass its folder"):
        load_case_set(mini / "cases.jsonl")
    assert main(["cases", "validate", str(tmp_path / "nope")]) == 2


def test_check_images_false_skips_decoding(mini: Path) -> None:
    _truncate(mini / WM)
    assert len(load_case_set(mini, check_images=False).cases) == 3  # paths and bytes only
    with pytest.raises(UserInputError, match="truncated or corrupt"):
        load_case_set(mini)


def test_custom_limits(mini: Path) -> None:
    with pytest.raises(UserInputError, match="over the limit of 1000"):
        load_case_set(mini, max_image_pixels=1000)
    with pytest.raises(UserInputError, match="'instruction' is .* over the limit of 10"):
        load_case_set(mini, max_instruction_chars=10)


def test_sixteen_bit_grayscale_source_is_scaled_not_clipped(mini: Path) -> None:
    """A 16-bit grayscale source reaches the pipeline (and the fidelity metrics) as value / 65535
    in 8 bits, as the metrics read 16-bit images; PIL's convert("RGB") would clip it to white."""
    path = mini / "images" / "coffee.png"
    w, h = Image.open(path).size
    levels = np.array([0, 65535, 32768, 1000, 25700], dtype=np.uint16)
    # by hand: round(v / 65535 * 255) -> 0, 255, 128 (127.50), 4 (3.89), 100
    expected = np.array([0, 255, 128, 4, 100], dtype=np.uint8)
    columns = np.arange(w) % len(levels)
    Image.fromarray(np.tile(levels[columns], (h, 1))).save(path, format="PNG")
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit grey
    case = load_case_set(mini).get("rm-spoon-coffee")
    for image in (case.load_images()[0], case.load_source()):
        pixels = np.asarray(image)
        assert image.mode == "RGB" and pixels.shape == (h, w, 3)
        assert np.array_equal(pixels[0, : len(levels), 0], expected)
        assert np.array_equal(pixels[..., 0], pixels[..., 2]) and np.array_equal(pixels, np.tile(expected[columns], (h, 1))[..., None].repeat(3, axis=2))


# ------------------------------------------------------------------------------------------
# A team's own case set: its own categories, a Chinese target caption, an expected text
# ------------------------------------------------------------------------------------------


def test_own_categories_and_chinese_caption_are_accepted(mini: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(1, category="logo-swap", target_caption="咖啡杯旁边没有勺子")(mini)
    _edit(2, category="watermark", expected_text="轻奢系列 新品上市")(mini)
    loaded = load_case_set(mini)
    first, second, third = loaded.cases
    assert (first.category, first.target_caption) == ("logo-swap", "咖啡杯旁边没有勺子")
    assert (second.category, second.expected_text) == ("watermark", "轻奢系列 新品上市")
    assert third.category == "add-object" and third.expected_text is None
    # built-in categories first (documentation order), then the team's own in manifest order
    assert loaded.categories() == ("add-object", "logo-swap", "watermark")
    assert loaded.summary()["categories"] == {"add-object": 1, "logo-swap": 1, "watermark": 1}
    assert [c.id for c in loaded.select(["watermark"]).cases] == ["rm-watermark-bottle"]
    with pytest.raises(UserInputError, match=r"no case id or category 'watermarks'.*did you mean 'watermark'"):
        loaded.select(["watermarks"])
    assert main(["cases", "validate", str(mini)]) == 0
    assert "OK: mini: 3 cases" in capsys.readouterr().out

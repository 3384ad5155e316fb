"""Chained cases (drift over several edits): the case-set format, per-turn items and records, a
run resumed between turns, and the report's quality-against-turn plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_SUITE, VARIANT  # tests/ is on sys.path (rootdir conftest)
from qie_bench.cases import load_case_set
from qie_bench.errors import UserInputError
from qie_bench.gate.thresholds import parse_threshold
from qie_bench.plan import Item
from qie_bench.report.chains import drift, turn_means
from qie_bench.results import Record, read_records
from qie_bench.runner.chains import chain_turn, output_path

REPO = Path(__file__).resolve().parents[1]
V3 = REPO / "suites" / "cases" / "edit-v3"
CHAINS = {"chain-mug-en": ("en", 4), "chain-bottle-zh": ("zh", 5), "chain-coffee-zh": ("zh", 4)}


# -- format -------------------------------------------------------------------------------------


def test_shipped_v3_is_v2_plus_three_chains() -> None:
    v2 = load_case_set(REPO / "suites" / "cases" / "edit-v2")
    v3 = load_case_set(V3)
    assert [c.id for c in v3.cases] == [c.id for c in v2.cases] + list(CHAINS)
    for cid, (lang, n) in CHAINS.items():
        case = v3.get(cid)
        assert case.is_chain and case.language == lang and len(case.turns) == n
        assert case.instruction == case.turns[0].instruction  # single-edit readers see turn 1
    # the text-writing turns carry their expected text
    assert v3.get("chain-mug-en").turns[2].expected_text == "SALE"
    assert v3.get("chain-bottle-zh").turns[1].expected_text == "清爽一夏"
    assert v3.summary()["chains"] == 3
    from qie_bench.commands.cases import ok_line

    assert ", 3 chained (13 turns), " in ok_line(v3) and "chained" not in ok_line(v2)
    assert v3.fingerprint != v2.fingerprint


def _copy_v3(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(V3, root)
    return root


def _edit_chain(root: Path, case_id: str, change) -> None:
    rows = [json.loads(line) for line in (root / "cases.jsonl").read_text("utf-8").splitlines() if line.strip()]
    for r in rows:
        if r["id"] == case_id:
            change(r)
    (root / "cases.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(instruction="x"), "(case 'chain-mug-en'): has both 'turns' and 'instruction'"),
    (lambda r: r.update(turns=r["turns"][:1]), "(case 'chain-mug-en'): has 1 turns"),
    (lambda r: r["turns"][1].pop("instruction"), "(case 'chain-mug-en') turn 2: missing key 'instruction'"),
    (lambda r: r["turns"][2].update(expected_txt="SALE"), "turn 3: unknown key 'expected_txt'"),
    (lambda r: r["turns"][1].update(mask="masks/nope.png"), "(case 'chain-mug-en') turn 2: mask 'masks/nope.png': file not found"),
    (lambda r: r["turns"].__setitem__(3, "make it blue"), "turn 4: expected a JSON object, got a string"),
    (lambda r: r["turns"][3].update(instruction="把杯子改成蓝色"), "turn 4: language is 'en' but the instruction is mostly Chinese"),
    (lambda r: r["turns"][0].update(mask=3), "turn 1: 'mask' must be a string or null, got a number"),
])
def test_bad_turns_fail_in_one_line_naming_case_and_turn(tmp_path: Path, change, message: str) -> None:
    root = _copy_v3(tmp_path)
    _edit_chain(root, "chain-mug-en", change)
    with pytest.raises(UserInputError) as err:
        load_case_set(root)
    text = str(err.value)
    assert message in text and "\n" not in text
    if "expected_txt" in message:
        assert "did you mean 'expected_text'" in text


def test_turns_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    root = _copy_v3(tmp_path)
    before = load_case_set(root).fingerprint
    _edit_chain(root, "chain-coffee-zh", lambda r: r["turns"][3].update(instruction="在碟子边缘加一圈银色的细线。"))
    assert load_case_set(root).fingerprint != before
    # a turn's mask file is hashed too: change its bytes, keep the manifest
    _edit_chain(root, "chain-coffee-zh", lambda r: r["turns"][3].update(instruction="在碟子边缘加一圈金色的细线。"))
    assert load_case_set(root).fingerprint == before
    mask = root / "masks" / "coffee_saucer.png"
    with Image.open(mask) as im:
        arr = np.asarray(im.convert("L")).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(mask)
    assert load_case_set(root).fingerprint != before


def test_a_turn_reads_the_previous_output_and_masks_the_union(tmp_path: Path) -> None:
    case = load_case_set(V3).get("chain-coffee-zh")
    t1 = chain_turn(case, 1, tmp_path, "fp32")
    assert t1.id == "chain-coffee-zh@t1" and t1.instruction == case.turns[0].instruction
    assert t1.seed() != case.seed()  # each turn its own seed, from its own id
    with Image.open(case.image_paths[0]) as im:
        original = np.asarray(im.convert("RGB"))
    assert np.array_equal(np.asarray(t1.load_images()[0]), original)

    t3 = chain_turn(case, 3, tmp_path, "fp32")
    with pytest.raises(FileNotFoundError, match="previous turn's output"):
        t3.load_images()
    prev = output_path(tmp_path, "fp32", "chain-coffee-zh", 2)
    assert prev == tmp_path / "images" / "fp32" / "chain-coffee-zh@t2.png"
    prev.parent.mkdir(parents=True)
    marker = np.full((32, 48, 3), 7, np.uint8)
    Image.fromarray(marker).save(prev)
    assert np.array_equal(np.asarray(t3.load_images()[0]), marker)
    # metrics compare with the original, not the previous output
    assert np.array_equal(np.asarray(t3.load_source()), original)
    # the union of turns 1..3: spoon | saucer (turns 2 and 3 share the saucer mask)
    masks = {}
    for name in ("coffee_spoon", "coffee_saucer"):
        with Image.open(V3 / "masks" / f"{name}.png") as im:
            masks[name] = np.asarray(im.convert("L")) >= 128
    union = t3.load_mask()
    assert np.array_equal(union, masks["coffee_spoon"] | masks["coffee_saucer"])
    assert union.sum() > masks["coffee_saucer"].sum()  # the spoon adds pixels the saucer lacks
    assert np.array_equal(t1.load_mask(), masks["coffee_spoon"])


def test_turn_items_have_unique_keys_in_turn_order() -> None:
    from qie_bench.plan import make_plan
    from qie_bench.suite import CasesConfig, ModelConfig, Suite, VariantEntry

    suite = Suite(name="c", model=ModelConfig(source="tiny", device="cpu"),
                  cases=CasesConfig(path=str(V3), select=("chain-coffee-zh", "rm-spoon-coffee")),
                  variants=(VariantEntry(name="fp32", kind="dtype", dtype="fp32"),))
    suite = suite.model_copy(update={"measurement": suite.measurement.model_copy(update={"repeats": 2})})
    keys = [i.key for i in make_plan(suite).items["fp32"]]
    assert keys == ["fp32/rm-spoon-coffee/0", "fp32/rm-spoon-coffee/1",
                    *(f"fp32/chain-coffee-zh@t{t}/{r}" for t in range(1, 5) for r in range(2))]
    assert Item("fp32", "chain-coffee-zh", 0, 2).spec() == ["chain-coffee-zh", 0, 2]
    assert Item("fp32", "rm-spoon-coffee", 0).spec() == ["rm-spoon-coffee", 0]


# -- the drift verdict --------------------------------------------------------------------------


class _Col:
    def __init__(self, variant: str, values: dict[tuple[str, int], float]) -> None:
        self.variant = variant
        self.ok_records = [
            Record(key=f"{variant}/{c}@t{t}/0", variant=variant, case_id=c, repeat=0, turn=t, status="OK",
                   metrics={"ssim_vs_baseline": v})
            for (c, t), v in values.items()
        ]


def test_drift_counts_turns_within_the_gate_threshold_from_turn_1() -> None:
    threshold = parse_threshold("ssim_vs_baseline", "-0.02", "gates.ssim_vs_baseline")
    # turn means: 0.99, 0.98, 0.965 (change from turn 1: 0, -0.01, -0.025 > 0.02: fails at turn 3)
    col = _Col("int8", {("a", 1): 0.99, ("b", 1): 0.99, ("a", 2): 0.985, ("b", 2): 0.975,
                        ("a", 3): 0.97, ("b", 3): 0.96, ("a", 4): 0.99})
    assert turn_means(col, "ssim_vs_baseline") == pytest.approx({1: 0.99, 2: 0.98, 3: 0.965, 4: 0.99})
    d = drift(col, "ssim_vs_baseline", threshold)
    assert (d.turns, d.fails_at) == (4, 3)
    assert "falls below the threshold (-0.02 from turn 1) at turn 3, after 2 turns within it" in \
        d.sentence("ssim_vs_baseline", threshold)
    steady = _Col("nf4", {("a", 1): 0.99, ("a", 2): 0.975})  # exactly -0.015: within
    assert drift(steady, "ssim_vs_baseline", threshold).fails_at is None
    assert drift(_Col("fp32", {}), "ssim_vs_baseline", threshold) is None  # no values: no verdict


# -- a real run on the tiny model -----------------------------------------------------------------


METRICS = ('names = ["psnr", "ssim", "psnr_outside_mask", "ssim_outside_mask", "psnr_vs_baseline", '
           '"ssim_vs_baseline"]\nweights = "random"')


def _suite(tmp_path: Path) -> Path:
    text = TINY_SUITE.format(name="chains", baseline="fp32", cases=V3.as_posix(), select='["chain-coffee-zh"]',
                             steps=2, repeats=1, timeout=120, metrics=METRICS)
    text += VARIANT.format(name="fp32", dtype="fp32") + VARIANT.format(name="bf16", dtype="bf16")
    text += '\n[gates]\nssim_vs_baseline = "-0.02"\n'
    path = tmp_path / "chains.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory: pytest.TempPathFactory, torch_one_thread) -> tuple[Path, Path]:
    import qie_bench

    tmp = tmp_path_factory.mktemp("chains")
    suite = _suite(tmp)
    qie_bench.run(str(suite), out=tmp / "clean")
    return suite, tmp / "clean"


def _psnr(a: Path, b: Path) -> float:
    with Image.open(a) as x, Image.open(b) as y:
        fa, fb = (np.asarray(i.convert("RGB"), dtype=np.float64) / 255 for i in (x, y))
    return float(10 * np.log10(1.0 / np.mean((fa - fb) ** 2)))


@pytest.mark.slow
def test_per_turn_records_on_the_tiny_model(chain_run: tuple[Path, Path]) -> None:
    _, out = chain_run
    from qie_bench.results import RunDir

    records = RunDir.load(out).records  # scores (scores.jsonl) merged into the records
    assert [(r.variant, r.value("turn")) for r in records] == [(v, t) for v in ("fp32", "bf16") for t in range(1, 5)]
    for r in records:
        assert r.ok, r.error
        assert r.key == f"{r.variant}/chain-coffee-zh@t{r.value('turn')}/0"
        assert r.output_path == f"images/{r.variant}/chain-coffee-zh@t{r.value('turn')}.png"
        assert (out / r.output_path).is_file()
        assert r.metric("ssim_outside_mask") is not None  # the union of spoon and saucer leaves pixels outside
        if r.variant == "bf16":  # drift against the baseline (here fp32) output of the same turn
            base = out / f"images/fp32/chain-coffee-zh@t{r.value('turn')}.png"
            assert r.metric("psnr_vs_baseline") == pytest.approx(_psnr(out / r.output_path, base), abs=1e-3)
    # each turn edits the previous output: turn outputs differ from each other
    shas = [r.output_sha256 for r in records if r.variant == "fp32"]
    assert len(set(shas)) == 4


def _cut_after_turn(src: Path, dst: Path, turn: int) -> None:
    """A copy of the run directory as a kill right after `turn` of every variant would leave it."""
    shutil.copytree(src, dst)
    (dst / "summary.json").unlink()
    lines = [line for line in (src / "cases.jsonl").read_text().splitlines(keepends=True)
             if json.loads(line)["turn"] <= turn]
    (dst / "cases.jsonl").write_text("".join(lines))
    for p in (dst / "images").rglob("*@t*.png"):
        if int(p.stem.rsplit("@t", 1)[1]) > turn:
            p.unlink()


@pytest.mark.slow
def test_a_run_killed_between_turns_resumes_at_the_next_turn(chain_run: tuple[Path, Path], tmp_path: Path) -> None:
    import qie_bench

    suite, clean = chain_run
    want = {r["key"]: r["output_sha256"] for r in read_records(clean / "cases.jsonl")}

    resumed = tmp_path / "resumed"
    _cut_after_turn(clean, resumed, 2)
    qie_bench.run(str(suite), out=resumed, resume=True)
    records = read_records(resumed / "cases.jsonl")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 8  # nothing recorded twice, nothing lost
    assert {r["key"]: r["output_sha256"] for r in records} == want

    # The next turn reads the previous turn's output from the run directory: change that file and
    # turn 3 (and 4) come out different, while turns 1-2 keep their records.
    tampered = tmp_path / "tampered"
    _cut_after_turn(clean, tampered, 2)
    prev = tampered / "images" / "fp32" / "chain-coffee-zh@t2.png"
    with Image.open(prev) as im:
        Image.fromarray(255 - np.asarray(im.convert("RGB"))).save(prev)
    qie_bench.run(str(suite), out=tampered, resume=True)
    got = {r["key"]: r["output_sha256"] for r in read_records(tampered / "cases.jsonl")}
    assert got["fp32/chain-coffee-zh@t2/0"] == want["fp32/chain-coffee-zh@t2/0"]
    assert got["fp32/chain-coffee-zh@t3/0"] != want["fp32/chain-coffee-zh@t3/0"]


@pytest.mark.slow
def test_the_report_shows_quality_against_turn(chain_run: tuple[Path, Path], tmp_path: Path) -> None:
    from qie_bench.cli import main

    _, out = chain_run
    html = tmp_path / "r.html"
    assert main(["report", str(out), "--out", str(html)]) == 0
    page = html.read_text()
    i = page.find('alt="Quality against turn (chained edits)"')
    assert i > 0 and page.rfind("data:image/png;base64,", 0, i) > page.rfind("<figure", 0, i)
    assert "fp32: no verdict (the reference of ssim_vs_baseline)." in page
    assert "bf16: ssim_vs_baseline stays within -0.02 of its turn-1 value" in page \
        or "bf16: ssim_vs_baseline falls below the threshold (-0.02 from turn 1)" in page

"""The table of bad inputs (issue 7): each is a one-line error naming the file, key or case,
exit code 2, and a run written earlier stays byte-for-byte intact.

Covers suite files, case sets (manifest, images, masks, instructions, paths), output
directories, resume mismatches and command-line options. Validation happens before any child
process starts, so the table is fast; one real run is made first to prove nothing is damaged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from qie_bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "suites" / "cases" / "edit-v1"
MINI = ["rm-watermark-bottle", "txt-price-mug"]


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _mini_cases(root: Path) -> Path:
    rows = [json.loads(line) for line in (SHIPPED / "cases.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["id"] in MINI]
    for r in rows:
        for rel in [*r["images"], *([r["mask"]] if r["mask"] else [])]:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHIPPED / rel, root / rel)
    (root / "cases.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A finished tiny run (1 case, 1 variant) whose files must survive every bad input."""
    tmp = tmp_path_factory.mktemp("prev")
    cases = _mini_cases(tmp / "cases")
    suite = tmp / "suite.toml"
    suite.write_text(SUITE.format(cases=cases.as_posix()))
    out = tmp / "run"
    assert main(["run", str(suite), "--out", str(out), "--no-progress", "--cases", MINI[0]]) == 0
    return suite, out, _tree_digest(out)


SUITE = """
schema_version = 1
name = "bad"
baseline_variant = "fp32"
[model]
source = "tiny"
device = "cpu"
[model.tiny]
reference_area = 4096
[cases]
path = "{cases}"
max_image_pixels = 1000000
[generation]
steps = 1
width = 32
height = 32
[measurement]
warmup_runs = 0
repeats = 1
[metrics]
names = ["psnr"]
weights = "random"
[gates]
latency_p95_s = "+10%"
[[variants]]
name = "fp32"
kind = "dtype"
dtype = "fp32"
"""


def _edit_suite(old: str, new: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, prev_suite: Path) -> list[str]:
        path = tmp / "s.toml"
        text = prev_suite.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))
        return ["run", str(path), "--out", str(tmp / "out")]

    return make


def _break_cases(breaker: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, prev_suite: Path) -> list[str]:
        cases = _mini_cases(tmp / "cases")
        breaker(cases)
        path = tmp / "s.toml"
        text = prev_suite.read_text()
        path.write_text(text.replace(text.split('path = "')[1].split('"')[0], cases.as_posix()))
        return ["run", str(path), "--out", str(tmp / "out")]

    return make


def _rewrite_row(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def breaker(cases: Path) -> None:
        rows = [json.loads(line) for line in (cases / "cases.jsonl").read_text().splitlines()]
        change(rows[0])
        (cases / "cases.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    return breaker


def _first_image(cases: Path) -> Path:
    return cases / json.loads((cases / "cases.jsonl").read_text().splitlines()[0])["images"][0]


def _first_mask(cases: Path) -> Path:
    return cases / json.loads((cases / "cases.jsonl").read_text().splitlines()[0])["mask"]


def _args(*argv: str) -> Callable[[Path, Path], list[str]]:
    def make(tmp: Path, prev_suite: Path) -> list[str]:
        return [a.format(tmp=tmp, suite=prev_suite) for a in argv]

    return make


def _escape_symlink(cases: Path) -> None:
    outside = cases.parent / "outside.png"
    shutil.copyfile(_first_image(cases), outside)
    link = cases / "images" / "link.png"
    os.symlink(outside, link)
    _rewrite_row(lambda r: r.__setitem__("images", ["images/link.png"]))(cases)


def _bomb(cases: Path) -> None:
    # 1200 x 1200 = 1.44 MP > the suite's max_image_pixels (1 MP): refused from the header.
    Image.new("RGB", (1200, 1200)).save(_first_image(cases))


# (id, make argv, words the one-line message must contain)
TABLE: list[tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...]]] = [
    ("toml-malformed", _edit_suite("[cases]", "[cases"), ("malformed TOML",)),
    ("suite-unknown-key", _edit_suite("steps = 1", "stepz = 1"), ("generation.stepz", "did you mean 'steps'")),
    ("suite-wrong-type", _edit_suite("repeats = 1", 'repeats = "one"'), ("measurement.repeats",)),
    ("suite-out-of-range", _edit_suite("steps = 1", "steps = 0"), ("generation.steps", "greater than or equal")),
    ("suite-bad-choice", _edit_suite('source = "tiny"', 'source = "tiny-ish"'), ("model.source", "did you mean 'tiny'")),
    ("variant-unknown-kind", _edit_suite('kind = "dtype"', 'kind = "nf5"'), ("variants[0] ('fp32').kind", "nf4")),
    ("variant-bad-option", _edit_suite('dtype = "fp32"', 'dtype = "fp32"\nratio = 2'), ("variants[0] ('fp32').ratio",)),
    ("gate-bad-threshold", _edit_suite('"+10%"', '"ten percent"'), ("gates", "latency_p95_s")),
    ("suite-missing", _args("run", "{tmp}/nope.toml"), ("nope.toml", "not found")),
    ("suite-is-directory", _args("run", "{tmp}"), ("is a directory",)),
    ("manifest-not-json", _break_cases(lambda c: (c / "cases.jsonl").write_text("{not json\n")), ("cases.jsonl:1",)),
    ("image-missing", _break_cases(lambda c: _first_image(c).unlink()), ("rm-watermark-bottle",)),
    ("image-empty", _break_cases(lambda c: _first_image(c).write_bytes(b"")), ("empty",)),
    ("image-truncated", _break_cases(lambda c: _first_image(c).write_bytes(_first_image(c).read_bytes()[:2000])),
     ("rm-watermark-bottle",)),
    ("image-not-an-image", _break_cases(lambda c: _first_image(c).write_bytes(b"hello, not a png" * 20)),
     ("rm-watermark-bottle",)),
    ("image-decompression-bomb", _break_cases(_bomb), ("pixel",)),
    ("mask-wrong-size", _break_cases(lambda c: Image.new("L", (10, 10)).save(_first_mask(c))), ("mask",)),
    ("instruction-empty", _break_cases(_rewrite_row(lambda r: r.__setitem__("instruction", "  "))), ("instruction",)),
    ("instruction-too-long", _break_cases(_rewrite_row(lambda r: r.__setitem__("instruction", "x" * 5000))),
     ("instruction",)),
    ("path-escapes-dotdot", _break_cases(_rewrite_row(lambda r: r.__setitem__("images", ["../x.png"]))), ("../x.png",)),
    ("path-absolute", _break_cases(_rewrite_row(lambda r: r.__setitem__("images", ["/etc/passwd"]))), ("/etc/passwd",)),
    ("path-symlink-out", _break_cases(_escape_symlink), ("link.png",)),
    ("out-is-a-file", _args("run", "{suite}", "--out", "{suite}"), ("is a file",)),
    ("out-not-writable", _args("run", "{suite}", "--out", "{suite}/sub"), ("cannot write",)),
    ("vram-budget-bad", _args("run", "{suite}", "--vram-budget", "lots"), ("--vram-budget",)),
    ("size-bad", _args("run", "{suite}", "--size", "512x"), ("--size", "WIDTHxHEIGHT")),
    ("size-not-multiple-of-16", _args("run", "{suite}", "--size", "500x512"), ("--size", "width", "multiple of 16")),
    ("variants-unknown", _args("run", "{suite}", "--variants", "fp33"), ("--variants", "did you mean 'fp32'")),
    ("resume-without-out", _args("run", "{suite}", "--resume"), ("--resume",)),
]


@pytest.mark.parametrize("name,make,words", TABLE, ids=[t[0] for t in TABLE])
def test_bad_input(name: str, make: Callable, words: tuple[str, ...], previous, tmp_path: Path, capsys) -> None:
    prev_suite, prev_out, digest = previous
    argv = make(tmp_path, prev_suite)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("qie-bench: error: ")
    for w in words:
        assert w in err, (w, err)
    assert _tree_digest(prev_out) == digest, "a bad input damaged an earlier run"


def test_existing_run_without_resume_is_refused(previous, capsys) -> None:
    suite, out, digest = previous
    assert main(["run", str(suite), "--out", str(out), "--cases", MINI[0]]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _tree_digest(out) == digest


def test_resume_with_changed_suite_is_refused(previous, tmp_path: Path, capsys) -> None:
    suite, out, digest = previous
    changed = tmp_path / "suite.toml"
    changed.write_text(suite.read_text().replace("steps = 1", "steps = 2"))
    assert main(["run", str(changed), "--out", str(out), "--resume", "--cases", MINI[0]]) == 2
    assert "changed since this run started" in capsys.readouterr().err
    assert _tree_digest(out) == digest


def test_disk_full_mid_run_stops_cleanly(previous, tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes past a size fail with EFBIG, as a full disk fails with ENOSPC:
    the run stops with exit 2, and every record already written is whole."""
    import resource
    import signal
    import subprocess
    import sys

    from qie_bench.results import read_records

    prev_suite, _, _ = previous
    LIMIT = 14_000
    suite = tmp_path / "s.toml"
    suite.write_text(prev_suite.read_text().replace("repeats = 1", "repeats = 10"))  # 20 records of ~1 kB
    out = tmp_path / "out"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        # run.json (with the validated suite), the worker spec, PNGs and the build file fit; 20 records do not
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    proc = subprocess.run([sys.executable, "-m", "qie_bench.cli", "run", str(suite), "--out", str(out), "--no-progress"],
                          preexec_fn=limit, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot write" in proc.stderr.strip().splitlines()[-1] or "File too large" in proc.stderr
    records = read_records(out / "cases.jsonl")  # whole records only; a torn tail is dropped
    assert 0 < len(records) < 20 and all(r["status"] == "OK" for r in records)
    assert (out / "cases.jsonl").stat().st_size <= LIMIT
    assert not (out / "summary.json").exists()

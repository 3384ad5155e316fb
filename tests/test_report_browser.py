"""The report and the sign-off rendered in headless Chromium (Debian package `chromium`).

Checks that the page is not blank (the screenshot is not uniform), that every embedded image
decoded (the page's own script writes the counts into <body data-images-*>, read back with
--dump-dom) with network name resolution disabled, and that the verdict/banner text is there.
The screenshots are kept: under $QIE_BENCH_TEST_ARTIFACTS when set (CI uploads that folder),
else in pytest's temporary folder; their paths are printed (pytest -s, or -rA).

Skipped when no `chromium` is on PATH (CI installs it: apt-get install -y chromium).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report_helpers import tiny_run  # noqa: F401

from qie_bench.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (Debian: apt-get install -y chromium)")


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
           "--hide-scrollbars", "--mute-audio",
           # no name resolves: anything the page tried to fetch from a network would fail to load
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
           f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def artefact_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("QIE_BENCH_TEST_ARTIFACTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def body_attrs(dom: str) -> dict[str, str]:
    m = re.search(r"<body([^>]*)>", dom)
    assert m, "no <body> in the dumped DOM"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))


def check_page(page: Path, tmp_path: Path, name: str, must_contain: list[str]) -> Path:
    dom_run = chromium(page, tmp_path / f"{name}-profile-dom", "--dump-dom")
    assert dom_run.returncode == 0, dom_run.stderr[-2000:]
    dom = dom_run.stdout
    attrs = body_attrs(dom)
    total = int(attrs["data-images-total"])
    assert attrs.get("data-loaded") == "true", attrs
    assert total > 0
    assert int(attrs["data-images-failed"]) == 0, attrs
    assert int(attrs["data-images-loaded"]) == total, attrs
    assert f"{total} of {total} images loaded" in dom
    for text in must_contain:
        assert text in dom, text

    shot = artefact_dir(tmp_path) / f"{name}.png"
    shot_run = chromium(page, tmp_path / f"{name}-profile-shot", f"--screenshot={shot}", "--window-size=1400,3000")
    assert shot_run.returncode == 0 and shot.is_file(), shot_run.stderr[-2000:]
    print(f"screenshot: {shot}")
    with Image.open(shot) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float64)
    assert arr.shape == (3000, 1400)
    assert arr.std() > 20, f"screenshot looks blank (std {arr.std():.1f})"
    assert (arr < 128).mean() > 0.01, "almost no dark pixels: no text rendered"
    return shot


@needs_chromium
def test_report_renders_in_chromium(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    page = tmp_path / "smoke.html"
    assert main(["report", str(tiny_run), "--out", str(page)]) == 0
    check_page(page, tmp_path, "report", ["RANDOM MODEL WEIGHTS", "Speed and memory", "Gallery"])


@needs_chromium
def test_signoff_renders_in_chromium(tiny_run: Path, tmp_path: Path) -> None:  # noqa: F811
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", "promote", str(tiny_run), "--to", str(baseline)]) == 0
    page = tmp_path / "smoke-signoff.html"
    assert main(["signoff", str(tiny_run), "--baseline", str(baseline), "--out", str(page)]) == 0
    check_page(page, tmp_path, "signoff", ["SIGNED OFF", "RANDOM MODEL WEIGHTS", "Artefacts this sign-off relied on"])

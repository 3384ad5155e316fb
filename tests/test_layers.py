"""The layering declared in pyproject.toml ([tool.importlinter]) holds: data flows one way, and
suites, metric declarations, results and thresholds load without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


def test_the_declared_layers_and_torch_free_modules_hold() -> None:
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "one-way layers KEPT" in proc.stdout
    assert "load without torch KEPT" in proc.stdout


def test_the_checker_sees_a_real_violation(tmp_path: Path) -> None:
    """The same tool on a contract that must break (the runner imports torch): the check is real."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "qie_bench"\ninclude_external_packages = true\n\n'
        '[[tool.importlinter.contracts]]\nname = "runner without torch"\ntype = "forbidden"\n'
        'source_modules = ["qie_bench.runner"]\nforbidden_modules = ["torch"]\n'
    )
    proc = _lint_imports("--config", str(config))
    assert proc.returncode == 1 and "runner without torch BROKEN" in proc.stdout, proc.stdout[-2000:]

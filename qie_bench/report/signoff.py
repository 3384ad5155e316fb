"""The pre-release sign-off: the gate's verdicts, the fingerprints and the sha256 of every
artefact relied on, with ONE verdict at the top.

The verdict is the gate's, taken as it is: the gate's comparison (`qie_bench.gate.compare`)
runs on the same files `qie-bench gate` reads, and exit code 0 (pass) is SIGNED OFF, anything
else (1 regression, 2 not comparable) is BLOCKED with the gate's failing checks as the reasons.
Nothing in the report (floors, banners) changes it; they are there for the reviewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fingerprint import file_sha256
from .html import RunFacts

SIGNED_OFF = "SIGNED OFF"
BLOCKED = "BLOCKED"


@dataclass
class CheckRow:
    verdict: str
    name: str
    variant: str
    baseline: str
    current: str
    change: str
    threshold: str
    why: str


@dataclass
class SignoffView:
    verdict: str
    gate_exit_code: int
    headline: str
    reasons: list[str]
    checks: list[CheckRow]
    notes: list[str]
    run_id: str
    baseline_path: Path
    baseline_facts: RunFacts
    artefacts: list[tuple[str, Path, str, int]] = field(default_factory=list)

    @property
    def signed_off(self) -> bool:
        return self.verdict == SIGNED_OFF

    @property
    def exit_code(self) -> int:
        """0 signed off, 1 blocked (bad input never gets this far: it is exit 2)."""
        return 0 if self.signed_off else 1


def verdict_for_gate_exit(code: int) -> str:
    """The sign-off verdict for a gate exit code: only a pass (0) signs off."""
    return SIGNED_OFF if code == 0 else BLOCKED


def run_gate(run_dir: Path, baseline: Path) -> Any:
    """The gate's own comparison, exactly as `qie-bench gate RUN --baseline FILE` runs it."""
    from ..gate.baseline import load_baseline
    from ..gate.compare import compare
    from ..gate.rundata import load_run

    base = load_baseline(baseline)
    run = load_run(run_dir)
    return compare(base, run)


def _baseline_facts(result: Any, path: Path) -> RunFacts:
    b = result.baseline
    fp = b.fingerprint
    env, model, suite, cs = fp.get("environment") or {}, fp.get("model") or {}, fp.get("suite") or {}, fp.get("case_set") or {}
    project = env.get("project") or {}
    return RunFacts(f"baseline {path}", [
        ("promoted from run", b.run_id),
        ("hardware", str(b.hardware_class)),
        ("weights", f"model {(b.weights or {}).get('model')}; metrics {(b.weights or {}).get('metrics')}"),
        ("model", ", ".join(f"{k}={v}" for k, v in model.items())),
        ("suite", f"{suite.get('name')} {suite.get('fingerprint')}"),
        ("case set", f"{cs.get('name')} ({cs.get('cases')} cases) {cs.get('fingerprint')}"),
        ("project commit", f"{project.get('commit')}" + (" (dirty working tree)" if project.get("dirty") else "")),
        ("complete", str(b.summary_complete) + (f" — {b.note}" if b.note else "")),
    ])


def signoff_view(result: Any, run_dir: Path, baseline: Path) -> SignoffView:
    code = int(result.exit_code)
    verdict = verdict_for_gate_exit(code)
    reasons = []
    for c in result.failures:
        where = f"{c.name}" + (f" · {c.variant}" if c.variant else "")
        detail = f" (baseline {c.baseline}, now {c.current})" if c.baseline != "—" or c.current != "—" else ""
        reasons.append(f"{c.verdict.value} — {where}: {c.why}{detail}")
    checks = [CheckRow(c.verdict.value, c.name, c.variant or "—", c.baseline, c.current, c.change, c.threshold, c.why)
              for c in result.checks]
    return SignoffView(verdict, code, result.headline, reasons, checks, list(result.notes), result.run.run_id, baseline,
                       _baseline_facts(result, baseline))


def signoff_artefacts(view: SignoffView, report_artefacts: list[tuple[str, Path, str, int]]) -> list[tuple[str, Path, str, int]]:
    out = list(report_artefacts)
    b = view.baseline_path
    out.insert(0, ("baseline", b, file_sha256(b), b.stat().st_size))
    return out

"""JUnit XML for CI test reporters: one test case per variant x gate key, plus the run-level
checks (comparable, complete) and one status check per variant.

FAIL rows are `<failure>` (UNTESTABLE ones too, with type "untestable"), NOT COMPARABLE rows are `<error>`, SKIP and NEW rows are `<skipped>`.
A gate that could not run at all (a corrupted file) is one test case with an `<error>`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..results import atomic_write_text
from .compare import Check, GateResult, Verdict

SUITE_NAME = "qie-bench gate"


def _testcase(parent: ET.Element, check: Check) -> None:
    variant = check.variant or "run"
    case = ET.SubElement(parent, "testcase", classname=f"qie_bench.gate.{variant}", name=f"{variant}: {check.name}", time="0")
    detail = (f"baseline {check.baseline}, current {check.current}, change {check.change}, threshold {check.threshold}\n"
              f"{check.why}")
    if check.verdict is Verdict.FAIL:
        ET.SubElement(case, "failure", message=check.why, type="regression").text = detail
    elif check.verdict is Verdict.UNTESTABLE:  # not a pass: a failure CI shows, of its own type
        ET.SubElement(case, "failure", message=check.why, type="untestable").text = detail
    elif check.verdict is Verdict.NOT_COMPARABLE:
        ET.SubElement(case, "error", message=check.why, type="not-comparable").text = detail
    elif check.verdict in (Verdict.SKIP, Verdict.NEW):
        ET.SubElement(case, "skipped", message=check.why)
    else:
        ET.SubElement(case, "system-out").text = detail


def _write(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    atomic_write_text(path, '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def _counts(checks: list[Check]) -> dict[str, str]:
    return {
        "tests": str(len(checks)),
        "failures": str(sum(c.verdict in (Verdict.FAIL, Verdict.UNTESTABLE) for c in checks)),
        "errors": str(sum(c.verdict is Verdict.NOT_COMPARABLE for c in checks)),
        "skipped": str(sum(c.verdict in (Verdict.SKIP, Verdict.NEW) for c in checks)),
    }


def write_junit(result: GateResult, path: Path) -> None:
    counts = _counts(result.checks)
    root = ET.Element("testsuites", name=SUITE_NAME, **counts)
    suite = ET.SubElement(root, "testsuite", name=f"{SUITE_NAME}: {result.run.suite_name} on {result.run.hardware_class}",
                          **counts)
    props = ET.SubElement(suite, "properties")
    for key, value in (("baseline", result.baseline.label), ("run", result.run.label), ("baseline_run_id", result.baseline.run_id),
                       ("run_id", result.run.run_id), ("verdict", result.headline)):
        ET.SubElement(props, "property", name=key, value=str(value))
    for check in result.checks:
        _testcase(suite, check)
    if result.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(result.notes)
    _write(root, path)


def write_junit_error(message: str, path: Path) -> None:
    """The gate could not compare at all (invalid input): one errored test case with the reason."""
    counts = {"tests": "1", "failures": "0", "errors": "1", "skipped": "0"}
    root = ET.Element("testsuites", name=SUITE_NAME, **counts)
    suite = ET.SubElement(root, "testsuite", name=SUITE_NAME, **counts)
    case = ET.SubElement(suite, "testcase", classname="qie_bench.gate.run", name="run: input", time="0")
    ET.SubElement(case, "error", message=message, type="invalid-input").text = message
    _write(root, path)

"""`tfscope verify --junit FILE`: the equivalence Report (export/parity.py) as JUnit XML, so a CI
system shows parity results without pytest: one test case per runtime and input set, a failure
where the comparison failed, the numbers of each case in its properties and system-out."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from tfscope.core.errors import ConfigError

NUMBERS = ("max_abs", "mean_abs", "median_abs", "max_rel", "min_atol", "min_rtol", "atol", "rtol",
           "failed_elements", "elements", "nan_got", "inf_got")


def check_target(path: str | Path) -> Path:
    """Refuse a --junit path that cannot be written (before TensorFlow loads, nothing written)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--junit {p}: is a directory; give a file name such as parity.xml")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"--junit {p}: {parent} is not a directory")
    if parent.is_dir() and not os.access(parent, os.W_OK):
        raise ConfigError(f"--junit {p}: cannot write there")
    return p


def _number(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def cases(report) -> list[tuple[str, str, bool, str | None, dict]]:
    """(runtime, input set, passed, failure message, numbers) per case, judged by the rule that
    decides the report: the rounding bound (output and every stage of that runtime and input set)
    where the report has a bound verdict, else Polygraphy's fixed rule against eager."""
    out = []
    assessment = getattr(report, "assessment", None)
    if assessment is not None and getattr(report, "rule", "fixed") == "bound":
        fixed = {(c.runtime, c.input): c for c in report.comparisons}
        for j in assessment.outputs:
            stages = assessment.stages.get(f"{j.runtime}/{j.input}", [])
            bad = next((s for s in [j, *stages] if not s.passed), None)
            numbers = {"rule": j.rule, "bound_use": j.bound_use, "max_error_vs_float64": j.max_error,
                       "allowed_at_worst": j.allowed_at_worst,
                       "stage_bound_use": max((s.bound_use for s in stages), default=0.0)}
            c = fixed.get((j.runtime, j.input))
            if c is not None:
                numbers.update({f"vs_eager_{k}": getattr(c, k) for k in NUMBERS})
            why = (None if bad is None else
                   f"{bad.runtime} exceeds what float32 rounding explains on input {bad.input!r}: {bad.why()}")
            out.append((j.runtime, j.input, bad is None, why, numbers))
        return out
    for c in report.comparisons:
        why = None if c.passed else f"{c.runtime} differs from eager on input {c.input!r}: {c.why()}"
        out.append((c.runtime, c.input, c.passed, why, {k: getattr(c, k) for k in NUMBERS}))
    return out


def to_xml(report, seconds: float = 0.0) -> ET.ElementTree:
    """The JUnit tree of a Report: testsuite 'tfscope verify EXPORT_DIR', testcases
    classname 'tfscope.verify.<runtime>', name '<input set>'."""
    rows = cases(report)
    failures = sum(1 for r in rows if not r[2])
    suites = ET.Element("testsuites", name="tfscope verify", tests=str(len(rows)), failures=str(failures),
                        errors="0", time=f"{seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"tfscope verify {report.export_dir}", tests=str(len(rows)),
                          failures=str(failures), errors="0", skipped="0", time=f"{seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for key in ("export_dir", "dtype", "atol", "rtol"):
        ET.SubElement(props, "property", name=key, value=_number(getattr(report, key)))
    ET.SubElement(props, "property", name="rule", value=str(getattr(report, "rule", "fixed")))
    for runtime, input_set, passed, why, numbers in rows:
        case = ET.SubElement(suite, "testcase", classname=f"tfscope.verify.{runtime}", name=input_set, time="0")
        cprops = ET.SubElement(case, "properties")
        for key, value in numbers.items():
            ET.SubElement(cprops, "property", name=key, value=_number(value))
        text = ", ".join(f"{k} {_number(v)}" for k, v in numbers.items())
        if not passed:
            ET.SubElement(case, "failure", type="ParityFailure", message=why).text = text
        ET.SubElement(case, "system-out").text = text
    line = report.failure_line()
    ET.SubElement(suite, "system-out").text = f"FAIL: {line}" if line else "PASS: every runtime matches"
    ET.indent(suites)
    return ET.ElementTree(suites)


def write(path: str | Path, report, seconds: float = 0.0) -> Path:
    """Write the JUnit XML atomically (a temporary file beside it, then a rename)."""
    p = check_target(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    to_xml(report, seconds).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, p)
    return p

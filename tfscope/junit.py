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


def to_xml(report, seconds: float = 0.0) -> ET.ElementTree:
    """The JUnit tree of a Report: testsuite 'tfscope verify EXPORT_DIR', testcases
    classname 'tfscope.verify.<runtime>', name '<input set>'."""
    comparisons = report.comparisons
    failures = sum(1 for c in comparisons if not c.passed)
    suites = ET.Element("testsuites", name="tfscope verify", tests=str(len(comparisons)), failures=str(failures),
                        errors="0", time=f"{seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"tfscope verify {report.export_dir}", tests=str(len(comparisons)),
                          failures=str(failures), errors="0", skipped="0", time=f"{seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    for key in ("export_dir", "dtype", "atol", "rtol"):
        ET.SubElement(props, "property", name=key, value=_number(getattr(report, key)))
    for c in comparisons:
        case = ET.SubElement(suite, "testcase", classname=f"tfscope.verify.{c.runtime}", name=c.input, time="0")
        cprops = ET.SubElement(case, "properties")
        for key in NUMBERS:
            ET.SubElement(cprops, "property", name=key, value=_number(getattr(c, key)))
        numbers = ", ".join(f"{k} {_number(getattr(c, k))}" for k in NUMBERS)
        if not c.passed:
            why = []
            if not c.shape_ok:
                why.append(f"shape {c.got_shape} != {c.ref_shape}")
            if not c.dtype_ok:
                why.append(f"dtype {c.got_dtype} != {c.ref_dtype}")
            if c.shape_ok and c.failed_elements:
                why.append(f"{c.failed_elements} element(s) beyond atol {c.atol:g} and rtol {c.rtol:g} "
                           f"(first at row {c.first_failed_row})")
            failure = ET.SubElement(case, "failure", type="ParityFailure",
                                    message=f"{c.runtime} differs on input {c.input!r}: " + "; ".join(why))
            failure.text = numbers
        ET.SubElement(case, "system-out").text = numbers
    line = report.failure_line()
    ET.SubElement(suite, "system-out").text = (f"FAIL: {line}" if line else "PASS: every runtime matches")
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

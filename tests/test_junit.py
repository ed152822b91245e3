"""`tfscope verify --junit FILE`: one JUnit test case per runtime and input set, judged by the rule
that decides the report, with the report's own numbers; a tampered ONNX file fails exactly the
ONNX runtimes' cases (through the command line); a bad path is refused before TensorFlow loads."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tfscope import junit
from tfscope.cli import main
from tfscope.export.compare import combine, compare
from tfscope.export.parity import Report


def cases_of(path) -> dict[tuple[str, str], ET.Element]:
    root = ET.parse(path).getroot()
    return {(c.get("classname").removeprefix("tfscope.verify."), c.get("name")): c for c in root.iter("testcase")}


def test_a_report_as_junit_keeps_every_pair_and_its_numbers(tmp_path):
    rng = np.random.default_rng(0)
    sets = {"a": rng.normal(size=(4, 2)), "b": rng.normal(size=(3, 2))}
    comparisons, summaries = [], []
    for runtime, delta in (("graph", 0.0), ("ort_all", 1e-3)):  # ort_all off by 1e-3 on set b only
        gots = {name: x + (delta if name == "b" else 0.0) for name, x in sets.items()}
        parts = [compare(x, gots[name], 1e-5, 1e-5, runtime, name) for name, x in sets.items()]
        comparisons += parts
        summaries.append(combine(parts, list(sets.values()), list(gots.values())))
    report = Report(str(tmp_path), "float64", 1e-5, 1e-5, {k: list(v.shape) for k, v in sets.items()},
                    comparisons, summaries)
    path = junit.write(tmp_path / "ci" / "parity.xml", report, 1.5)
    root = ET.parse(path).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("time")) == ("4", "1", "1.500")
    got = cases_of(path)
    assert set(got) == {("graph", "a"), ("graph", "b"), ("ort_all", "a"), ("ort_all", "b")}
    failed = [k for k, c in got.items() if c.find("failure") is not None]
    assert failed == [("ort_all", "b")]
    message = got[("ort_all", "b")].find("failure").get("message")
    bad = comparisons[3]
    assert message == ("ort_all differs from eager on input 'b': 6 of 6 element(s) beyond atol 1e-05 and rtol 1e-05 "
                       f"(first at row 0), max abs {bad.max_abs:.3g}, max rel {bad.max_rel:.3g}; passing would need "
                       f"atol {bad.min_atol:.3g} or rtol {bad.min_rtol:.3g}")
    props = {p.get("name"): p.get("value") for p in got[("ort_all", "b")].find("properties")}
    assert float(props["max_abs"]) == pytest.approx(comparisons[3].max_abs, rel=1e-5)  # written with 6 digits
    assert props["failed_elements"] == "6"


def test_verify_writes_junit_for_an_export_and_a_tampered_one(lecture_run, tmp_path):
    import onnx

    from tfscope.export.writer import export_run

    good = tmp_path / "export"
    report = export_run(lecture_run, good)  # the export's own verify: the Report verify --junit writes
    assert report.passed
    ok = cases_of(junit.write(tmp_path / "good.xml", report))
    assert ok and all(c.find("failure") is None for c in ok.values())
    runtimes = {r for r, _ in ok}
    assert {"savedmodel", "ort_noopt", "ort_all", "onnx_reference"} <= runtimes
    assert len(ok) == len(runtimes) * len({i for _, i in ok})  # every runtime on every input set

    bad = tmp_path / "tampered"
    shutil.copytree(good, bad)
    proto = onnx.load(str(bad / "model.onnx"))
    init = next(i for i in proto.graph.initializer if len(i.dims) == 2)
    w = onnx.numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5  # far beyond rounding and 1e-5: every ONNX runtime must fail, TF runtimes not
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(proto, str(bad / "model.onnx"))
    assert main(["verify", str(bad), "--junit", str(tmp_path / "bad.xml")]) == 1
    got = cases_of(tmp_path / "bad.xml")
    failing = {r for (r, _), c in got.items() if c.find("failure") is not None}
    assert failing == {"ort_noopt", "ort_all", "onnx_reference"}, failing
    root = ET.parse(tmp_path / "bad.xml").getroot()
    assert int(root.get("failures")) == sum(1 for c in got.values() if c.find("failure") is not None)


def test_a_junit_path_that_is_a_directory_is_refused_before_verifying(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", str(tmp_path / "nowhere"), "--junit", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (f"tfscope: error: --junit {tmp_path}: is a directory; "
                                               "give a file name such as parity.xml")

"""`tfscope export` / `tfscope verify` as a user runs them: files, exit codes, refusals, atomicity,
and the ONNX file used alone with onnxruntime."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from conftest import tfscope


@pytest.fixture(scope="module")
def cli_export(lecture_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "export"
    r = tfscope("export", str(lecture_run), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "PASS: every runtime matches" in r.stdout and "ort_all" in r.stdout
    return out


def test_export_writes_everything_and_parity_passes(cli_export):
    for part in ("saved_model/saved_model.pb", "model.onnx", "parity.json", "inputs.npz", "export.json",
                 "live/network.json"):
        assert (cli_export / part).exists(), part
    parity = json.loads((cli_export / "parity.json").read_text())
    assert parity["passed"] is True and parity["first_failure"] is None
    assert parity["export_dir"] == str(cli_export)
    assert {s["runtime"] for s in parity["summaries"]} == {"graph", "xla", "savedmodel", "ort_noopt", "ort_all",
                                                           "onnx_reference"}
    assert {"train", "range_1", "range_7", "range_1024", "beyond_1024", "zeros", "large"} == set(parity["inputs"])
    assert not list(cli_export.parent.glob(".export.partial-*"))


def test_onnx_file_alone_predicts_14_for_3_2(cli_export):
    """Only onnxruntime and numpy are imported: the ONNX file needs nothing from TensorFlow."""
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            f"s = ort.InferenceSession({str(cli_export / 'model.onnx')!r}, providers=['CPUExecutionProvider'])\n"
            "z = s.run(['z'], {'x': np.array([[3.0, 2.0]], np.float32)})[0]\n"
            "assert 'tensorflow' not in sys.modules and 'tf2onnx' not in sys.modules\n"
            "print(repr(float(z[0, 0])))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # the lecture network trains to loss 1e-10 (standardised); the truth is 2*3 + 3*2 + 2 = 14
    assert abs(float(r.stdout) - 14.0) < 1e-3


def test_verify_fails_with_status_1_naming_pair_input_and_layer_and_benches(cli_export, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(cli_export, broken)
    proto = onnx.load(str(broken / "model.onnx"))
    init = next(i for i in proto.graph.initializer if i.name.startswith("layer_0/") and len(i.dims) == 2)
    w = onnx.numpy_helper.to_array(init).copy()
    w[1, 0] *= 1.01
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(proto, str(broken / "model.onnx"))
    r = tfscope("verify", str(broken), "--bench")
    assert r.returncode == 1, r.stderr
    fail = next(line for line in r.stdout.splitlines() if line.startswith("FAIL:"))
    # the rounding bound decides by default: the runtime's distance from the float64 network is named
    assert fail.startswith("FAIL: ort_noopt exceeds what float32 rounding explains on input 'train'")
    assert "first diverging stage: layer_0" in fail
    assert json.loads((broken / "parity.json").read_text())["localisation"]["first_diverging"] == "layer_0"
    # the latency table follows the report
    bench = r.stdout.split("us/call", 1)[1].splitlines()[1:5]  # the four rows under its header
    assert [(row.split()[0], row.split()[1]) for row in bench] == [
        ("savedmodel", "1"), ("onnxruntime", "1"), ("savedmodel", "1024"), ("onnxruntime", "1024")]


def test_existing_directory_and_opset_19_are_refused(cli_export, lecture_run, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in cli_export.rglob("*")}
    r = tfscope("export", str(lecture_run), "--out", str(cli_export))
    assert r.returncode == 2
    assert r.stderr.strip() == f"tfscope: error: {cli_export}: already exists; use --force to replace it"
    assert {p: p.stat().st_mtime_ns for p in cli_export.rglob("*")} == before
    r = tfscope("export", str(lecture_run), "--out", str(tmp_path / "new"), "--opset", "19")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--opset: 19 is not supported; choose 13 to 18" in r.stderr and not (tmp_path / "new").exists()


def test_force_replaces_only_exports_and_only_when_complete(lecture_run, tmp_path):
    from tfscope.core.errors import RunDirError
    from tfscope.export.writer import export_run

    out = tmp_path / "exp"
    export_run(lecture_run, out, opset=13)
    report = export_run(lecture_run, out, opset=18, force=True)
    assert report.passed and json.loads((out / "export.json").read_text())["opset"] == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temporary or old copies left
    other = tmp_path / "not-an-export"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not an export directory"):
        export_run(lecture_run, other, force=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_export_killed_midway_leaves_nothing_and_a_rerun_succeeds(lecture_run, tmp_path):
    from tfscope.export.writer import export_run

    out = tmp_path / "exp"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.Popen([sys.executable, "-m", "tfscope", "export", str(lecture_run), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    partial = tmp_path / f".exp.partial-{p.pid}"
    deadline = time.monotonic() + 120
    # kill once the SavedModel is on disk: the ONNX conversion and the parity run are still to come
    while not (partial / "saved_model" / "saved_model.pb").exists():
        assert p.poll() is None and time.monotonic() < deadline, "export ended before it could be killed"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=30) == -signal.SIGKILL
    assert not out.exists() and partial.exists()
    report = export_run(lecture_run, out)
    assert report.passed and (out / "model.onnx").is_file()
    assert not partial.exists()  # the dead export's temporary directory is cleaned up


def test_verify_refuses_bad_directories_and_tolerances(lecture_run, cli_export, tmp_path):
    from tfscope.core.errors import ConfigError, RunDirError
    from tfscope.export.parity import verify

    with pytest.raises(RunDirError, match="no such export directory"):
        verify(tmp_path / "missing")
    with pytest.raises(RunDirError, match=r"not a complete export directory \(no export.json\)"):
        verify(lecture_run)
    with pytest.raises(ConfigError, match="--atol: must be a finite number >= 0"):
        verify(cli_export, atol=-1.0)
    with pytest.raises(ConfigError, match="--rtol"):
        verify(cli_export, rtol=float("nan"))

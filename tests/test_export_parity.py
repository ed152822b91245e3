"""Parity of every runtime with the live network, on the lecture network and on random nonlinear
networks (tanh, relu; several widths; float32 and float64), checked against independent oracles:
a numpy forward pass from the run's own checkpoint, and the report's figures recomputed here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from tfscope.core.config import TrainConfig
from tfscope.core.train.run import load_run, train
from tfscope.export.inputs import load_inputs
from tfscope.export.parity import verify
from tfscope.export.runtimes import RUNTIMES, live_runtimes, ort_runtime
from tfscope.export.serving import stage_names
from tfscope.export.writer import export_run

# (name, config fields, number of features); networks train a few hundred steps only: parity
# concerns the function the weights define, not how good the fit is.
NETWORKS = {
    "lecture-f32": None,  # the shared trained lecture run
    "lecture-f64": (dict(dtype="float64", steps=500), 2),
    "tanh-8-4-f32": (dict(hidden=[8, 4], activation="tanh", steps=200), 3),
    "relu-16-8-f64": (dict(hidden=[16, 8], activation="relu", dtype="float64", steps=200), 3),
    "relu-32-f32": (dict(hidden=[32], activation="relu", steps=200, seed=3), 3),
    "tanh-3-f64": (dict(hidden=[3], activation="tanh", dtype="float64", steps=200), 2),
}
# Every network is exported at the defaults. Float32 networks are judged by the rounding bound
# against the float64 network (export/assess.py), float64 ones by the fixed 1e-12 rule. The 32-wide
# relu net in float32 used to need atol/rtol 5e-4 here: on the inputs 10x beyond the training
# range its output (about 3) is a sum of 32 terms of order 100 that cancel, and summing them in
# another order (oneDNN/Eigen vs MLAS vs numpy) moved it by 1.2e-4 absolute (measured), beyond the
# fixed 1e-5. That is rounding, and the bound verdict passes it without a tolerance.
# Tolerance of the numpy oracle (float64 arithmetic) against the float32 / float64 runtimes on
# inputs within 10x of the training range: a few float32 roundings per layer (~1e-7 relative
# each) stay far below 1e-4; float64 roundings far below 1e-10.
ORACLE_TOL = {"float32": 1e-4, "float64": 1e-10}


def nonlinear_csv(path: Path, n_features: int, seed: int) -> Path:
    """Random rows of a smooth nonlinear target, so the net's layers are not near-linear."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 5, size=(64, n_features))
    z = np.sin(x[:, 0]) * 4 + x[:, 1] ** 2 - (x[:, 2] if n_features > 2 else 0) + 10
    cols = [f"f{i}" for i in range(n_features)] + ["z"]
    rows = [",".join(cols)] + [",".join(f"{v:.6f}" for v in r) for r in np.column_stack([x, z])]
    path.write_text("\n".join(rows) + "\n")
    return path


_EXPORTS: dict[str, tuple] = {}


def export_network(name: str, lecture_run: Path, tmp_path_factory) -> tuple[str, Path, Path, object]:
    """(network name, run dir, export dir, report of the export), made once per session."""
    if name in _EXPORTS:
        return _EXPORTS[name]
    base = tmp_path_factory.mktemp(name)
    if NETWORKS[name] is None:
        run_dir = lecture_run
    else:
        fields, n = NETWORKS[name]
        data = None if name.startswith("lecture") else str(nonlinear_csv(base / "data.csv", n, len(name)))
        run_dir = base / "run"
        train(TrainConfig(data=data, **fields), run_dir)
    report = export_run(run_dir, base / "export")
    _EXPORTS[name] = (name, run_dir, base / "export", report)
    return _EXPORTS[name]


@pytest.fixture(scope="module", params=list(NETWORKS))
def exported(request, lecture_run, tmp_path_factory) -> tuple[str, Path, Path, object]:
    return export_network(request.param, lecture_run, tmp_path_factory)


def numpy_forward(run_dir: Path, x: np.ndarray) -> np.ndarray:
    """The network by hand in float64 numpy, from the run's own checkpoint (not the export's copy)."""
    model = load_run(run_dir).model
    n = model.norm
    h = (x.astype(np.float64) - n.x_mean.numpy()) / n.x_std.numpy()
    for layer in model.mlp.layers:
        h = h @ layer.w.numpy().astype(np.float64) + layer.b.numpy()
        h = {"linear": h, "relu": np.maximum(h, 0), "tanh": np.tanh(h)}[layer.activation]
    return h * n.z_std.numpy() + n.z_mean.numpy()


def test_every_runtime_matches_eager(exported):
    name, _, export_dir, report = exported
    assert report.passed, report.table(detail=True)
    assert {c.runtime for c in report.comparisons} == set(RUNTIMES)
    assert {c.input for c in report.comparisons} == set(load_inputs(export_dir / "inputs.npz"))
    dtype = "float64" if "f64" in name else "float32"
    default = {"float32": 1e-5, "float64": 1e-12}[dtype]
    assert report.dtype == dtype and report.atol == report.rtol == default
    assert report.rule == {"float32": "bound", "float64": "fixed"}[dtype]
    if name == "tanh-3-f64":  # the same again from disk, as `tfscope verify` does (once: it takes seconds)
        again = verify(export_dir)
        assert again.passed and [c.max_abs for c in again.comparisons] == [c.max_abs for c in report.comparisons]


def test_onnx_and_savedmodel_match_a_numpy_forward_pass(exported):
    name, run_dir, export_dir, report = exported
    sets = load_inputs(export_dir / "inputs.npz")
    x = np.concatenate([sets["train"], sets["range_1024"], sets["beyond_1024"], sets["zeros"]])
    expected = numpy_forward(run_dir, x)
    proto = onnx.load(str(export_dir / "model.onnx"))
    got = ort_runtime(proto, [], optimise=True).run(x)
    tol = ORACLE_TOL[report.dtype]
    scale = np.abs(expected).max()
    assert got.dtype == x.dtype
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale)


def test_report_figures_recomputed_independently(exported):
    _, _, export_dir, report = exported
    from tfscope.export.live import load_live

    model, _ = load_live(export_dir / "live")
    x = load_inputs(export_dir / "inputs.npz")["beyond_1024"]
    ref = model(x).numpy().astype(np.float64)
    got = ort_runtime(onnx.load(str(export_dir / "model.onnx")), [], optimise=False).run(x).astype(np.float64)
    c = next(c for c in report.comparisons if c.runtime == "ort_noopt" and c.input == "beyond_1024")
    err = np.abs(got - ref)
    assert c.max_abs == err.max() and np.isclose(c.mean_abs, err.mean(), rtol=1e-12)
    assert c.median_abs == np.median(err) and c.shape_ok and c.dtype_ok and c.nan_got == 0


def test_export_files_have_the_promised_interface(exported):
    _, _, export_dir, report = exported
    import tensorflow as tf

    proto = onnx.load(str(export_dir / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["z"]
    for v in (proto.graph.input[0], proto.graph.output[0]):
        dim = v.type.tensor_type.shape.dim[0]
        assert dim.dim_param == "batch" and not dim.HasField("dim_value")
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    sig = tf.saved_model.load(str(export_dir / "saved_model")).signatures["serving_default"]
    spec = sig.structured_input_signature[1]
    assert list(spec) == ["x"] and spec["x"].shape.as_list()[0] is None
    assert list(sig.structured_outputs) == ["z"] and spec["x"].dtype.name == report.dtype
    assert (export_dir / "parity.json").is_file() and (export_dir / "export.json").is_file()


def test_live_stages_agree_with_the_serving_module(exported):
    """The stage outputs used for localisation compose to the network's output."""
    _, _, export_dir, _ = exported
    from tfscope.export.live import load_live

    model, _ = load_live(export_dir / "live")
    x = load_inputs(export_dir / "inputs.npz")["train"]
    stages = live_runtimes(model)["eager"].stages(x)
    assert list(stages) == stage_names(model)
    np.testing.assert_array_equal(stages["unstandardize"], model(x).numpy())


def test_a_perturbed_onnx_weight_is_caught_and_localised(lecture_run, tmp_path_factory, tmp_path):
    _, _, export_dir, _ = export_network("tanh-8-4-f32", lecture_run, tmp_path_factory)
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    proto = onnx.load(str(broken / "model.onnx"))
    init = next(i for i in proto.graph.initializer if i.name.startswith("layer_1/") and len(i.dims) == 2)
    w = onnx.numpy_helper.to_array(init).copy()
    w[0, 0] += 1e-2
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(proto, str(broken / "model.onnx"))
    report = verify(broken)
    assert not report.passed
    failing = {c.runtime for c in report.summaries if not c.passed}
    assert failing == {"ort_noopt", "ort_all", "onnx_reference"}
    loc = report.localisation
    assert loc.runtime == "ort_noopt" and loc.first_diverging == "layer_1"
    assert [c.passed for c in loc.stages[:2]] == [True, True]  # standardize, layer_0 still agree
    assert "layer_1" in report.failure_line() and "ort_noopt" in report.failure_line()

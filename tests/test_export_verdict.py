"""The bound verdict of tfscope exports (export/assess.py, as verify uses it): wide relu networks pass
by default however their runtimes order their sums, planted changes that no rounding explains are
caught and localised to their stage, the two float64 oracles agree, every float32 runtime lies
inside the bound on random networks, and the bad inputs of the verdict are refused in one line.

Networks here have random Glorot weights (Keras' default initialisation, the scale trained weights
keep) and random biases instead of trained ones: training a 256-256-256-1 net on 8,192 rows takes
minutes on this machine; the README gives the trained network's measured table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import tfscope
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tfscope.export.assess import assess, network_graph
from tfscope.export.bounds import propagate
from tfscope.export.oracle import GraphOracle, run_float64
from tfscope.export.verdict import judge

# The median over elements of bound / observed error, on random networks up to 3 layers of 48: the
# bound is a worst case over every summation order and rounding, so it sits above the error seen.
# Measured on 24 random networks x 4 runtimes: median 305, largest 2,770 (3 layers, linear, inputs
# 1e3 out); kept below NOT_VACUOUS.
NOT_VACUOUS = 1e4


def regressor(sizes, activation="relu", seed=0, std=(1.7, 0.9, 3.1)):
    """A float32 Regressor with Glorot weights, N(0, 0.1) biases and non-trivial standardisation."""
    import tensorflow as tf

    from tfscope.core.nn.network import Regressor

    m = Regressor(sizes, activation, seed, tf.float32)
    rng = np.random.default_rng(seed + 100)
    for layer in m.mlp.layers:
        layer.b.assign(rng.normal(0, 0.1, layer.b.shape).astype(np.float32))
    n = sizes[0]
    m.norm.x_mean.assign(rng.normal(0, 2, n).astype(np.float32))
    m.norm.x_std.assign(np.resize(np.array(std, np.float32), n))
    m.norm.z_mean.assign([5.0] * sizes[-1])
    m.norm.z_std.assign([2.5] * sizes[-1])
    return m


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A 3-256-256-256-1 relu export (the issue's shape) and its default verify report."""
    from tfscope.export.parity import verify
    from tfscope.export.writer import write_export

    model = regressor([3, 256, 256, 256, 1], "relu", seed=1)
    rng = np.random.default_rng(2)
    x_train = (rng.uniform(-3, 3, (512, 3)) * model.norm.x_std.numpy() + model.norm.x_mean.numpy()).astype(np.float32)
    d = tmp_path_factory.mktemp("wide") / "export"
    d.mkdir()
    write_export(model, x_train, d, 17, {"step": 0})
    return model, d, verify(d)


def test_the_wide_relu_export_passes_by_default_and_parity_json_records_both_rules(wide):
    model, d, report = wide
    assert report.rule == "bound" and report.passed, report.table()
    parity = json.loads((d / "parity.json").read_text())
    assert parity["rule"] == "bound" and parity["passed"] is True
    assert parity["fixed_verdict"]["passed"] == all(c.passed for c in report.comparisons)
    runtimes = [s["runtime"] for s in parity["bound_verdict"]["summaries"]]
    assert runtimes == ["eager", "graph", "xla", "savedmodel", "ort_noopt", "ort_all", "onnx_reference"]
    beyond = [j for j in report.assessment.outputs if j.input == "beyond_1024"]
    assert all(j.max_error > 0 and j.bound_use < 1 for j in beyond)
    # every stage of every runtime was checked against its own rounding bound
    stages = report.assessment.stages["ort_all/beyond_1024"]
    assert [j.output for j in stages] == ["standardize", "layer_0", "layer_1", "layer_2", "layer_3", "unstandardize"]
    assert all(j.passed and j.rule == "bound" for j in stages)


def _plant(proto: onnx.ModelProto, how: str) -> onnx.ModelProto:
    """A copy of the ONNX graph with one change no rounding explains."""
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    inits = {i.name: i for i in p.graph.initializer}

    def put(name, array):
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    if how == "weights x (1 + 1e-3)":
        name = "layer_1/MatMul/ReadVariableOp:0"
        put(name, (numpy_helper.to_array(inits[name]) * np.float32(1 + 1e-3)).astype(np.float32))
    elif how == "one bias element + 1e-2 of the output scale":
        name = "layer_2/add/ReadVariableOp:0"
        b = numpy_helper.to_array(inits[name]).copy()
        b[7] += np.float32(0.01 * 1.0)  # layer_2's outputs are O(1) here (measured std ~0.9)
        put(name, b)
    elif how == "ReLU -> LeakyReLU(0.01)":
        node = next(n for n in p.graph.node if n.name == "layer_0/Relu")
        node.op_type = "LeakyRelu"
        node.attribute.append(helper.make_attribute("alpha", 0.01))
    elif how == "float32 weight stored as float16":
        name = "layer_0/MatMul/ReadVariableOp:0"
        w16 = numpy_helper.to_array(inits[name]).astype(np.float16)
        p.graph.initializer.remove(inits[name])
        p.graph.initializer.append(numpy_helper.from_array(w16, name + "_f16"))
        p.graph.node.insert(0, helper.make_node("Cast", [name + "_f16"], [name], to=TensorProto.FLOAT, name="cast16"))
    return p


PLANTED = {"weights x (1 + 1e-3)": "layer_1", "one bias element + 1e-2 of the output scale": "layer_2",
           "ReLU -> LeakyReLU(0.01)": "layer_0", "float32 weight stored as float16": "layer_0"}


@pytest.mark.parametrize("how", list(PLANTED))
def test_a_planted_change_is_caught_and_localised(wide, how):
    from tfscope.export.inputs import load_inputs
    from tfscope.export.runtimes import live_runtimes, ort_runtime
    from tfscope.export.serving import stage_names

    model, d, _ = wide
    proto = _plant(onnx.load(str(d / "model.onnx")), how)
    sets = {k: v for k, v in load_inputs(d / "inputs.npz").items() if k in ("train", "beyond_1024")}
    runtimes = {"eager": live_runtimes(model)["eager"], "ort_noopt": ort_runtime(proto, stage_names(model), False)}
    outputs = {rt: {k: r.run(x) for k, x in sets.items()} for rt, r in runtimes.items()}
    a = assess(model, proto, sets, outputs, runtimes)
    eager, ort = a.summaries
    assert eager.passed and not ort.passed
    for name in sets:
        first = a.first_stage("ort_noopt", name)
        assert first is not None and first.output == PLANTED[how], (name, a.stages[f"ort_noopt/{name}"])
        before = a.stages[f"ort_noopt/{name}"][: [j.output for j in a.stages[f"ort_noopt/{name}"]].index(first.output)]
        assert all(j.passed for j in before)


def test_a_1024_wide_network_passes_and_the_two_oracles_agree(tmp_path):
    """Eager, XLA, onnxruntime and the ONNX reference on 300 rows 10x beyond the unit range; the
    float64 ONNX graph and the float64 network agree to the folded reciprocal's rounding (the
    ONNX graph multiplies by fl32(1/std) where the network divides by std: <= 2u relative at the
    standardised input), and to 1e-15 where 1/std is exact (std a power of two)."""
    from tfscope.core.sources.source import RunSource
    from tfscope.export.runtimes import live_runtimes, ort_runtime, reference_runtime
    from tfscope.export.serving import ExportModule, stage_names
    from tfscope.export.writer import write_onnx

    model = regressor([3, 1024, 1024, 1], "relu", seed=4)
    write_onnx(ExportModule(model), tmp_path / "m.onnx", 17)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    rng = np.random.default_rng(5)
    x = (rng.uniform(-10, 10, (300, 3)) * model.norm.x_std.numpy() + model.norm.x_mean.numpy()).astype(np.float32)
    runtimes = live_runtimes(model)
    del runtimes["graph"]
    stages = stage_names(model)
    runtimes |= {"ort_all": ort_runtime(proto, stages, True), "onnx_reference": reference_runtime(proto, stages)}
    outputs = {rt: {"beyond": r.run(x)} for rt, r in runtimes.items()}
    a = assess(model, proto, {"beyond": x}, outputs, runtimes)
    assert a.passed and len(a.summaries) == 4, a.summaries
    z_tf = run_float64(RunSource(model), {"x": x})["z"]
    z_onnx = GraphOracle(proto).outputs({"x": x})["z"]
    gb = propagate(network_graph(model), {"x": x})
    assert (np.abs(z_onnx - z_tf) <= gb.bounds["z"]).all()
    assert all(j.passed for j in a.graph_checks)
    model.norm.x_std.assign([0.5, 2.0, 4.0])
    write_onnx(ExportModule(model), tmp_path / "p2.onnx", 17)
    z_tf = run_float64(RunSource(model), {"x": x})["z"]
    z_onnx = GraphOracle(onnx.load(str(tmp_path / "p2.onnx"))).outputs({"x": x})["z"]
    z_net = GraphOracle(network_graph(model)).outputs({"x": x})["z"]
    # float64 rounding of two different summation orders of 1024-term sums: ~1e-16 relative
    for z in (z_onnx, z_net):
        assert np.abs(z - z_tf).max() <= 1e-14 * np.abs(z_tf).max()


_RATIOS: list[float] = []


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(1, 48), min_size=1, max_size=3), st.sampled_from(["relu", "tanh", "sigmoid", "linear"]),
       st.integers(0, 10_000), st.sampled_from([1.0, 10.0, 1e3]))
def test_float32_runtimes_always_lie_inside_the_bound(hidden, activation, seed, spread):
    """Random widths, activations, weights and input spreads: eager, XLA and onnxruntime (both
    optimisation levels, on the network's own graph, so no tf2onnx conversion per example) are
    within the bound of the float64 network, element by element."""
    import onnxruntime as ort
    import tensorflow as tf

    from tfscope.core.sources.source import RunSource

    model = regressor([2, *hidden, 1], activation, seed)
    proto = network_graph(model)
    rng = np.random.default_rng(seed)
    x = (rng.normal(0, spread, (64, 2)) * model.norm.x_std.numpy() + model.norm.x_mean.numpy()).astype(np.float32)
    z64 = run_float64(RunSource(model), {"x": x})["z"]
    bound = propagate(proto, {"x": x}).bounds["z"]
    got = {"eager": model(tf.constant(x)).numpy(),
           "xla": tf.function(model.__call__, jit_compile=True)(tf.constant(x)).numpy()}
    for name, level in (("ort_noopt", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                        ("ort_all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        got[name] = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
            ["z"], {"x": x})[0]
    for name, z in got.items():
        j = judge(z, z64, bound, runtime=name)
        assert j.passed, j
        err = np.abs(z.astype(np.float64) - z64)
        if (err > 0).any():
            ratio = float(np.median(bound[err > 0] / err[err > 0]))
            _RATIOS.append(ratio)
            assert ratio < NOT_VACUOUS, (name, ratio)


def test_tolerance_flags_are_refused_in_one_line_before_tensorflow_loads(tmp_path):
    for flags, needle in ((["--atol", "-1"], "--atol"), (["--rtol", "abc"], "--rtol"),
                          (["--atol", "nan"], "--atol")):
        r = tfscope("verify", str(tmp_path), *flags)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert needle in r.stderr and "must be a finite number >= 0" in r.stderr and "Traceback" not in r.stderr


def test_explicit_tolerances_switch_to_the_fixed_rule_and_no_float64_form_is_refused(wide, tmp_path):
    """From the command line: --atol 0 --rtol 0 asks for bit equality with eager, which XLA and
    onnxruntime do not give (exit 1, the fixed rule named); a weight stored as int8 behind a
    DequantizeLinear (an op with no float64 form) is refused in one line, exit 2."""
    _, d, _ = wide
    r = tfscope("verify", str(d), "--atol", "0", "--rtol", "0")
    assert r.returncode == 1, r.stderr
    assert "the fixed rule decides (atol 0, rtol 0 vs eager, as asked)" in r.stdout
    assert json.loads((d / "parity.json").read_text())["rule"] == "fixed"
    broken = tmp_path / "int8"
    shutil.copytree(d, broken)
    proto = onnx.load(str(broken / "model.onnx"))
    name = "layer_0/MatMul/ReadVariableOp:0"
    init = next(i for i in proto.graph.initializer if i.name == name)
    w = numpy_helper.to_array(init)
    scale = np.float32(np.abs(w).max() / 127)
    proto.graph.initializer.remove(init)
    proto.graph.initializer.extend([numpy_helper.from_array(np.round(w / scale).astype(np.int8), "w_q"),
                                    numpy_helper.from_array(np.array(scale, np.float32), "w_scale")])
    proto.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w_q", "w_scale"], [name], name="layer_0/dq"))
    onnx.save(proto, str(broken / "model.onnx"))
    before = (broken / "parity.json").read_bytes()
    r = tfscope("verify", str(broken))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "node 'layer_0/dq' (DequantizeLinear)" in r.stderr and "no float64" in r.stderr
    assert (broken / "parity.json").read_bytes() == before

"""The rounding bound itself (export/bounds.py) and the float64 oracle (export/oracle.py) on small
ONNX graphs built here: hand-worked values of each rule, float32 evaluations that must lie inside
the bound, the fallback that names the op without a rule, and the refusal of a graph with no
float64 form. No TensorFlow here: onnxruntime and onnx's reference evaluator are the float32 runtimes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tfscope.export.bounds import TINY, U, gamma, local, propagate, subgraph
from tfscope.export.oracle import GraphOracle, NoFloat64Form
from tfscope.export.verdict import FALLBACK_K, judge

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, F, None) for n in outputs],
                          initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def ort_run(proto: onnx.ModelProto, feeds: dict, names: list[str]) -> list[np.ndarray]:
    """onnxruntime (float32) with the named intermediate tensors as outputs too."""
    import onnxruntime as ort

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, F, None) for n in names if n not in have)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(out.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(names, feeds)


def test_inner_product_bias_and_relu_by_hand():
    # x (1, 2) @ w (2, 1) + b, relu: n = 2, so the MatMul bound is gamma_2 |x|.|w| exactly (no error in),
    # the Add bound is the larger of the unfused (MatMul bound + u |x.w^| + u |b|) and the fused
    # (gamma_3 (|x|.|w| + |b|)) evaluation; relu passes the error through.
    x, w, b = np.array([[3.0, -1.0]], np.float32), np.array([[0.5], [2.0]]), np.array([0.25])
    p = model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
               helper.make_node("Relu", ["a"], ["y"])], [("x", [None, 2])], ["y"], [("w", w), ("b", b)])
    gb = propagate(p, {"x": x})
    mag = 3.0 * 0.5 + 1.0 * 2.0  # |x|.|w| = 3.5
    widen = 1 + 2.0**-28
    assert gb.values["m"][0, 0] == -0.5 and gb.values["y"][0, 0] == 0.0
    e_m = gamma(2) * mag + 2 * TINY * (1 + 3 + 2)
    assert gb.bounds["m"][0, 0] == pytest.approx(e_m * widen, rel=1e-12)
    unfused = e_m + U * ((0.5 + 2 * e_m) + 0.25) + TINY
    fused = gamma(3) * (mag + 0.25) + 3 * TINY
    assert gb.bounds["a"][0, 0] == pytest.approx(max(unfused, fused) * widen, rel=1e-12)
    # a = -0.25 is surely negative (its bound is ~1e-7): relu gives exactly 0 whatever the rounding
    assert gb.bounds["y"][0, 0] == 0.0
    gb = propagate(p, {"x": -x})  # a = 0.75 > 0: relu passes the error through
    assert gb.bounds["y"][0, 0] == gb.bounds["a"][0, 0] > 0
    assert gb.order == ["w", "b", "x", "m", "a", "y"] and set(gb.rules.values()) == {"bound"}


def test_conv_pool_and_batchnorm_hold_their_bounds_in_float32():
    """A grouped conv with bias, batch norm, max and average pooling, a global average and a
    Gemm: onnxruntime's and the reference evaluator's float32 results lie inside the bound, and
    the bound is within 1e4 of the error observed (not vacuous; measured ratio ~10-300)."""
    rng = np.random.default_rng(3)
    C = 4
    inits = [("w", rng.normal(0, 0.3, (C, 2, 3, 3))), ("cb", rng.normal(0, 0.1, C)),
             ("sc", rng.uniform(0.5, 2, C)), ("bb", rng.normal(0, 1, C)), ("mu", rng.normal(0, 1, C)),
             ("var", rng.uniform(0.1, 3, C)), ("g", rng.normal(0, 0.5, (C, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "sc", "bb", "mu", "var"], ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("GlobalAveragePool", ["ap"], ["gp"]),
             helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["y"])]
    p = model(nodes, [("x", [None, C, 8, 8])], ["y"], inits)
    x = rng.normal(0, 10, (5, C, 8, 8)).astype(np.float32)
    gb = propagate(p, {"x": x})
    names = ["c", "n", "mp", "ap", "gp", "y"]
    assert all(gb.rules[n] == "bound" for n in names)
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(p).run(None, {"x": x}, intermediate=True)
    for got in (dict(zip(names, ort_run(p, {"x": x}, names))), {n: ref[n] for n in names}):
        for n in names:
            j = judge(got[n], gb.values[n], gb.bounds[n], output=n)
            assert j.passed, (n, j)
            err = np.abs(got[n] - gb.values[n])
            assert np.median(gb.bounds[n][err > 0] / err[err > 0]) < 1e4, n


def test_activations_and_division_hold_their_bounds_on_hard_inputs():
    """Tanh, Sigmoid and LeakyRelu of values from 1e-30 to 1e2 (where sigmoid's float32 forms err
    in absolute, not relative, terms), division by a tensor, float16-stored weights cast back, ReLU6.
    Dividing by a sigmoid that may round to 0 has an infinite bound there, and only there."""
    rng = np.random.default_rng(4)
    x = (rng.choice([-1, 1], (64, 8)) * 10.0 ** rng.uniform(-30, 2, (64, 8))).astype(np.float32)
    w16 = rng.normal(0, 1, (8, 8)).astype(np.float16)
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("LeakyRelu", ["x"], ["l"], alpha=0.01), helper.make_node("Add", ["s", "one"], ["q"]),
             helper.make_node("Div", ["l", "q"], ["d"]), helper.make_node("Div", ["t", "s"], ["r"]),
             helper.make_node("Cast", ["w16"], ["w"], to=F), helper.make_node("MatMul", ["d", "w"], ["y"]),
             helper.make_node("Clip", ["y", "zero", "six"], ["c"])]
    g = model(nodes, [("x", [None, 8])], ["c", "r"], [("one", 1.0), ("zero", 0.0), ("six", 6.0)])
    g.graph.initializer.append(numpy_helper.from_array(w16, "w16"))
    gb = propagate(g, {"x": x})
    names = ["t", "s", "l", "d", "y", "r", "c"]
    for n, got in zip(names, ort_run(g, {"x": x}, names)):
        assert judge(got, gb.values[n], gb.bounds[n]).passed, n
        assert np.isfinite(gb.bounds[n]).all() == (n != "r"), n
    assert (np.isinf(gb.bounds["r"]) == (gb.values["s"] <= 2 * gb.bounds["s"])).all()
    assert np.array_equal(gb.values["w"], w16.astype(np.float64)) and not gb.bounds["w"].any()
    clipped = (gb.values["y"] < -2 * gb.bounds["y"]) | (gb.values["y"] > 6 + 2 * gb.bounds["y"])
    assert clipped.any() and not gb.bounds["c"][clipped].any()  # surely clipped: exactly 0 or 6


def test_an_op_without_a_rule_falls_back_visibly_and_downstream_too():
    import math

    p = model([helper.make_node("MatMul", ["x", "w"], ["m"]),
               helper.make_node("Erf", ["m"], ["s"], name="head/erf"),
               helper.make_node("Relu", ["s"], ["y"])], [("x", [None, 3])], ["y"], [("w", np.eye(3))])
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    gb = propagate(p, {"x": x})
    assert gb.rules["m"] == "bound" and "m" in gb.bounds
    assert gb.rules["s"] == gb.rules["y"] == "fallback (Erf head/erf)"
    assert "s" not in gb.bounds and "y" not in gb.bounds
    np.testing.assert_allclose(gb.values["y"][0], [math.erf(v) for v in (1.0, 2.0, 3.0)], rtol=1e-15)
    # the fallback verdict: within k times eager's own error (u max|oracle| when eager is exact)
    o = gb.values["y"]
    assert judge(o.astype(np.float32), o, eager=o.astype(np.float32)).passed
    off = o * (1 + 2 * FALLBACK_K * U)  # 2k times the floor: beyond the fallback's reach
    j = judge(off, o, eager=o.astype(np.float32), fallback=gb.rules["y"])
    assert not j.passed and j.rule == "fallback (Erf head/erf)" and 1.5 < j.bound_use < 2.5


def test_local_bounds_start_from_the_observed_tensor():
    """`local` cuts the graph at a tensor taken as exact: its bound is the stage's own rounding."""
    w1, w2 = np.full((2, 4), 0.5), np.full((4, 1), 0.25)
    p = model([helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
               helper.make_node("MatMul", ["h", "w2"], ["y"])], [("x", [None, 2])], ["y"], [("w1", w1), ("w2", w2)])
    sub = subgraph(p, ["h"], ["y"])
    assert [n.op_type for n in sub.graph.node] == ["MatMul"] and [i.name for i in sub.graph.input] == ["h"]
    h = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    lb = local(p, {"h": h}, ["y"])
    assert lb.values["y"][0, 0] == 2.5
    assert lb.bounds["y"][0, 0] == pytest.approx((gamma(4) * 2.5 + 4 * TINY * (1 + 4 + 0.25)) * (1 + 2.0**-28))


def test_the_float64_oracle_casts_exactly_and_refuses_what_has_no_double():
    w = np.array([[1 / 3, 2 / 3]], np.float32)
    p = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [None, 1])], ["y"], [("w", w)])
    y = GraphOracle(p).outputs({"x": np.array([[3.0]], np.float32)})["y"]
    assert y.dtype == np.float64 and np.array_equal(y, 3.0 * w.astype(np.float64))  # exact: no float32 rounding
    q = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="weights/dq"),
         helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", F, [None, 2])],
        [helper.make_tensor_value_info("y", F, None)],
        initializer=[numpy_helper.from_array(np.ones((2, 2), np.int8), "q"),
                     numpy_helper.from_array(np.array(0.5, np.float32), "s")])
    with pytest.raises(NoFloat64Form, match=r"node 'weights/dq' \(DequantizeLinear\): its x_scale \('s'\) is "
                                            r"float32 and the op admits no float64") as e:
        GraphOracle(helper.make_model(q, opset_imports=[helper.make_opsetid("", 17)]))
    assert "\n" not in str(e.value)


def test_softmax_exp_log_sums_and_roots_hold_their_bounds_in_float32():
    """Softmax over rows of 2 to 1,000 terms with inputs up to N(0, 100) (large shifts by the row
    maximum), its parts written out as a log-sum-exp (ReduceMax, Sub, Exp, ReduceSum, Log), a
    root-mean-square normalisation (ReduceMean, Sqrt, Reciprocal) and Neg/Abs/Max: onnxruntime's and
    the reference evaluator's float32 values lie inside the bound, which stays within 1e4 of the
    error observed (median over elements with an error, away from the subnormal range)."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(5)
    for k, s in ((2, 100.0), (10, 1.0), (1000, 10.0)):
        axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
        nodes = [helper.make_node("Softmax", ["x"], ["sm"], axis=-1),
                 helper.make_node("ReduceMax", ["x"], ["mx"], axes=[-1], keepdims=1),
                 helper.make_node("Sub", ["x", "mx"], ["sh"]), helper.make_node("Exp", ["sh"], ["ex"]),
                 helper.make_node("ReduceSum", ["ex", "axes"], ["tot"], keepdims=1),
                 helper.make_node("Log", ["tot"], ["lse"]), helper.make_node("Sub", ["sh", "lse"], ["lsm"]),
                 helper.make_node("Exp", ["lsm"], ["p"]),
                 helper.make_node("Mul", ["x", "x"], ["sq"]),
                 helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
                 helper.make_node("Sqrt", ["ms"], ["rms"]), helper.make_node("Reciprocal", ["rms"], ["inv"]),
                 helper.make_node("Mul", ["x", "inv"], ["nx"]), helper.make_node("Neg", ["nx"], ["ng"]),
                 helper.make_node("Abs", ["ng"], ["ab"]), helper.make_node("Max", ["ab", "sm"], ["y"])]
        p = model(nodes, [("x", [None, k])], ["y"], opset=17)
        p.graph.initializer.append(axes)
        x = rng.normal(0, s, (64, k)).astype(np.float32)
        gb = propagate(p, {"x": x})
        names = ["sm", "mx", "sh", "ex", "tot", "lse", "lsm", "p", "ms", "rms", "inv", "nx", "ng", "ab", "y"]
        assert all(gb.rules[n] == "bound" for n in names), {n: gb.rules[n] for n in names}
        ref = ReferenceEvaluator(p).run(None, {"x": x}, intermediate=True)
        for got in (dict(zip(names, ort_run(p, {"x": x}, names))), {n: ref[n] for n in names}):
            for n in names:
                j = judge(got[n], gb.values[n], gb.bounds[n], output=n)
                assert j.passed, (k, n, j)
                err = np.abs(got[n] - gb.values[n])
                seen = (err > 0) & (np.abs(gb.values[n]) > 1e-30)  # not the flushed-subnormal allowance
                if seen.any():
                    assert np.median(gb.bounds[n][seen] / err[seen]) < 1e4, (k, n)


def test_softmax_carries_input_error_by_its_exponential_factor():
    """Inputs known only within e (`input_errors`): every softmax of inputs moved by up to e lies
    within the bound of the exact softmax, and the bound grows as y (exp(2E) - 1) does."""
    p = model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", [None, 3])], ["y"])
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    e = np.full((1, 3), 1e-3)
    gb = propagate(p, {"x": x}, input_errors={"x": e})
    rng = np.random.default_rng(6)
    x64 = x.astype(np.float64)
    for _ in range(200):
        moved = x64 + rng.uniform(-1e-3, 1e-3, x.shape)
        y = np.exp(moved - moved.max()) / np.exp(moved - moved.max()).sum()
        assert (np.abs(y - gb.values["y"]) <= gb.bounds["y"]).all()
    grown = gb.values["y"] * np.expm1(2e-3)
    assert (gb.bounds["y"] >= grown).all() and (gb.bounds["y"] <= 1.01 * grown + 1e-6).all()

"""tfscope.testing on a Keras model, its ONNX file (path and session), its SavedModel and a plain
numpy function: passing checks pass, a planted error is found at its exact element, and gradient
and optimiser checks agree with their oracles (and catch a planted mistake).

One tiny Keras model (3 -> 4 relu -> 2) is exported once per session by the plugin's own
tfscope_export fixture (export/writer.export_model: SavedModel + ONNX, verified).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfscope import testing


@pytest.fixture(scope="session")
def model():
    import keras

    keras.utils.set_random_seed(7)
    x = keras.Input((3,), name="x")
    h = keras.layers.Dense(4, activation="relu")(x)
    return keras.Model(x, keras.layers.Dense(2)(h), name="tiny")


@pytest.fixture(scope="session")
def exported(model, tfscope_export):
    result = tfscope_export(model, deep=False, reference=False)  # the lighter verify; the README example runs all
    assert result.report.passed and result.onnx.is_file() and (result.saved_model / "saved_model.pb").is_file()
    return result


def forward(model):
    """The model's forward pass written in numpy float32: an independent route to its outputs."""
    w0, b0, w1, b1 = model.get_weights()

    def fn(x):
        h = np.maximum(x @ w0 + b0, np.float32(0))  # (batch, 4)
        return (h @ w1 + b1).astype(np.float32)  # (batch, 2)

    return fn


def test_keras_vs_its_onnx_file_session_and_saved_model(model, exported):
    import onnxruntime as ort
    import tensorflow as tf

    # float32 both sides, 4-wide dot products: differences are a few float32 ulps, far inside 1e-5
    session = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    signature = tf.saved_model.load(str(exported.saved_model)).signatures["serving_default"]
    for candidate, rule in ((exported.onnx, "bound"), (session, "bound"), (exported.saved_model, "polygraphy"),
                            (signature, "polygraphy")):
        result = testing.assert_equivalent(model, candidate)
        assert result.passed and [c.input for c in result.comparisons] == ["batch_1", "batch_7", "batch_64"]
        assert result.rule == rule and 0 <= result.tolerance_use < 1
        # an ONNX side gives verify's verdict: both sides within the propagated float32 rounding bound
        assert (0 < result.bound_use < 1) if rule == "bound" else (result.why_not_bound and result.bound_use is None)
    assert "batch_64" in result.table() and "pass" in result.table()
    # a signature states its inputs: it can be the reference that the inputs are generated from
    assert [c.got_shape for c in testing.assert_equivalent(signature, model).comparisons] == [[1, 2], [7, 2], [64, 2]]


def test_keras_vs_a_plain_function_on_given_feeds(model):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    result = testing.assert_equivalent(model, forward(model), {"x": x})
    assert result.passed and result.comparisons[0].input == "inputs" and result.comparisons[0].got_shape == [5, 2]


def test_a_planted_error_is_named_at_its_element(model):
    """One element (input set 'b', row 3, index 1) moved by 1e-3, beyond atol = rtol = 1e-5: the message
    holds the verify table and exactly that element with both values."""
    fn = forward(model)
    sets = {"a": {"x": np.ones((2, 3), np.float32)},
            "b": {"x": np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)}}

    def wrong(x):
        z = fn(x)
        if len(x) == 6:
            z[3, 1] += np.float32(1e-3)
        return z

    with pytest.raises(AssertionError) as e:
        testing.assert_equivalent(model, wrong, sets)
    text = str(e.value)
    ref = np.asarray(model(sets["b"]["x"]))[3, 1]
    got = wrong(sets["b"]["x"])[3, 1]
    assert "function wrong differs from Keras model 'tiny'" in text
    assert "candidate vs ref" in text and "FAIL" in text and "pass" in text  # set a passes, set b fails
    assert "first diverging element: input set 'b', output '" in text
    assert f"row 3, index [1]: reference {float(ref)!r}, candidate {float(got)!r}" in text
    assert testing.CHECKS[-1]["passed"] is False and testing.CHECKS[-1]["first_divergence"]["row"] == 3


def test_an_onnx_file_with_a_changed_weight_fails(model, exported, tmp_path):
    import onnx

    changed = tmp_path / "export"
    shutil.copytree(exported.directory, changed)
    proto = onnx.load(str(changed / "model.onnx"))
    init = next(i for i in proto.graph.initializer if list(i.dims) == [3, 4])  # the first layer's kernel
    w = onnx.numpy_helper.to_array(init).copy()
    w.flat[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(proto, str(changed / "model.onnx"))
    with pytest.raises(AssertionError, match=r"(?s)ONNX model.onnx differs from .*bound use.*"
                                             r"first diverging element: input set '\w+', output '\w+', row \d+, "
                                             r"index \[\d\]: reference ") as e:
        testing.assert_equivalent(model, changed / "model.onnx")
    # both sides are graphs: the tensor-by-tensor localisation (export/model_parity.py, against the
    # export's own TF graph) names the first layer's MatMul, whose weight changed, nothing agreeing before it
    op = next(line for line in str(e.value).splitlines() if line.startswith("first diverging op: "))
    assert "MatMul" in op and "no agreeing tensor before it" in op, op


def test_generated_inputs_are_seeded_and_follow_the_signature(model, tfscope_inputs):
    a = tfscope_inputs(model, ranges={"x": (-2.0, 2.0)}, batch_sizes=[3, 5])
    b = tfscope_inputs(model, ranges={"x": (-2.0, 2.0)}, batch_sizes=[3, 5])
    assert list(a) == ["batch_3", "batch_5"] and a["batch_5"]["x"].shape == (5, 3)
    assert all(np.array_equal(a[k]["x"], b[k]["x"]) for k in a)
    assert a["batch_3"]["x"].dtype == np.float32 and np.all(np.abs(a["batch_3"]["x"]) <= 2.0)
    assert testing.assert_equivalent(model, forward(model), a).passed


def test_mismatched_outputs_are_refused_in_words(model):
    x = {"x": np.zeros((2, 3), np.float32)}
    with pytest.raises(AssertionError, match="returns 2 output"):
        testing.assert_equivalent(model, lambda x: (forward(model)(x), x), x)
    with pytest.raises(AssertionError, match=r"shape \[2, 1\] != \[2, 2\]"):
        testing.assert_equivalent(model, lambda x: forward(model)(x)[:, :1], x)


def test_gradients_of_a_user_function_match_central_differences():
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(2).normal(size=(6, 3)))

    def loss(w, b):
        return tf.reduce_mean(tf.tanh(tf.matmul(tf.cast(x, w.dtype), w) + b) ** 2)

    for dtype in ("float64", "float32"):
        rng = np.random.default_rng(3)
        w = tf.Variable(rng.normal(size=(3, 2)), dtype=dtype, name="w")
        b = tf.Variable(rng.normal(size=(2,)), dtype=dtype, name="b")
        # stated tolerances (tfscope.testing.GRADIENT_TOLERANCE): 1e-6 float64, 1e-4 float32
        err = testing.assert_gradients_match(loss, [w, b])
        assert err < testing.GRADIENT_TOLERANCE[dtype]
    assert err > 0  # float32 tape against float64 differences: something is measured


def test_a_wrong_custom_gradient_is_caught():
    import tensorflow as tf

    @tf.custom_gradient
    def square(v):
        return v * v, lambda dy: dy * 3.0 * v  # should be 2v

    w = tf.Variable([0.5, -1.0], dtype=tf.float64, name="w")
    with pytest.raises(AssertionError, match=r"worst at w:0 index \[1\]: tape -3\.0, differences -2\.0000"):
        testing.assert_gradients_match(lambda v: tf.reduce_sum(square(v)), [w])


def test_user_optimisers_against_keras():
    import keras
    import tensorflow as tf

    from tfscope.core.optim import optimizers

    lr = 2.0**-7  # exact in float32 (Keras keeps its rate in float32)
    assert testing.assert_optimizer_matches_keras(optimizers.make("adam", lr, tf.float32), keras.optimizers.Adam(lr),
                                                  steps=40) <= testing.OPTIMIZER_TOLERANCE["float32"]

    def sgd(grads, variables):  # a user's hand-written SGD: a callable update
        for g, v in zip(grads, variables):
            v.assign_sub(lr * g)

    assert testing.assert_optimizer_matches_keras(sgd, keras.optimizers.SGD(lr), dtype="float64", steps=40) <= 1e-12
    with pytest.raises(AssertionError, match="optimizer differs from SGD after 40 steps"):
        testing.assert_optimizer_matches_keras(sgd, keras.optimizers.SGD(lr * 1.01), steps=40)


def test_importing_the_api_and_plugin_loads_neither_tensorflow_nor_core():
    code = ("import os, sys; before = dict(os.environ); import tfscope.testing, tfscope.pytest_plugin; "
            "bad = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'tfscope.core') if m in sys.modules]; "
            "assert not bad, bad; assert dict(os.environ) == before, 'environment changed'")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


def test_under_the_bound_rule_a_planted_error_is_named_at_its_element(model, exported):
    """The reference a numpy function with one element (row 2, index 1) moved by 1e-4, the candidate
    the ONNX file: the bound rule decides (1e-4 is hundreds of times the float32 rounding bound of
    an output of size ~1, a few 1e-7), and the divergence is that element. Polygraphy's rule on
    request (1e-4 > atol = rtol = 1e-5) agrees."""
    fn = forward(model)
    feeds = {"x": np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)}

    def planted(x):
        z = fn(x)
        z[2, 1] += np.float32(1e-4)
        return z

    with pytest.raises(AssertionError, match=r"first diverging element: input set 'inputs', output '\w+', "
                                             r"row 2, index \[1\]") as e:
        testing.assert_equivalent(planted, exported.onnx, feeds)
    assert "bound use" in str(e.value) and testing.CHECKS[-1]["rule"] == "bound"
    with pytest.raises(AssertionError, match=r"row 2, index \[1\]"):
        testing.assert_equivalent(planted, exported.onnx, feeds, rule="polygraphy")
    assert testing.CHECKS[-1]["rule"] == "polygraphy"
    assert testing.assert_equivalent(fn, exported.onnx, feeds).rule == "bound"

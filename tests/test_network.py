"""Networks: the closed-form oracle for the lecture data, the affine-map collapse, Glorot init."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfscope.core.data import tables as data
from tfscope.core.errors import ConfigError
from tfscope.core.nn.network import MLP, Regressor, glorot_uniform
from tfscope.core.train.run import load_run


def test_least_squares_on_lecture_data_is_2_3_2():
    # The data are exact integers made by z = 2x + 3y + 2, so OLS in float64 recovers the
    # coefficients up to a few ulps of the condition number: 1e-10 leaves room only for rounding.
    for dtype in ("float32", "float64"):
        coef = data.least_squares(data.builtin(dtype))
        np.testing.assert_allclose(coef, [2.0, 3.0, 2.0], rtol=0, atol=1e-10)


def test_least_squares_against_normal_equations():
    """An independent route: solve (A^T A) c = A^T z on random noisy data."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3))
    z = x @ [[1.5], [-2.0], [0.25]] + 4.0 + rng.normal(0, 0.1, (50, 1))
    ds = data.Dataset(x, z, ("a", "b", "c"), ("z",), "random")
    a = np.hstack([x, np.ones((50, 1))])
    expected = np.linalg.solve(a.T @ a, a.T @ z)[:, 0]
    np.testing.assert_allclose(data.least_squares(ds), expected, rtol=1e-10)


@pytest.mark.parametrize("sizes", [[2, 2, 1], [3, 5, 4, 2], [4, 1]])
def test_affine_map_equals_predictions(sizes):
    """Raw z = raw x @ W + b, with the standardisation folded in, equals the network's output.
    float64 throughout; the two routes round differently, a few ulps of |z|: 1e-12 relative."""
    model = Regressor(sizes, "linear", seed=7, dtype=tf.float64)
    rng = np.random.default_rng(1)
    for layer in model.mlp.layers:  # nonzero biases: zero biases would hide a wrong bias fold
        layer.b.assign(rng.normal(size=layer.b.shape))
    model.norm.fit(rng.normal(3.0, 4.0, (30, sizes[0])), rng.normal(-2.0, 10.0, (30, sizes[-1])))
    x = rng.normal(0, 5, (64, sizes[0]))
    w, b = model.affine_map()
    assert w.shape == (sizes[0], sizes[-1]) and b.shape == (sizes[-1],)
    pred = model.predict(x)
    np.testing.assert_allclose(x @ w + b, pred, rtol=0, atol=1e-12 * np.max(np.abs(pred)))


def test_affine_map_refuses_nonlinear_network():
    with pytest.raises(ConfigError, match="^activation: a tanh network has no single affine map"):
        Regressor([2, 3, 1], "tanh").affine_map()


def test_trained_lecture_network_collapses_to_2_3_2(lecture_run):
    """The default training run reaches the OLS oracle: z = 2x + 3y + 2, predict(3, 2) = 14.
    The run stops at a standardised MSE of 1e-10 (its target loss), an RMSE of 1e-5 standard
    deviations; in raw units that leaves coefficient errors of ~5e-5 (measured), and the issue's
    1e-3 is the bound asked for."""
    trainer = load_run(lecture_run)
    w, b = trainer.model.affine_map()
    oracle = data.least_squares(data.builtin("float64"))
    np.testing.assert_allclose([*w[:, 0], b[0]], oracle, rtol=0, atol=1e-3)
    pred = trainer.model.predict(np.array([[3.0, 2.0]]))
    assert pred.shape == (1, 1)
    assert abs(float(pred[0, 0]) - 14.0) <= 1e-3
    # The run's own record says the same.
    metrics = json.loads((lecture_run / "metrics.json").read_text())
    assert abs(metrics["prediction_at_3_2"][0] - 14.0) <= 1e-3
    np.testing.assert_allclose([*metrics["affine_map"]["W"], metrics["affine_map"]["b"]], oracle, atol=1e-3)


def test_glorot_is_seeded():
    a = MLP([4, 8, 8, 3], "relu", seed=11)
    b = MLP([4, 8, 8, 3], "relu", seed=11)
    c = MLP([4, 8, 8, 3], "relu", seed=12)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())  # bit for bit
    ws_a = [layer.w.numpy() for layer in a.layers]
    ws_c = [layer.w.numpy() for layer in c.layers]
    assert all(np.all(wa != wc) for wa, wc in zip(ws_a, ws_c))
    for layer in a.layers:
        assert np.all(layer.b.numpy() == 0)


def test_glorot_dtypes_agree():
    """float64 and float32 networks of one seed hold the same draw (float32 = rounded float64)."""
    a = MLP([3, 5, 2], seed=3, dtype=tf.float64)
    b = MLP([3, 5, 2], seed=3, dtype=tf.float32)
    for va, vb in zip(a.weights, b.weights):
        assert va.dtype == tf.float64 and vb.dtype == tf.float32
        np.testing.assert_array_equal(va.numpy().astype(np.float32), vb.numpy())


def uniform_checks(w: np.ndarray, limit: float) -> None:
    """w looks like n iid draws of U(-limit, limit), at about 6 standard errors for each statistic
    (a false alarm has probability ~1e-9 per check; the seeds are fixed, so the test is deterministic)."""
    n = w.size
    assert np.all(np.abs(w) <= limit)
    # The extremes: P(no draw within limit * eps of an end) = (1 - eps/2)^n ~ exp(-20) for eps = 40/n.
    eps = 40 / n
    assert w.max() >= limit * (1 - eps) and w.min() <= -limit * (1 - eps)
    # Mean 0 with standard error limit / sqrt(3n); variance limit^2/3 with standard error
    # limit^2 * sqrt(4 / (45 n)) (Var(X^2) = E X^4 - (E X^2)^2 = limit^4 (1/5 - 1/9)).
    assert abs(w.mean()) <= 6 * limit / np.sqrt(3 * n)
    assert abs(w.var() - limit**2 / 3) <= 6 * limit**2 * np.sqrt(4 / (45 * n))
    # Flat: 20 equal bins, each count Binomial(n, 1/20).
    counts, _ = np.histogram(w, bins=20, range=(-limit, limit))
    expected = n / 20
    assert np.max(np.abs(counts - expected)) <= 6 * np.sqrt(expected * (1 - 1 / 20))


def test_glorot_distribution_matches_keras():
    fan_in, fan_out = 800, 1250  # 1e6 samples
    limit = np.sqrt(6 / (fan_in + fan_out))
    ours = MLP([fan_in, fan_out], seed=0, dtype=tf.float64).layers[0].w.numpy()
    assert ours.shape == (fan_in, fan_out)
    uniform_checks(ours, limit)
    # Keras' own GlorotUniform passes the very same checks: the same distribution, other draws.
    theirs = np.asarray(keras.initializers.GlorotUniform(seed=0)((fan_in, fan_out), dtype="float64"))
    uniform_checks(theirs, limit)
    # The helper alone, on an unusual shape.
    w = glorot_uniform(np.random.default_rng(2), 1000, 3)
    uniform_checks(w, np.sqrt(6 / 1003))


@pytest.mark.parametrize("sizes,msg", [([2], "widths: need at least"), ([2, 0, 1], "widths: layer 1 has width 0"),
                                       ([2, -3, 1], "widths: layer 1 has width -3")])
def test_bad_widths(sizes, msg):
    with pytest.raises(ConfigError, match=f"^{msg}"):
        MLP(sizes)


def test_unknown_activation():
    with pytest.raises(ConfigError, match="^activation: unknown activation 'gelu'"):
        MLP([2, 2, 1], "gelu")


def test_variables_are_named_and_ordered():
    model = Regressor([2, 3, 1], "tanh")
    names = [v.name for v in model.weights]
    assert names == ["regressor/mlp/dense_0/w:0", "regressor/mlp/dense_0/b:0",
                     "regressor/mlp/dense_1/w:0", "regressor/mlp/dense_1/b:0"]
    assert [v.shape for v in model.weights] == [(2, 3), (3,), (3, 1), (1,)]
    assert all(v.trainable for v in model.weights)
    assert not any(v.trainable for v in model.norm.variables)
    assert len(model.trainable_variables) == 4


def test_forward_pass_by_hand():
    """An independent numpy forward pass through standardisation, tanh hidden layer and output."""
    model = Regressor([2, 3, 1], "tanh", seed=4, dtype=tf.float64)
    rng = np.random.default_rng(0)
    model.norm.fit(rng.normal(2, 3, (10, 2)), rng.normal(5, 7, (10, 1)))
    x = rng.normal(size=(6, 2))
    n = model.norm
    xs = (x - n.x_mean.numpy()) / n.x_std.numpy()
    l0, l1 = model.mlp.layers
    h = np.tanh(xs @ l0.w.numpy() + l0.b.numpy())
    z = (h @ l1.w.numpy() + l1.b.numpy()) * n.z_std.numpy() + n.z_mean.numpy()
    np.testing.assert_allclose(model.predict(x), z, rtol=1e-14)
    outs = model.layer_outputs(tf.constant(x))
    assert len(outs) == 4
    np.testing.assert_allclose(outs[0].numpy(), xs, rtol=1e-14)
    np.testing.assert_allclose(outs[-1].numpy(), z, rtol=1e-14)


def test_standardizer_constant_column_keeps_std_one():
    model = Regressor([2, 1, 1])
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    model.norm.fit(x, np.array([[0.0], [2.0]]))
    np.testing.assert_array_equal(model.norm.x_std.numpy(), [1.0, 1.0])
    np.testing.assert_array_equal(model.norm.x_mean.numpy(), [2.0, 5.0])

"""Losses vs keras.losses, their hand-written gradients vs the tape, metrics vs keras.metrics and numpy.

Tolerances: the same sums in another order differ by rounding only, ~n * eps relative at worst:
1e-14 for float64 and 1e-6 for float32 on a few hundred elements.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfscope.core.errors import ConfigError
from tfscope.core.nn import losses

TOL = {tf.float32: 1e-6, tf.float64: 1e-14}
# Keras computes a loss in its own dtype (float32 unless told): give it the dtype under test.
KERAS = {"mse": keras.losses.MeanSquaredError, "mae": keras.losses.MeanAbsoluteError,
         "huber": lambda dtype: keras.losses.Huber(delta=1.0, dtype=dtype)}


def sample(shape=(64, 3), seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    # scale 2: residuals land on both sides of Huber's delta = 1
    return rng.normal(0, scale, shape), rng.normal(0, scale, shape)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("name", list(KERAS))
@pytest.mark.parametrize("shape", [(64, 3), (19, 1), (1, 1)])
def test_loss_matches_keras(name, dtype, shape):
    pred, target = sample(shape, seed=len(name))
    p, t = tf.constant(pred, dtype), tf.constant(target, dtype)
    ours = losses.get(name)(p, t)
    ref = KERAS[name](dtype=dtype.name)(t, p)  # Keras: (y_true, y_pred)
    assert ours.dtype == dtype == ref.dtype
    assert abs(float(ours) - float(ref)) <= TOL[dtype] * abs(float(ref))


def test_huber_both_branches():
    """Residuals 0.5 (quadratic branch) and 3 (linear branch) by hand: (0.125 + 2.5) / 2."""
    value = losses.huber(tf.constant([[0.5], [3.0]], tf.float64), tf.zeros([2, 1], tf.float64))
    assert float(value) == (0.5 * 0.25 + (3.0 - 0.5)) / 2


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_half_mse_is_half_mse(dtype):
    p, t = (tf.constant(a, dtype) for a in sample())
    # Halving is exact in binary floating point: equality, not approximation.
    assert float(losses.half_mse(p, t)) == float(losses.mse(p, t)) / 2


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("name", list(losses.REGRESSION_LOSSES))
def test_loss_gradient_matches_tape(name, dtype):
    """core.losses.gradient (used by the chain rule) vs the tape of core.losses.get.
    Residuals near mae's kink (0) or Huber's (|r| = 1) are dropped: there the two sides differ."""
    pred, target = sample((200, 2), seed=7)
    r = np.abs(pred - target)
    keep = np.all((r > 1e-3) & (np.abs(r - 1.0) > 1e-3), axis=1)
    p = tf.Variable(pred[keep], dtype=dtype)
    t = tf.constant(target[keep], dtype)
    with tf.GradientTape() as tape:
        value = losses.get(name)(p, t)
    g_tape = tape.gradient(value, p).numpy()
    g_ours = losses.gradient(name)(tf.convert_to_tensor(p), t).numpy()
    assert g_ours.dtype == dtype.as_numpy_dtype
    err = np.max(np.abs(g_ours - g_tape)) / np.max(np.abs(g_tape))
    assert err <= TOL[dtype]


def numpy_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    e = pred - target
    return {"mae": np.abs(e).sum() / e.size, "rmse": np.sqrt((e * e).sum() / e.size),
            "r2": 1 - (e * e).sum() / ((target - target.mean(0)) ** 2).sum()}


@pytest.mark.parametrize("shape", [(50, 1), (30, 3)])
def test_metrics_match_keras_and_numpy(shape):
    target, noise = sample(shape, seed=3)
    pred = target + 0.3 * noise
    got = losses.metrics(pred, target)
    assert set(got) == {"mae", "rmse", "r2"}
    ref = numpy_metrics(pred, target)
    for k in got:
        assert got[k] == pytest.approx(ref[k], rel=1e-14)
    # Keras' metrics, float64 so their arithmetic is not the limit. R^2 of several outputs is
    # variance-weighted (total residual over total variance), which Keras calls "variance_weighted_average".
    kmae = keras.metrics.MeanAbsoluteError(dtype="float64")
    krmse = keras.metrics.RootMeanSquaredError(dtype="float64")
    kr2 = keras.metrics.R2Score(class_aggregation="variance_weighted_average", dtype="float64")
    for m in (kmae, krmse, kr2):
        m.update_state(target, pred)
    assert got["mae"] == pytest.approx(float(kmae.result()), rel=1e-12)
    assert got["rmse"] == pytest.approx(float(krmse.result()), rel=1e-12)
    # R2Score keeps its accumulators in float32 whatever dtype it is given (Keras 3.15): float32 tolerance.
    assert got["r2"] == pytest.approx(float(kr2.result()), rel=1e-6)


def test_r2_of_least_squares_fit_is_squared_correlation():
    """For an OLS fit with intercept, R^2 = corr(pred, target)^2: an identity, an independent route."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 2))
    z = x @ [1.0, -2.0] + 0.5 + rng.normal(0, 1.0, 40)
    a = np.hstack([x, np.ones((40, 1))])
    pred = a @ np.linalg.lstsq(a, z, rcond=None)[0]
    got = losses.metrics(pred[:, None], z[:, None])["r2"]
    assert got == pytest.approx(np.corrcoef(pred, z)[0, 1] ** 2, rel=1e-12)
    assert 0.5 < got < 1


def test_metrics_perfect_and_constant():
    z = np.array([[1.0], [2.0], [4.0]])
    assert losses.metrics(z, z) == {"mae": 0.0, "rmse": 0.0, "r2": 1.0}
    # Predicting the mean gives R^2 = 0; a constant target has no variance to explain: NaN.
    assert losses.metrics(np.full_like(z, z.mean()), z)["r2"] == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(losses.metrics(z, np.ones_like(z))["r2"])
    # Predictions of shape (n,) against targets (n, 1) are aligned, not broadcast to (n, n).
    assert losses.metrics(z[:, 0] + 1.0, z)["mae"] == 1.0


def test_unknown_loss():
    with pytest.raises(ConfigError, match="^loss: unknown loss 'hinge'; choose one of mse, half_mse, mae, huber, "
                       "cross_entropy, softmax_ce, binary_ce$"):
        losses.get("hinge")

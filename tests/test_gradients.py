"""Three routes to the same gradient: tf.GradientTape, the hand-written chain rule, central finite
differences; on random networks and data drawn by hypothesis.

Relative error, here: max over all elements of all gradient tensors of |a - b|, divided by
max(max |b|, 1e-30): one scale for the whole gradient, so an element that is tiny next to the
rest (and carries only the rounding of the large ones) is not judged on its own.

Tolerances (from the issue): tape vs chain <= 1e-12 in float64 and <= 1e-5 in float32 (the two
routes do the same arithmetic in a different order, so only rounding separates them: ~1e-16 and
~1e-7 per operation, a few dozen operations deep); tape vs finite differences <= 1e-6 in float64
(central differences with h = 1e-5 have truncation error O(h^2) ~ 1e-10 times the third
derivative and rounding error ~ eps * |L| / h ~ 1e-11).

Kinks: relu at pre-activation 0, mae at residual 0, huber at |residual| = delta. There the
derivative jumps, the tape and the chain rule pick one side by convention, and a central
difference straddling the kink averages both sides: the routes legitimately disagree. The
deterministic filter below drops every data row that brings any relu pre-activation, or any
mae/huber residual, within MARGIN of a kink; a finite-difference step moves a pre-activation by at
most h * max|input| * (width of the net) ~ 1e-3 for these sizes, so MARGIN = 0.05 keeps every
evaluation on one side. Drawn examples with no row left are rejected with `assume`.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tfscope.core.nn import gradients, losses
from tfscope.core.nn.activations import ACTIVATIONS
from tfscope.core.nn.losses import HUBER_DELTA, REGRESSION_LOSSES
from tfscope.core.nn.network import MLP

TINY = 1e-30
MARGIN = 0.05
TAPE_CHAIN_TOL = {tf.float64: 1e-12, tf.float32: 1e-5}
TAPE_FD_TOL = 1e-6

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def rel_err(a: list, b: list) -> float:
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in a])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in b])
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), TINY))


@st.composite
def problems(draw):
    """A random MLP (1-3 hidden layers, widths 1-6), activation, loss, and a data batch."""
    n_in = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    n_out = draw(st.integers(1, 3))
    return {
        "sizes": [n_in, *hidden, n_out],
        "activation": draw(st.sampled_from(list(ACTIVATIONS))),
        "loss": draw(st.sampled_from(list(REGRESSION_LOSSES))),
        "batch": draw(st.integers(1, 16)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "x_scale": draw(st.sampled_from([0.1, 1.0, 3.0])),
    }


def away_from_kinks(mlp: MLP, loss: str, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose relu pre-activations and mae/huber residuals are all >= MARGIN
    from their kinks (evaluated in float64)."""
    keep = np.ones(len(x), bool)
    a = x
    for layer in mlp.layers:
        pre = a @ layer.w.numpy().astype(np.float64) + layer.b.numpy().astype(np.float64)
        if layer.activation == "relu":
            keep &= np.all(np.abs(pre) >= MARGIN, axis=1)
        a = ACTIVATIONS[layer.activation][0](tf.constant(pre)).numpy()
    r = np.abs(a - z)
    if loss == "mae":
        keep &= np.all(r >= MARGIN, axis=1)
    if loss == "huber":
        keep &= np.all(np.abs(r - HUBER_DELTA) >= MARGIN, axis=1)
    return keep


def draw_problem(p: dict, dtype: tf.DType) -> tuple[MLP, np.ndarray, np.ndarray]:
    mlp = MLP(p["sizes"], p["activation"], seed=p["seed"], dtype=dtype)
    # Nonzero biases, so the bias gradients and relu's dead/alive split are both exercised.
    rng = np.random.default_rng(p["seed"] + 1)
    for layer in mlp.layers:
        layer.b.assign(rng.normal(0, 0.5, layer.b.shape).astype(dtype.as_numpy_dtype))
    x = rng.normal(0, p["x_scale"], (p["batch"], p["sizes"][0]))
    z = rng.normal(0, 2.0, (p["batch"], p["sizes"][-1]))
    # Filter on the dtype's own weights (float32 rounding moves a kink by ~1e-7 only, far inside MARGIN).
    keep = away_from_kinks(mlp, p["loss"], x, z)
    return mlp, x[keep], z[keep]


@SETTINGS
@given(problems())
def test_tape_chain_fd_agree_float64(p):
    mlp, x, z = draw_problem(p, tf.float64)
    assume(len(x) > 0)
    xt, zt = tf.constant(x), tf.constant(z)
    loss_t, tape = gradients.tape_gradients(mlp, p["loss"], xt, zt)
    loss_c, chain = gradients.chain_rule_gradients(mlp, p["loss"], xt, zt)
    fd = gradients.finite_difference_gradients(mlp, p["loss"], x, z)
    assert [g.shape for g in tape] == [g.shape for g in chain] == [v.shape for v in mlp.weights]
    assert all(g.dtype == tf.float64 for g in chain)
    assert float(loss_t) == float(loss_c)
    # A gradient that vanishes by cancellation (say, a dead relu layer under mae, whose signs sum to
    # zero) is pure rounding, ~1e-17: a relative error against it means nothing, so such draws are
    # rejected. Gradients here are otherwise O(0.01-10).
    assume(max(float(np.max(np.abs(g))) for g in tape) > 1e-8)
    assert rel_err(chain, tape) <= TAPE_CHAIN_TOL[tf.float64]
    assert rel_err(fd, tape) <= TAPE_FD_TOL


@SETTINGS
@given(problems())
def test_tape_chain_agree_float32(p):
    mlp, x, z = draw_problem(p, tf.float32)
    assume(len(x) > 0)
    xt, zt = tf.constant(x, tf.float32), tf.constant(z, tf.float32)
    _, tape = gradients.tape_gradients(mlp, p["loss"], xt, zt)
    _, chain = gradients.chain_rule_gradients(mlp, p["loss"], xt, zt)
    assert all(g.dtype == tf.float32 for g in chain)
    assume(max(float(np.max(np.abs(g))) for g in tape) > 1e-8)  # as in the float64 test
    assert rel_err(chain, tape) <= TAPE_CHAIN_TOL[tf.float32]


def test_lecture_network_by_hand():
    """The lecture's derivation with numbers: a 1-1-1 linear net, half-MSE on two rows.

    z_hat = (x w0 + b0) w1 + b1; L = 1/(2m) sum (z_hat - z)^2; dL/dw1 = mean(r * h), dL/dw0 = mean(r * w1 * x)...
    """
    mlp = MLP([1, 1, 1], "linear", dtype=tf.float64)
    mlp.layers[0].w.assign([[2.0]])
    mlp.layers[0].b.assign([1.0])
    mlp.layers[1].w.assign([[3.0]])
    mlp.layers[1].b.assign([-1.0])
    x = np.array([[1.0], [2.0]])
    z = np.array([[5.0], [20.0]])
    h = x * 2.0 + 1.0  # [[3], [5]]
    r = (h * 3.0 - 1.0) - z  # [[3], [-6]]
    expected = [np.mean(r * 3.0 * x).reshape(1, 1), np.array([np.mean(r * 3.0)]),
                np.mean(r * h).reshape(1, 1), np.array([np.mean(r)])]
    for route in (gradients.tape_gradients, gradients.chain_rule_gradients):
        loss, grads = route(mlp, "half_mse", tf.constant(x), tf.constant(z))
        assert float(loss) == pytest.approx(np.mean(r**2) / 2, rel=1e-15)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g.numpy(), e, rtol=1e-15)


@pytest.mark.parametrize("loss", list(REGRESSION_LOSSES))
def test_loss_gradient_matches_tape(loss):
    """d loss / d pred as written in core.losses vs the tape, away from the kinks (see module doc)."""
    rng = np.random.default_rng(3)
    pred = rng.normal(0, 2, (40, 3))
    target = rng.normal(0, 2, (40, 3))
    r = np.abs(pred - target)
    ok = np.all((r >= MARGIN) & (np.abs(r - HUBER_DELTA) >= MARGIN), axis=1)
    pred, target = tf.Variable(pred[ok]), tf.constant(target[ok])
    assert pred.shape[0] > 20
    with tf.GradientTape() as tape:
        value = losses.get(loss)(pred, target)
    g_tape = tape.gradient(value, pred)
    g_ours = losses.gradient(loss)(tf.convert_to_tensor(pred), target)
    assert rel_err([g_ours], [g_tape]) <= 1e-15  # one or two float64 roundings apart


@pytest.mark.parametrize("loss", list(REGRESSION_LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_and_loss(activation, loss):
    """Every pair for certain (the drawn examples above cover shapes, not necessarily every pair):
    two hidden layers, both dtypes, the same tolerances."""
    p = {"sizes": [3, 5, 4, 2], "activation": activation, "loss": loss, "batch": 12,
         "seed": 17 * len(activation) + len(loss), "x_scale": 1.0}
    for dtype in (tf.float64, tf.float32):
        mlp, x, z = draw_problem(p, dtype)
        assert len(x) >= 4  # the kink filter left enough rows to mean something
        xt, zt = tf.constant(x, dtype), tf.constant(z, dtype)
        _, tape = gradients.tape_gradients(mlp, loss, xt, zt)
        _, chain = gradients.chain_rule_gradients(mlp, loss, xt, zt)
        assert min(float(np.max(np.abs(g))) for g in tape) > 0  # every weight tensor gets a gradient
        assert rel_err(chain, tape) <= TAPE_CHAIN_TOL[dtype]
        if dtype == tf.float64:
            assert rel_err(gradients.finite_difference_gradients(mlp, loss, x, z), tape) <= TAPE_FD_TOL

"""Three independent routes to the gradient of a loss w.r.t. a network's weights (an MLP or a
Sequential of conv, pool, flatten and dense layers):

1. `tape_gradients`: TensorFlow's reverse-mode autodiff (`tf.GradientTape`).
2. `chain_rule_gradients`: backpropagation written out layer by layer, no tape (the lecture's
   derivation): dL/dW_l = a_{l-1}^T delta_l, dL/db_l = sum over rows of delta_l,
   delta_{l-1} = (delta_l W_l^T) * act'(pre_{l-1}); each layer's `backward` (core/nn/layers.py)
   does its own part (convolutions: the transposed convolutions; pools: argmax mask, spread).
3. `finite_difference_gradients`: central differences in float64, one weight at a time.

All return gradients in the order of the network's `weights` (w0, b0, w1, b1, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfscope.core.nn import losses
from tfscope.core.nn.network import MLP


def tape_gradients(mlp: MLP, loss: str, x: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    loss_fn = losses.get(loss)
    with tf.GradientTape() as tape:
        value = loss_fn(mlp(x), z)
    return value, tape.gradient(value, mlp.weights)


def chain_rule_gradients(mlp: MLP, loss: str, x: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    caches = []
    a = x
    for layer in mlp.layers:
        a, cache = layer.forward(a)
        caches.append(cache)
    value = losses.get(loss)(a, z)
    delta = losses.gradient(loss)(a, z)  # dL/d output, (batch, n_out)
    grads: list[tf.Tensor] = []
    for layer, cache in reversed(list(zip(mlp.layers, caches))):
        delta, layer_grads = layer.backward(cache, delta)  # delta: dL/d this layer's input
        grads = list(layer_grads) + grads
    return value, grads


def loss_at(mlp: MLP, loss: str, weights: list[np.ndarray], x: np.ndarray, z: np.ndarray) -> float:
    """The loss of `mlp`'s architecture with the given weights, evaluated in float64."""
    a = mlp.apply([tf.constant(w) for w in weights], tf.constant(x, tf.float64))
    return float(losses.get(loss)(a, tf.constant(z, tf.float64)))


def finite_difference_gradients(mlp: MLP, loss: str, x: np.ndarray, z: np.ndarray,
                                step: float = 1e-5) -> list[np.ndarray]:
    """Central differences (L(w + h) - L(w - h)) / 2h in float64, h = step * max(1, |w|).

    Truncation error is O(h^2) and rounding error O(eps * L / h): with h ~ 1e-5 both sit near
    1e-10 relative, well inside the 1e-6 the parity tests ask for.
    """
    x = np.asarray(x, np.float64)
    z = np.asarray(z, np.float64)
    weights = [v.numpy().astype(np.float64) for v in mlp.weights]
    return central_differences(lambda ws: loss_at(mlp, loss, ws, x, z), weights, step)


def central_differences(loss_of: Callable[[list[np.ndarray]], float], weights: list[np.ndarray],
                        step: float = 1e-5) -> list[np.ndarray]:
    """d loss_of / d weights by central differences, one element at a time, h = step * max(1, |w|);
    `weights` (float64 arrays) are perturbed in place and restored. Any loss, not only an MLP's:
    the testing API's assert_gradients_match uses it for users' own functions."""
    grads = []
    for w in weights:
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            orig = w[idx]
            h = step * max(1.0, abs(orig))
            w[idx] = orig + h
            up = loss_of(weights)
            w[idx] = orig - h
            down = loss_of(weights)
            w[idx] = orig
            g[idx] = (up - down) / (2 * h)
        grads.append(g)
    return grads


ROUTES = {"tape": tape_gradients, "chain": chain_rule_gradients}

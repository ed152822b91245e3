"""Losses (with their gradient w.r.t. the prediction, for the chain rule) and metrics.

Every loss is a mean over all elements of (batch, outputs). `half_mse` is the lecture's
1/(2m) sum of squares: its gradient is (pred - target) / m, with no factor 2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfscope.core import choices

HUBER_DELTA = 1.0


def _count(t: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.size(t), t.dtype)


def mse(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.square(pred - target))


def half_mse(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return 0.5 * tf.reduce_mean(tf.square(pred - target))


def mae(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.abs(pred - target))


def huber(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    err = tf.abs(pred - target)
    quad = tf.minimum(err, HUBER_DELTA)
    return tf.reduce_mean(0.5 * quad * quad + HUBER_DELTA * (err - quad))


def _mse_grad(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return 2.0 * (pred - target) / _count(pred)


def _half_mse_grad(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return (pred - target) / _count(pred)


def _mae_grad(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.sign(pred - target) / _count(pred)


def _huber_grad(pred: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(pred - target, -HUBER_DELTA, HUBER_DELTA) / _count(pred)


Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# name -> (loss(pred, target), d loss / d pred)
LOSSES: dict[str, tuple[Loss, Loss]] = {
    "mse": (mse, _mse_grad),
    "half_mse": (half_mse, _half_mse_grad),
    "mae": (mae, _mae_grad),
    "huber": (huber, _huber_grad),
}


def check_loss(name: str) -> str:
    return choices.check("loss", name, choices.LOSSES)


def get(name: str) -> Loss:
    return LOSSES[check_loss(name)][0]


def gradient(name: str) -> Loss:
    return LOSSES[check_loss(name)][1]


def metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R^2 of predictions against targets, in float64 numpy."""
    pred = np.asarray(pred, dtype=np.float64).reshape(np.shape(target))
    target = np.asarray(target, dtype=np.float64)
    err = pred - target
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((target - target.mean(axis=0)) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
    }

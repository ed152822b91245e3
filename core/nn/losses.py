"""Losses (with their gradient w.r.t. the prediction, for the chain rule) and metrics.

Every regression loss is a mean over all elements of (batch, outputs). `half_mse` is the lecture's
1/(2m) sum of squares: its gradient is (pred - target) / m, with no factor 2.

The classification losses take logits (batch, classes) and class indices (batch, 1) held as floats
(exact up to 2^24), and are means over the batch: `softmax_ce` = logsumexp(l) - l[y], computed as
m + log(sum exp(l - m)) with m = max(l) so no exp overflows; `binary_ce` takes one logit per row
(batch, 1) and labels 0/1: max(l, 0) - l*y + log1p(exp(-|l|)), stable for any l. `cross_entropy` is
`binary_ce` on a one-logit output and `softmax_ce` otherwise (the output width is static).
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


def _labels(target: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.reshape(target, [-1]), tf.int32)  # (batch,)


def _log_softmax(logits: tf.Tensor) -> tf.Tensor:
    m = tf.stop_gradient(tf.reduce_max(logits, axis=-1, keepdims=True))  # (batch, 1)
    shifted = logits - m  # (batch, classes), every entry <= 0
    return shifted - tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1, keepdims=True))


def softmax_ce(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    onehot = tf.one_hot(_labels(target), tf.shape(logits)[-1], dtype=logits.dtype)  # (batch, classes)
    return -tf.reduce_mean(tf.reduce_sum(_log_softmax(logits) * onehot, axis=-1))  # exact pick: x*1 + 0s


def binary_ce(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    y = tf.reshape(target, tf.shape(logits))
    return tf.reduce_mean(tf.nn.relu(logits) - logits * y + tf.math.log1p(tf.exp(-tf.abs(logits))))


def cross_entropy(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return binary_ce(logits, target) if logits.shape[-1] == 1 else softmax_ce(logits, target)


def softmax(logits: tf.Tensor) -> tf.Tensor:
    """Class probabilities from logits, exp(l - logsumexp(l)): no overflow at any logit."""
    return tf.exp(_log_softmax(logits))


def probabilities(logits: tf.Tensor) -> tf.Tensor:
    """(batch, classes) probabilities: softmax, or [sigmoid(-l), sigmoid(l)] for a one-logit output
    (sigmoid(-l) rather than 1 - sigmoid(l), which rounds to 0 long before the true value)."""
    if logits.shape[-1] == 1:
        return tf.concat([tf.sigmoid(-logits), tf.sigmoid(logits)], axis=-1)
    return softmax(logits)


def _softmax_ce_grad(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    onehot = tf.one_hot(_labels(target), tf.shape(logits)[-1], dtype=logits.dtype)  # (batch, classes)
    return (softmax(logits) - onehot) / tf.cast(tf.shape(logits)[0], logits.dtype)


def _binary_ce_grad(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return (tf.sigmoid(logits) - tf.reshape(target, tf.shape(logits))) / _count(logits)


def _cross_entropy_grad(logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    return _binary_ce_grad(logits, target) if logits.shape[-1] == 1 else _softmax_ce_grad(logits, target)


Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# name -> (loss(pred, target), d loss / d pred)
LOSSES: dict[str, tuple[Loss, Loss]] = {
    "mse": (mse, _mse_grad),
    "half_mse": (half_mse, _half_mse_grad),
    "mae": (mae, _mae_grad),
    "huber": (huber, _huber_grad),
    "cross_entropy": (cross_entropy, _cross_entropy_grad),
    "softmax_ce": (softmax_ce, _softmax_ce_grad),
    "binary_ce": (binary_ce, _binary_ce_grad),
}


REGRESSION_LOSSES = tuple(n for n in LOSSES if n not in choices.CLASSIFICATION_LOSSES)
CLASSIFICATION_LOSSES = choices.CLASSIFICATION_LOSSES


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


def classification_metrics(pred: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: true class,
    columns: predicted) of predicted class indices against true ones. A class never predicted has
    precision NaN (no predictions to be right about); one never present has recall NaN."""
    pred = np.asarray(pred, np.int64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    right = np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = right / confusion.sum(axis=0)
        recall = right / confusion.sum(axis=1)
    def listed(v: np.ndarray) -> list:  # JSON has no NaN: an undefined ratio is null
        return [None if np.isnan(e) else float(e) for e in v]

    return {"accuracy": float(right.sum() / max(len(labels), 1)), "precision": listed(precision),
            "recall": listed(recall), "confusion": confusion.tolist()}

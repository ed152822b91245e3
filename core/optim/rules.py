"""The lecture's learning rules as update rules over one Dense layer's explicit Variables.

Backpropagation is the gradient + optimiser path of `core.trainer` (any network); the rules here
are local rules for a single Dense layer (`hidden=[]`), each a pure function of the current
Variables and the step's batch that proposes new values. The trainer applies them with the same
non-finite guard, step counter (`optimizer.iterations`) and early stop as backprop, in every mode
(eager, graph, xla, fused). The learning rate eta is the optimiser's `learning_rate` Variable (the
optimiser's other state is unused). Everything is in training units (standardised unless
`standardize` is off). Per-row rules loop over the step's rows in order with `tf.while_loop`.

Each rule also says what it writes as the step's value (history.csv's `loss` column); the value is
measured before the update, like backprop's loss, and the run stops early when it is <= target_loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfscope.core.choices import RULES, check_rule  # noqa: F401  (re-exported)
from tfscope.core.errors import DataError
from tfscope.core.nn import losses
from tfscope.core.nn.network import Dense


class Rule:
    """Base: propose (value, new w, new b) from the batch; `assign` writes them to the layer."""

    value = ""  # what the step's value (history.csv's `loss` column) is

    def __init__(self, layer: Dense) -> None:
        self.layer = layer

    def propose(self, x: tf.Tensor, z: tf.Tensor, eta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def assign(self, w: tf.Tensor, b: tf.Tensor) -> None:
        self.layer.w.assign(w)
        self.layer.b.assign(b)


class Delta(Rule):
    """Delta rule, batch (epoch-accumulated) form, for the linear unit y = x.w + b:
    w += eta * mean over rows of (t - y) x;  b += eta * mean over rows of (t - y).

    This is exactly one gradient-descent step on half-MSE (the lecture's 1/(2m) sum of squares,
    whose gradient is mean (y - t) x) with the same rate. history.csv: the configured loss of the
    batch at the weights before the update (as backprop)."""

    value = "the configured loss of the step's batch before the update"

    def __init__(self, layer: Dense, loss: str) -> None:
        super().__init__(layer)
        self.loss = losses.get(loss)

    def propose(self, x, z, eta):
        w, b = self.layer.w, self.layer.b
        y = tf.matmul(x, w) + b  # (batch, out)
        err = z - y  # (batch, out)
        m = tf.cast(tf.shape(x)[0], x.dtype)
        new_w = w + eta * tf.matmul(x, err, transpose_a=True) / m  # (in, out)
        new_b = b + eta * tf.reduce_sum(err, 0) / m  # (out,)
        return self.loss(y, z), new_w, new_b


def _per_row(x: tf.Tensor, z: tf.Tensor, w: tf.Tensor, b: tf.Tensor, update) -> tuple[tf.Tensor, ...]:
    """Run `update(xi (1, in), zi (1, out), w, b) -> (w, b, count)` over the rows in order; sum the counts."""
    n = x.shape[0]

    def body(i, w, b, count):
        xi, zi = tf.gather(x, [i]), tf.gather(z, [i])  # (1, in), (1, out)
        w, b, c = update(xi, zi, w, b)
        return i + 1, w, b, count + c

    _, w, b, count = tf.while_loop(lambda i, *_: i < n, body,
                                   (tf.constant(0), tf.convert_to_tensor(w), tf.convert_to_tensor(b),
                                    tf.zeros([], x.dtype)), maximum_iterations=n)
    return w, b, count


class LMS(Rule):
    """Delta rule, per-sample online form (Widrow-Hoff LMS): for each row of the step, in order,
    w += eta * (t - x.w - b) x;  b += eta * (t - x.w - b).

    One full-batch step is one epoch of sequential updates: NOT one gradient step (each row sees
    the weights left by the previous row); `Delta` is the batch form that is. history.csv: the
    configured loss of the batch at the weights before the pass."""

    value = "the configured loss of the step's batch before the pass"

    def __init__(self, layer: Dense, loss: str) -> None:
        super().__init__(layer)
        self.loss = losses.get(loss)

    def propose(self, x, z, eta):
        def update(xi, zi, w, b):
            err = zi - (tf.matmul(xi, w) + b)  # (1, out)
            return w + eta * tf.matmul(xi, err, transpose_a=True), b + eta * err[0], tf.zeros([], x.dtype)

        value = self.loss(self.layer(x), z)
        w, b, _ = _per_row(x, z, self.layer.w, self.layer.b, update)
        return value, w, b


class Perceptron(Rule):
    """Rosenblatt's perceptron for the threshold unit o = step(x.w + b) (step(a) = 1 if a > 0 else 0),
    per row in order: w += eta * (t - o) x;  b += eta * (t - o), with targets t in {0, 1}.

    The target column must hold two distinct values; the larger is class 1 (so {0, 1} and
    {-1, 1} both work, standardised or not). history.csv: the number of mistakes (rows with
    o != t) made during the step's pass. With a full batch a step is an epoch, so the run stops
    (target_loss >= 0) after the first epoch without mistakes; on a set that is not linearly
    separable it never does and ends at the step budget ("stopped_because": "steps").
    Novikoff's bound (R/gamma)^2 on the total number of mistakes holds from w = 0, b = 0."""

    value = "mistakes made during the step's pass over its rows"

    def __init__(self, layer: Dense, z_train: np.ndarray) -> None:
        super().__init__(layer)
        values = np.unique(np.asarray(z_train, np.float64))
        if values.size != 2:
            raise DataError(f"target: the perceptron rule needs a target with two distinct values (classes), "
                            f"got {values.size}")
        self.threshold = float(values.mean())  # midpoint between the classes, in training units

    def classes(self, z: tf.Tensor) -> tf.Tensor:
        return tf.cast(z > tf.cast(self.threshold, z.dtype), z.dtype)  # (batch, out) in {0, 1}

    def propose(self, x, z, eta):
        t = self.classes(z)

        def update(xi, ti, w, b):
            o = tf.cast(tf.matmul(xi, w) + b > 0, x.dtype)  # (1, out)
            err = ti - o  # (1, out) in {-1, 0, 1}
            return w + eta * tf.matmul(xi, err, transpose_a=True), b + eta * err[0], tf.reduce_sum(tf.abs(err))

        w, b, mistakes = _per_row(x, t, self.layer.w, self.layer.b, update)
        return mistakes, w, b


class Hebbian(Rule):
    """Plain Hebbian rule for the linear unit y = x.w (bias unused, left at 0), batch-averaged:
    w += eta * mean over rows of x y = eta * C w with C = X^T X / m.

    ||w|| grows by a factor tending to (1 + eta * lambda_max(C)) per step: without bound, until
    ||w||^2 overflows and the run stops as diverged. history.csv: ||w|| (Frobenius) before the update.
    The target column is ignored."""

    value = "||w|| before the update"

    def propose(self, x, z, eta):
        w = self.layer.w
        y = tf.matmul(x, w)  # (batch, out)
        m = tf.cast(tf.shape(x)[0], x.dtype)
        return tf.norm(w), w + eta * tf.matmul(x, y, transpose_a=True) / m, tf.identity(self.layer.b)


class Oja(Rule):
    """Oja's rule for the linear unit y = x.w (bias unused, left at 0), batch-averaged:
    w += eta * mean over rows of y (x - y w)  (per output column).

    Its stable fixed point is the unit-norm first principal component of the (centred: keep
    standardisation on, or centre the data) input, i.e. the top eigenvector of C = X^T X / m.
    history.csv: the mean reconstruction error mean_rows ||x - y w^T||^2 before the update; it
    tends to trace(C) - lambda_max(C). The target column is ignored."""

    value = "mean reconstruction error ||x - y w||^2 of the step's batch before the update"

    def propose(self, x, z, eta):
        w = self.layer.w  # (in, out)
        y = tf.matmul(x, w)  # (batch, out)
        m = tf.cast(tf.shape(x)[0], x.dtype)
        recon = tf.matmul(y, w, transpose_b=True)  # (batch, in)
        value = tf.reduce_mean(tf.reduce_sum(tf.square(x - recon), 1))
        # sum_rows y (x - y w) per column: X^T y - w * sum_rows y^2
        dw = (tf.matmul(x, y, transpose_a=True) - w * tf.reduce_sum(tf.square(y), 0)) / m  # (in, out)
        return value, w + eta * dw, tf.identity(self.layer.b)


def make(rule: str, layers: Sequence[Dense], loss: str, z_train: np.ndarray) -> Rule | None:
    """The rule object for a network's layers (None for backprop, which uses the optimiser)."""
    check_rule(rule, [layer.w.shape[1] for layer in layers[:-1]])
    if rule == "backprop":
        return None
    layer = layers[0]
    if rule == "delta":
        return Delta(layer, loss)
    if rule == "lms":
        return LMS(layer, loss)
    if rule == "perceptron":
        return Perceptron(layer, z_train)
    return Hebbian(layer) if rule == "hebbian" else Oja(layer)


def report(rule: Rule | None, x: np.ndarray, z: np.ndarray) -> dict:
    """What a local rule adds to metrics.json, from the training-unit data x (rows, in), z (rows, out):
    the rule's name; the perceptron's misclassified rows and accuracy; Hebbian/Oja's weight norm and
    (Oja) the unit direction found. Empty for backprop."""
    if rule is None:
        return {}
    w = rule.layer.w.numpy().astype(np.float64)  # (in, out)
    out: dict = {"rule": type(rule).__name__.lower(), "history_loss_column": rule.value}
    if isinstance(rule, Perceptron):
        o = (x @ w + rule.layer.b.numpy() > 0).astype(np.float64)
        wrong = int(np.sum(np.any(o != (z > rule.threshold), axis=1)))
        out.update(train_mistakes=wrong, train_accuracy=1.0 - wrong / len(x))
    if isinstance(rule, (Hebbian, Oja)):
        norm = float(np.linalg.norm(w))
        out["weight_norm"] = norm
        if isinstance(rule, Oja) and np.isfinite(norm) and norm > 0:
            out["first_component"] = (w[:, 0] / np.linalg.norm(w[:, 0])).tolist()
    return out

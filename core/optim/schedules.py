"""Learning-rate schedules: pure functions of the step (optax style), with Keras' formulas.

A schedule is called as `schedule(step, lr)` inside the compiled step, with `step` the optimiser's
`iterations` Variable (the number of updates already applied, read, never traced as a constant)
and `lr` its `learning_rate` Variable (the base rate, changeable without a retrace). Every mode
(eager, graph, xla, fused) therefore evaluates the same function of the same Variables, and a
checkpoint of `iterations` is the schedule's whole state.

The arithmetic follows `keras.optimizers.schedules` op by op, so the two agree to the last bit
(Keras evaluates at its own step counter, before the increment, as here). Constants are made in the
rate's dtype directly: `tf.cast(0.8, tf.float64)` (and Keras' `ops.cast`) would round 0.8 through
float32 first, and a float64 run deserves float64's 0.8.

- exponential: lr * decay_rate ** (step / decay_steps)  (floor of the exponent when staircase);
- cosine:      linear warmup from 0 to lr over warmup_steps, then lr * ((1 - alpha) * c + alpha)
               with c = (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2 and t the steps since
               warmup: Keras' CosineDecay(0.0, decay_steps, alpha, warmup_target=lr, warmup_steps);
- piecewise:   values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <=
               boundaries[i], values[-1] after the last boundary: the rates themselves (lr unused),
               as Keras' PiecewiseConstantDecay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from tfscope.core.config import check_schedule


class Schedule:
    """Base: `schedule(step, lr) -> the learning rate of this step`, a scalar of lr's dtype."""

    def __call__(self, step: tf.Tensor, lr: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    """The base rate itself (the default)."""

    def __call__(self, step, lr):
        return tf.convert_to_tensor(lr)


@dataclass(frozen=True)
class Exponential(Schedule):
    """Keras' ExponentialDecay with initial_learning_rate = lr."""

    decay_steps: int
    decay_rate: float
    staircase: bool = False

    def __call__(self, step, lr):
        lr = tf.convert_to_tensor(lr)
        dt = lr.dtype
        p = tf.cast(step, dt) / tf.cast(self.decay_steps, dt)
        if self.staircase:
            p = tf.floor(p)
        return lr * tf.pow(tf.constant(self.decay_rate, dt), p)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Keras' CosineDecay warming up linearly from 0 to lr (warmup_target) over warmup_steps."""

    decay_steps: int
    alpha: float = 0.0
    warmup_steps: int = 0

    def __call__(self, step, lr):
        lr = tf.convert_to_tensor(lr)
        dt = lr.dtype
        decay_steps = tf.cast(self.decay_steps, dt)

        def decay(t: tf.Tensor) -> tf.Tensor:
            cosine = 0.5 * (1.0 + tf.cos(tf.constant(math.pi, dt) * (t / decay_steps)))
            return lr * ((1 - self.alpha) * cosine + self.alpha)

        if not self.warmup_steps:  # Keras' path without warmup (no cond, so graph rewrites match it too)
            return decay(tf.minimum(tf.cast(step, dt), decay_steps))
        warmup_steps = tf.cast(self.warmup_steps, dt)
        s = tf.minimum(tf.cast(step, dt), decay_steps + warmup_steps)
        return tf.cond(s < warmup_steps, lambda: (lr - 0.0) * (s / warmup_steps) + 0.0,
                       lambda: decay(s - warmup_steps))


@dataclass(frozen=True)
class Piecewise(Schedule):
    """Keras' PiecewiseConstantDecay: `values` are the rates (len(boundaries) + 1 of them)."""

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __call__(self, step, lr):
        dt = tf.convert_to_tensor(lr).dtype
        step = tf.convert_to_tensor(step)
        b = [tf.cast(x, step.dtype) for x in self.boundaries]
        v = [tf.constant(x, dt) for x in self.values]
        # A sum of masked values, as Keras: exactly one term is non-zero, so the sum is that value.
        out = tf.cast(step <= b[0], dt) * v[0] + tf.cast(step > b[-1], dt) * v[-1]
        for lo, hi, value in zip(b[:-1], b[1:], v[1:-1]):
            out += tf.cast((step > lo) & (step <= hi), dt) * value
        return out


def make(name: str = "constant", decay_steps: int = 0, decay_rate: float = 0.0, staircase: bool = False,
         warmup_steps: int = 0, alpha: float = 0.0, boundaries: Sequence[int] = (),
         values: Sequence[float] = ()) -> Schedule:
    """A schedule by name, its parameters checked as TrainConfig checks them (ConfigError naming the first
    one out of range)."""
    check_schedule(name, decay_steps, decay_rate, staircase, warmup_steps, alpha, boundaries, values)
    if name == "exponential":
        return Exponential(int(decay_steps), float(decay_rate), bool(staircase))
    if name == "cosine":
        return Cosine(int(decay_steps), float(alpha), int(warmup_steps))
    if name == "piecewise":
        return Piecewise(tuple(int(b) for b in boundaries), tuple(float(v) for v in values))
    return Constant()

"""Optimisers with explicit state, after Keras' `optimizers/`: `build(variables)` makes named slot
Variables, the step counter and learning rate are Variables (a compiled step neither freezes
them nor retraces when they change), and updates go only through `assign*`.

The arithmetic follows Keras 3's update_step line by line, so the two agree to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf

from tfscope.core import choices
from tfscope.core.errors import ConfigError


class SlotSpec(NamedTuple):
    """One slot Variable of the optimiser state: its name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def _var_name(v: tf.Variable) -> str:
    return v.name.split(":")[0].replace("/", "_")


class Optimizer(tf.Module):
    """Base: `learning_rate` and `iterations` Variables, named slots per model Variable."""

    slot_names: tuple[str, ...] = ()

    def __init__(self, learning_rate: float, dtype: tf.DType = tf.float32, name: str | None = None) -> None:
        super().__init__(name=name)
        if not learning_rate > 0:
            raise ConfigError(f"learning rate: must be > 0, got {learning_rate}")
        self.learning_rate = tf.Variable(learning_rate, dtype=dtype, trainable=False, name="learning_rate")
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.slots: dict[str, list[tf.Variable]] = {}
        self.built = False

    def build(self, variables: Sequence[tf.Variable]) -> None:
        """Create one zero slot Variable per model Variable and slot name (before any compiled call)."""
        with self.name_scope:
            for slot in self.slot_names:
                self.slots[slot] = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"{slot}_{_var_name(v)}")
                                    for v in variables]
        self.built = True

    def state_spec(self) -> list[SlotSpec]:
        """The optimiser state as a typed record: every slot's name, shape and dtype."""
        specs = [SlotSpec("iterations", (), "int64"),
                 SlotSpec("learning_rate", (), self.learning_rate.dtype.name)]
        for vs in self.slots.values():
            specs += [SlotSpec(v.name.split(":")[0], tuple(v.shape), v.dtype.name) for v in vs]
        return specs

    def apply_gradients(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        if not self.built:
            self.build(variables)
        for i, (g, v) in enumerate(zip(grads, variables)):
            self.update_step(i, tf.cast(g, v.dtype), v)
        self.iterations.assign_add(1)

    def update_step(self, i: int, grad: tf.Tensor, var: tf.Variable) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """var -= lr * grad."""

    def update_step(self, i: int, grad: tf.Tensor, var: tf.Variable) -> None:
        var.assign_sub(grad * tf.cast(self.learning_rate, var.dtype))


class Momentum(Optimizer):
    """Keras' SGD(momentum): m = momentum * m - lr * g; var += m (Nesterov: var += momentum * m - lr * g)."""

    slot_names = ("momentum",)

    def __init__(self, learning_rate: float, momentum: float = 0.9, nesterov: bool = False,
                 dtype: tf.DType = tf.float32, name: str | None = None) -> None:
        super().__init__(learning_rate, dtype, name)
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum: must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.nesterov = nesterov

    def update_step(self, i: int, grad: tf.Tensor, var: tf.Variable) -> None:
        lr = tf.cast(self.learning_rate, var.dtype)
        mom = tf.cast(self.momentum, var.dtype)
        m = self.slots["momentum"][i]
        m.assign(m * mom - grad * lr)
        if self.nesterov:
            var.assign_add(m * mom - grad * lr)
        else:
            var.assign_add(m)


class Adam(Optimizer):
    """Keras' Adam: bias correction folded into the step size alpha."""

    slot_names = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, dtype: tf.DType = tf.float32, name: str | None = None) -> None:
        super().__init__(learning_rate, dtype, name)
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= beta < 1:
                raise ConfigError(f"{label}: must be in [0, 1), got {beta}")
        if not epsilon > 0:
            raise ConfigError(f"epsilon: must be > 0, got {epsilon}")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def update_step(self, i: int, grad: tf.Tensor, var: tf.Variable) -> None:
        dt = var.dtype
        lr = tf.cast(self.learning_rate, dt)
        step = tf.cast(self.iterations + 1, dt)
        b1_power = tf.pow(tf.cast(self.beta_1, dt), step)
        b2_power = tf.pow(tf.cast(self.beta_2, dt), step)
        m, v = self.slots["m"][i], self.slots["v"][i]
        alpha = lr * tf.sqrt(1 - b2_power) / (1 - b1_power)
        m.assign_add((grad - m) * (1 - self.beta_1))
        v.assign_add((tf.square(grad) - v) * (1 - self.beta_2))
        var.assign_sub((m * alpha) / (tf.sqrt(v) + self.epsilon))


OPTIMIZERS = choices.OPTIMIZERS


def make(name: str, learning_rate: float, dtype: tf.DType = tf.float32, momentum: float = 0.9,
         beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7) -> Optimizer:
    """An optimiser by name: sgd, momentum, nesterov (momentum with Nesterov's look-ahead) or adam."""
    if name == "sgd":
        return SGD(learning_rate, dtype, name="sgd")
    if name in ("momentum", "nesterov"):
        return Momentum(learning_rate, momentum, name == "nesterov", dtype, name=name)
    if name == "adam":
        return Adam(learning_rate, beta_1, beta_2, epsilon, dtype, name="adam")
    raise ConfigError(f"optimizer: unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")

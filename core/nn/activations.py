"""Activations and their derivatives, by name, for the forward pass and the hand-written chain rule."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfscope.core import choices

Fn = Callable[[tf.Tensor], tf.Tensor]


def _relu_grad(pre: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
    # The same convention as tf.nn.relu's gradient: 0 at exactly 0.
    return tf.cast(pre > 0, pre.dtype)


# name -> (forward(pre), derivative(pre, out) = d out / d pre, elementwise)
ACTIVATIONS: dict[str, tuple[Fn, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]] = {
    "linear": (tf.identity, lambda pre, out: tf.ones_like(pre)),
    "relu": (tf.nn.relu, _relu_grad),
    "tanh": (tf.tanh, lambda pre, out: 1.0 - out * out),
    "sigmoid": (tf.sigmoid, lambda pre, out: out * (1.0 - out)),
}


def check_activation(name: str, where: str = "activation") -> str:
    """Return `name` if it is a known activation, else raise ConfigError naming `where`."""
    return choices.check(where, name, choices.ACTIVATIONS, "activation")


def forward(name: str) -> Fn:
    return ACTIVATIONS[check_activation(name)][0]


def derivative(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    return ACTIVATIONS[check_activation(name)][1]

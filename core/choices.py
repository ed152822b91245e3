"""The named choices a run's config can make, kept free of TensorFlow so that a bad name or flag
is refused in milliseconds, before TensorFlow loads. The modules that implement each choice
(activations, losses, optimizers, rules) take their names from here."""

from __future__ import annotations

from collections.abc import Sequence

from tfscope.core.errors import ConfigError

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")
LOSSES = ("mse", "half_mse", "mae", "huber", "cross_entropy", "softmax_ce", "binary_ce")
CLASSIFICATION_LOSSES = ("cross_entropy", "softmax_ce", "binary_ce")  # take logits and class labels
TASKS = ("regress", "classify")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
RULES = ("backprop", "delta", "lms", "perceptron", "hebbian", "oja")
MODES = ("eager", "graph", "xla", "fused")
GRADS = ("tape", "chain")
DTYPES = ("float32", "float64")
STRATEGIES = ("none", "mirrored", "multiworker")
SCHEDULES = ("constant", "exponential", "cosine", "piecewise")


def check(field: str, value: str, choices: Sequence[str], what: str | None = None) -> str:
    """Return `value` if it is one of `choices`, else raise ConfigError naming `field`."""
    if value not in choices:
        raise ConfigError(f"{field}: unknown {what or field} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_rule(rule: str, hidden: Sequence[int], strategy: str = "none") -> str:
    """Raise ConfigError unless `rule` is known and, for a local rule, the network is one Dense layer
    trained on one device (the distributed trainer runs backprop only)."""
    check("rule", rule, RULES)
    if rule != "backprop" and strategy != "none":
        raise ConfigError(f"rule: the {rule} rule runs on one device; use strategy none, got {strategy!r}")
    if rule != "backprop" and list(hidden):
        raise ConfigError(f"hidden: the {rule} rule trains a single Dense layer; use hidden [] (--hidden none), "
                          f"got {list(hidden)}")
    return rule

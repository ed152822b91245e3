"""Networks held in explicit, named `tf.Variable`s: Dense, MLP, and the Regressor that wraps an
MLP with its standardisation so that it takes raw x and returns raw z."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfscope.core.errors import ConfigError
from tfscope.core.nn import activations


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Keras' GlorotUniform distribution: U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


class Dense(tf.Module):
    """y = activation(x @ w + b); w is (in, out), b is (out,), bias starts at zero as in Keras."""

    def __init__(self, w: np.ndarray, activation: str = "linear", dtype: tf.DType = tf.float32,
                 name: str | None = None) -> None:
        super().__init__(name=name)
        self.activation = activations.check_activation(activation)
        w = np.asarray(w)
        with self.name_scope:  # names like mlp/dense_0/w: unique, so slots and summaries named after them are too
            self.w = tf.Variable(tf.constant(w, dtype), name="w")  # (in, out)
            self.b = tf.Variable(tf.zeros([w.shape[1]], dtype), name="b")  # (out,)

    def pre_activation(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self.w) + self.b  # (batch, out)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return activations.forward(self.activation)(self.pre_activation(x))


class MLP(tf.Module):
    """Dense layers of the given sizes; hidden layers use `activation`, the output layer is linear."""

    def __init__(self, sizes: Sequence[int], activation: str = "linear", seed: int = 0,
                 dtype: tf.DType = tf.float32, name: str | None = "mlp") -> None:
        super().__init__(name=name)
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ConfigError(f"widths: need at least an input and an output size, got {sizes}")
        for i, s in enumerate(sizes):
            if s < 1:
                raise ConfigError(f"widths: layer {i} has width {s}; every width must be >= 1")
        activations.check_activation(activation)
        rng = np.random.default_rng(seed)
        self.sizes = sizes
        self.activation = activation
        self.layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            act = activation if i < len(sizes) - 2 else "linear"
            with self.name_scope:
                self.layers.append(Dense(glorot_uniform(rng, fan_in, fan_out), act, dtype, name=f"dense_{i}"))

    @property
    def dtype(self) -> tf.DType:
        return self.layers[0].w.dtype

    @property
    def weights(self) -> list[tf.Variable]:
        """Trainable Variables in a fixed order: w0, b0, w1, b1, ..."""
        return [v for layer in self.layers for v in (layer.w, layer.b)]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_outputs(self, x: tf.Tensor) -> list[tf.Tensor]:
        """Each layer's output in turn (the last is the network's output)."""
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs

    def is_linear(self) -> bool:
        return all(layer.activation == "linear" for layer in self.layers)

    def affine_map(self) -> tuple[np.ndarray, np.ndarray]:
        """Collapse an all-linear network to its single map x @ W + b; returns (W, b) in float64."""
        if not self.is_linear():
            raise ConfigError(f"activation: a {self.activation} network has no single affine map")
        w = np.eye(self.sizes[0])
        b = np.zeros(self.sizes[0])
        for layer in self.layers:
            lw = layer.w.numpy().astype(np.float64)
            w, b = w @ lw, b @ lw + layer.b.numpy().astype(np.float64)
        return w, b


class Standardizer(tf.Module):
    """Means and standard deviations of x and z as non-trainable Variables, so checkpoints and
    exports carry them. With standardisation off they are 0 and 1 and change nothing."""

    def __init__(self, n_in: int, n_out: int, dtype: tf.DType = tf.float32, name: str | None = "norm") -> None:
        super().__init__(name=name)
        self.x_mean = tf.Variable(tf.zeros([n_in], dtype), trainable=False, name="x_mean")
        self.x_std = tf.Variable(tf.ones([n_in], dtype), trainable=False, name="x_std")
        self.z_mean = tf.Variable(tf.zeros([n_out], dtype), trainable=False, name="z_mean")
        self.z_std = tf.Variable(tf.ones([n_out], dtype), trainable=False, name="z_std")

    def fit(self, x: np.ndarray, z: np.ndarray) -> None:
        """Set the statistics from data; a constant column keeps std 1 so it is only centred."""
        for var, data in ((self.x_mean, x.mean(0)), (self.z_mean, z.mean(0))):
            var.assign(data.astype(var.dtype.as_numpy_dtype))
        for var, data in ((self.x_std, x.std(0)), (self.z_std, z.std(0))):
            var.assign(np.where(data > 0, data, 1.0).astype(var.dtype.as_numpy_dtype))

    def x_in(self, x: tf.Tensor) -> tf.Tensor:
        return (x - self.x_mean) / self.x_std

    def z_in(self, z: tf.Tensor) -> tf.Tensor:
        return (z - self.z_mean) / self.z_std

    def z_out(self, z_std_units: tf.Tensor) -> tf.Tensor:
        return z_std_units * self.z_std + self.z_mean


class Regressor(tf.Module):
    """An MLP in standardised units wrapped so that it takes raw x and returns raw z."""

    def __init__(self, sizes: Sequence[int], activation: str = "linear", seed: int = 0,
                 dtype: tf.DType = tf.float32, name: str | None = "regressor") -> None:
        super().__init__(name=name)
        with self.name_scope:
            self.mlp = MLP(sizes, activation, seed, dtype)
            self.norm = Standardizer(self.mlp.sizes[0], self.mlp.sizes[-1], dtype)

    @property
    def dtype(self) -> tf.DType:
        return self.mlp.dtype

    @property
    def weights(self) -> list[tf.Variable]:
        return self.mlp.weights

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.norm.z_out(self.mlp(self.norm.x_in(x)))  # (batch, out)

    def layer_outputs(self, x: tf.Tensor) -> list[tf.Tensor]:
        """Standardised input, each layer's output, then the raw output: for localising mismatches."""
        xs = self.norm.x_in(x)
        outs = self.mlp.layer_outputs(xs)
        return [xs, *outs, self.norm.z_out(outs[-1])]

    def affine_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of raw z = raw x @ W + b for an all-linear network, standardisation folded in."""
        w, b = self.mlp.affine_map()
        mx, sx = self.norm.x_mean.numpy().astype(np.float64), self.norm.x_std.numpy().astype(np.float64)
        mz, sz = self.norm.z_mean.numpy().astype(np.float64), self.norm.z_std.numpy().astype(np.float64)
        w_raw = w / sx[:, None] * sz[None, :]
        return w_raw, b * sz + mz - mx @ w_raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self(tf.constant(np.asarray(x), self.dtype)).numpy()

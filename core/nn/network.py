"""Networks held in explicit, named `tf.Variable`s: Dense, MLP, Sequential (any `--net` spec of
layers, core/nn/netspec.py and core/nn/layers.py), the Regressor that wraps a network with its
standardisation so that it takes raw x and returns raw z, and the Classifier (raw x in, logits out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfscope.core.errors import ConfigError
from tfscope.core.nn import activations, layers, losses, netspec


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

    @property
    def params(self) -> list[tf.Variable]:
        return [self.w, self.b]

    def apply(self, params, x: tf.Tensor) -> tf.Tensor:
        return activations.forward(self.activation)(tf.matmul(x, params[0]) + params[1])

    def forward(self, x: tf.Tensor):
        pre = self.pre_activation(x)  # (batch, out)
        out = activations.forward(self.activation)(pre)
        return out, (x, pre, out)

    def backward(self, cache, d_out: tf.Tensor):
        """dL/dW = a_in^T d_pre, dL/db = sum over rows of d_pre, dL/da_in = d_pre W^T."""
        a_in, pre, out = cache
        d_pre = d_out * activations.derivative(self.activation)(pre, out)  # (batch, out)
        grads = [tf.matmul(a_in, d_pre, transpose_a=True), tf.reduce_sum(d_pre, axis=0)]
        return tf.matmul(d_pre, self.w, transpose_b=True), grads  # (batch, in)


class LayerStack(tf.Module):
    """Layers applied in order (`self.layers`); the base of MLP and Sequential."""

    layers: list

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def apply(self, weights: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """The output for x with `weights` (in the order of the layers' params) in place of the Variables:
        for other dtypes (float64 copies) and for weights held as tensors, e.g. loop values."""
        i = 0
        for layer in self.layers:
            n = len(layer.params)
            x = layer.apply(weights[i:i + n], x)
            i += n
        return x

    def layer_outputs(self, x: tf.Tensor) -> list[tf.Tensor]:
        """Each layer's output in turn (the last is the network's output)."""
        outs = []
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        return outs


class MLP(LayerStack):
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

    spec = None  # not built from a --net spec

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.sizes[0],)

    @property
    def dtype(self) -> tf.DType:
        return self.layers[0].w.dtype

    @property
    def weights(self) -> list[tf.Variable]:
        """Trainable Variables in a fixed order: w0, b0, w1, b1, ..."""
        return [v for layer in self.layers for v in (layer.w, layer.b)]

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


class Sequential(LayerStack):
    """The layers of a `--net` spec (core/nn/netspec.py) in order, for inputs of `in_shape` (without the
    batch: (features,) or (H, W, C)); the output layer has `n_out` units and is linear."""

    def __init__(self, spec: str, in_shape: Sequence[int], n_out: int, activation: str = "linear", seed: int = 0,
                 dtype: tf.DType = tf.float32, name: str | None = "net") -> None:
        super().__init__(name=name)
        activations.check_activation(activation)
        parsed = netspec.parse(spec)
        shapes = netspec.shapes(parsed, in_shape, n_out)
        rng = np.random.default_rng(seed)
        self.spec, self.in_shape, self.activation = spec, tuple(int(s) for s in in_shape), activation
        self.shapes = shapes  # each layer's output shape, without the batch
        self.layers = []
        before = self.in_shape
        for i, (ls, after) in enumerate(zip(parsed, shapes)):
            act = ls.activation or ("linear" if ls is parsed[-1] else activation)
            with self.name_scope:
                if ls.kind == "conv":
                    w = layers.glorot_conv(rng, ls.kernel, before[2], ls.size)
                    layer = layers.Conv2D(w, ls.stride, ls.padding, act, dtype, name=f"conv_{i}")
                elif ls.kind == "maxpool":
                    layer = layers.MaxPool2D(ls.size, ls.stride, ls.padding, name=f"maxpool_{i}")
                elif ls.kind == "avgpool":
                    layer = layers.AvgPool2D(ls.size, ls.stride, ls.padding, name=f"avgpool_{i}")
                elif ls.kind == "flatten":
                    layer = layers.Flatten(name=f"flatten_{i}")
                else:
                    layer = Dense(glorot_uniform(rng, before[0], after[0]), act, dtype, name=f"dense_{i}")
            self.layers.append(layer)
            before = after
        self._dtype = dtype
        self.sizes = [int(np.prod(self.in_shape)), int(shapes[-1][0])]  # flat input size, output width

    @property
    def dtype(self) -> tf.DType:
        return self._dtype

    @property
    def weights(self) -> list[tf.Variable]:
        """Trainable Variables in layer order, each layer's in its own order (w, b)."""
        return [v for layer in self.layers for v in layer.params]

    def is_linear(self) -> bool:
        return all(isinstance(layer, Dense) and layer.activation == "linear" for layer in self.layers)

    def affine_map(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.is_linear():
            raise ConfigError(f"net: {self.spec!r} has no single affine map")
        w, b = np.eye(self.sizes[0]), np.zeros(self.sizes[0])
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

    def fit(self, x: np.ndarray, z: np.ndarray | None) -> None:
        """Set the statistics from data; a constant column keeps std 1 so it is only centred. Images
        (N, H, W, C) get one mean and std per channel. `z` None leaves z's at 0 and 1 (a classifier:
        its targets are class indices, which standardising would turn into non-labels)."""
        x = x.reshape(-1, x.shape[-1])  # (rows, n_in), or (pixels, channels) for images
        pairs = [(self.x_mean, self.x_std, x)] + ([] if z is None else [(self.z_mean, self.z_std, z)])
        for mean, std, data in pairs:
            mean.assign(data.mean(0).astype(mean.dtype.as_numpy_dtype))
            sd = data.std(0)
            std.assign(np.where(sd > 0, sd, 1.0).astype(std.dtype.as_numpy_dtype))

    def x_in(self, x: tf.Tensor) -> tf.Tensor:
        return (x - self.x_mean) / self.x_std

    def z_in(self, z: tf.Tensor) -> tf.Tensor:
        return (z - self.z_mean) / self.z_std

    def z_out(self, z_std_units: tf.Tensor) -> tf.Tensor:
        return z_std_units * self.z_std + self.z_mean


class Regressor(tf.Module):
    """A network in standardised units wrapped so that it takes raw x and returns raw z.

    `sizes` is [n_in, hidden..., n_out] for an MLP; with a `net` spec the network is a Sequential
    on inputs of `in_shape` (without the batch) and only sizes[-1] (the output width) counts. The
    attribute `mlp` holds the network either way."""

    def __init__(self, sizes: Sequence[int], activation: str = "linear", seed: int = 0,
                 dtype: tf.DType = tf.float32, name: str | None = "regressor", net: str | None = None,
                 in_shape: Sequence[int] | None = None) -> None:
        super().__init__(name=name)
        with self.name_scope:
            if net is None:
                self.mlp = MLP(sizes, activation, seed, dtype)
            else:
                self.mlp = Sequential(net, in_shape or sizes[:1], sizes[-1], activation, seed, dtype)
            self.norm = Standardizer(self.mlp.in_shape[-1], self.mlp.sizes[-1] if self.standardizes_z else 1, dtype)

    standardizes_z = True  # a classifier's targets are class indices: one column, never standardised

    @property
    def in_shape(self) -> tuple[int, ...]:
        """One input row's shape: (features,) or (H, W, C)."""
        return self.mlp.in_shape

    def architecture(self) -> dict:
        """What `rebuild` needs to make the same network again (in any dtype)."""
        return {"kind": "regressor", "sizes": self.mlp.sizes, "activation": self.mlp.activation,
                "net": self.mlp.spec, "in_shape": list(self.in_shape)}

    def like(self, dtype: tf.DType) -> Regressor:
        """The same architecture in `dtype`, with every Variable cast exactly from this one's."""
        other = rebuild(self.architecture(), dtype)
        for dst, src in zip(other.trainable_variables + other.non_trainable_variables,
                            self.trainable_variables + self.non_trainable_variables):
            dst.assign(src.numpy().astype(dtype.as_numpy_dtype))
        return other

    def fit_standardizer(self, x: np.ndarray, z: np.ndarray) -> None:
        self.norm.fit(x, z)

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


class Classifier(Regressor):
    """A network on standardised x whose output is logits: one per class, or a single logit for two
    classes (binary cross-entropy). z is never standardised: the targets are class indices.
    `classes` are the original labels, index i naming class i."""

    def __init__(self, sizes: Sequence[int], activation: str = "linear", seed: int = 0,
                 dtype: tf.DType = tf.float32, name: str | None = "classifier", net: str | None = None,
                 in_shape: Sequence[int] | None = None, classes: Sequence[str] = ()) -> None:
        super().__init__(sizes, activation, seed, dtype, name, net, in_shape)
        self.classes = tuple(str(c) for c in classes)

    standardizes_z = False

    def architecture(self) -> dict:
        return {**super().architecture(), "kind": "classifier", "classes": list(self.classes)}

    def fit_standardizer(self, x: np.ndarray, z: np.ndarray) -> None:
        self.norm.fit(x, None)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.mlp(self.norm.x_in(x))  # (batch, classes) logits, or (batch, 1) for two classes

    def probabilities(self, x: tf.Tensor) -> tf.Tensor:
        return losses.probabilities(self(x))  # (batch, classes)

    def layer_outputs(self, x: tf.Tensor) -> list[tf.Tensor]:
        """Standardised input, each layer's output (the last: logits), then the probabilities."""
        xs = self.norm.x_in(x)
        outs = self.mlp.layer_outputs(xs)
        return [xs, *outs, losses.probabilities(outs[-1])]

    def predict_classes(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class index, its probability) of each row."""
        p = self.probabilities(tf.constant(np.asarray(x), self.dtype)).numpy()  # (rows, classes)
        k = p.argmax(axis=1)
        return k, p[np.arange(len(k)), k]


def rebuild(arch: dict, dtype: tf.DType = tf.float32) -> Regressor:
    """A network from `architecture()`'s record (weights freshly initialised: restore a checkpoint)."""
    common = dict(dtype=dtype, net=arch.get("net"), in_shape=arch.get("in_shape"))
    if arch.get("kind") == "classifier":
        return Classifier(arch["sizes"], arch["activation"], 0, classes=arch["classes"], **common)
    return Regressor(arch["sizes"], arch["activation"], 0, **common)

"""Image layers as `tf.Module`s with named Variables, each with its hand-written backward pass.

Every layer (and `network.Dense`) speaks one protocol, which the chain rule and the float64
finite-difference route use without knowing the layer's kind:

  params                 trainable Variables, in a fixed order ([] for pooling and flatten)
  apply(params, x)       the forward pass with the given weights (any dtype: float64 copies for
                         finite differences)
  forward(x)             (output, cache)
  backward(cache, d_out) (d_in, [d param for each of params]): the layer's vector-Jacobian product

Images are NHWC. Convolution's backward is the pair of transposed convolutions
(Conv2DBackpropInput for the input, Conv2DBackpropFilter for the filter). Pooling's is
written out: windows are gathered as patches (`extract_patches`), max pooling sends each window's
gradient to its first maximum (the argmax mask), average pooling spreads it evenly over the
window's real (non-padding) cells, and patches go back to pixels through the adjoint of the
patch gather (a transposed convolution with a one-hot filter bank, which only adds).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfscope.core.nn import activations
from tfscope.core.nn.netspec import conv_out


def glorot_conv(rng: np.random.Generator, kernel: int, c_in: int, c_out: int) -> np.ndarray:
    """Keras' GlorotUniform for a (k, k, c_in, c_out) filter: fans scaled by the receptive field."""
    limit = np.sqrt(6.0 / (kernel * kernel * (c_in + c_out)))
    return rng.uniform(-limit, limit, size=(kernel, kernel, c_in, c_out))


class Conv2D(tf.Module):
    """y = activation(conv2d(x, w, stride, padding) + b); w is (k, k, c_in, c_out), b is (c_out,)."""

    def __init__(self, w: np.ndarray, stride: int = 1, padding: str = "same", activation: str = "linear",
                 dtype: tf.DType = tf.float32, name: str | None = None) -> None:
        super().__init__(name=name)
        self.activation = activations.check_activation(activation)
        self.stride, self.padding = int(stride), padding.upper()
        with self.name_scope:
            self.w = tf.Variable(tf.constant(w, dtype), name="w")  # (k, k, c_in, c_out)
            self.b = tf.Variable(tf.zeros([w.shape[3]], dtype), name="b")  # (c_out,)

    @property
    def params(self) -> list[tf.Variable]:
        return [self.w, self.b]

    def _pre(self, w: tf.Tensor, b: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.conv2d(x, w, self.stride, self.padding) + b  # (batch, h_out, w_out, c_out)

    def apply(self, params, x: tf.Tensor) -> tf.Tensor:
        return activations.forward(self.activation)(self._pre(params[0], params[1], x))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.apply(self.params, x)

    def forward(self, x: tf.Tensor):
        pre = self._pre(self.w, self.b, x)
        out = activations.forward(self.activation)(pre)
        return out, (x, pre, out)

    def backward(self, cache, d_out: tf.Tensor):
        x, pre, out = cache
        d_pre = d_out * activations.derivative(self.activation)(pre, out)  # (batch, h_out, w_out, c_out)
        strides = [1, self.stride, self.stride, 1]
        d_x = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=self.w, out_backprop=d_pre,
                                             strides=strides, padding=self.padding)  # like x
        d_w = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(self.w), out_backprop=d_pre,
                                              strides=strides, padding=self.padding)  # like w
        return d_x, [d_w, tf.reduce_sum(d_pre, axis=[0, 1, 2])]


def _pads(size: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """TensorFlow's padding (before, after) of one spatial dimension."""
    if padding == "VALID":
        return 0, 0
    total = max((conv_out(size, window, stride, "same") - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


class _Pool(tf.Module):
    """Shared by the two pools: the window geometry, patches and their adjoint."""

    params: list = []

    def __init__(self, size: int, stride: int | None = None, padding: str = "valid", name: str | None = None) -> None:
        super().__init__(name=name)
        self.size, self.stride, self.padding = int(size), int(stride or size), padding.upper()

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.apply([], x)

    def _padded(self, x: tf.Tensor, fill: float) -> tf.Tensor:
        (t, b), (lft, r) = (_pads(int(d), self.size, self.stride, self.padding) for d in x.shape[1:3])
        return tf.pad(x, [[0, 0], [t, b], [lft, r], [0, 0]], constant_values=fill)

    def _patches(self, xp: tf.Tensor) -> tf.Tensor:
        """(batch, h_out, w_out, k*k, c): the cells of every window of the padded input."""
        k, c = self.size, int(xp.shape[3])
        p = tf.image.extract_patches(xp, [1, k, k, 1], [1, self.stride, self.stride, 1], [1, 1, 1, 1], "VALID")
        return tf.reshape(p, [-1, int(p.shape[1]), int(p.shape[2]), k * k, c])

    def _unpatches(self, g: tf.Tensor, x_shape, padded_shape) -> tf.Tensor:
        """The adjoint of `_patches` then of the padding: each window cell's value added back to its pixel."""
        k, c = self.size, int(x_shape[3])
        onehot = np.zeros((k, k, c, k * k * c))  # extract_patches orders a patch (row, col, channel)
        for i in range(k):
            for j in range(k):
                for ch in range(c):
                    onehot[i, j, ch, (i * k + j) * c + ch] = 1.0
        flat = tf.reshape(g, [-1, int(g.shape[1]), int(g.shape[2]), k * k * c])  # (batch, h_out, w_out, k*k*c)
        full = tf.raw_ops.Conv2DBackpropInput(input_sizes=padded_shape, filter=tf.constant(onehot, g.dtype),
                                              out_backprop=flat, strides=[1, self.stride, self.stride, 1],
                                              padding="VALID")
        (t, _), (lft, _) = (_pads(int(d), self.size, self.stride, self.padding) for d in x_shape[1:3])
        return full[:, t:t + int(x_shape[1]), lft:lft + int(x_shape[2]), :]  # like x


class MaxPool2D(_Pool):
    """The maximum of each window; padding cells (same) never win."""

    def apply(self, params, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.max_pool2d(x, self.size, self.stride, self.padding)

    def forward(self, x: tf.Tensor):
        return self(x), x

    def backward(self, x: tf.Tensor, d_out: tf.Tensor):
        xp = self._padded(x, x.dtype.min)
        patches = self._patches(xp)  # (batch, h_out, w_out, k*k, c)
        top = tf.reduce_max(patches, axis=3, keepdims=True)
        hit = tf.cast(patches == top, tf.int32)
        first = tf.cast(tf.logical_and(hit == 1, tf.cumsum(hit, axis=3) == 1), x.dtype)  # the argmax mask
        return self._unpatches(first * d_out[:, :, :, None, :], x.shape, tf.shape(xp)), []


class AvgPool2D(_Pool):
    """The mean of each window's real cells (with same padding, padding cells are not counted)."""

    def apply(self, params, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.avg_pool2d(x, self.size, self.stride, self.padding)

    def forward(self, x: tf.Tensor):
        return self(x), x

    def backward(self, x: tf.Tensor, d_out: tf.Tensor):
        real = self._padded(tf.ones_like(x[:1, :, :, :1]), 0.0)  # (1, H + pads, W + pads, 1)
        cells = self._patches(real)  # (1, h_out, w_out, k*k, 1): 1 where the window holds a real pixel
        count = tf.reduce_sum(cells, axis=3, keepdims=True)  # (1, h_out, w_out, 1, 1)
        spread = cells / count * d_out[:, :, :, None, :]  # (batch, h_out, w_out, k*k, c)
        padded = tf.stack([tf.shape(x)[0], int(real.shape[1]), int(real.shape[2]), int(x.shape[3])])
        return self._unpatches(spread, x.shape, padded), []


class Flatten(tf.Module):
    """(batch, h, w, c) -> (batch, h*w*c), in row-major (NHWC) order."""

    params: list = []

    def apply(self, params, x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.apply([], x)

    def forward(self, x: tf.Tensor):
        return self(x), x.shape

    def backward(self, shape, d_out: tf.Tensor):
        return tf.reshape(d_out, [-1, *[int(s) for s in shape[1:]]]), []

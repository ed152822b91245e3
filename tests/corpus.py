"""The bring-your-own-model corpus: small seeded Keras models (one or more layer kinds each) and a
tf.Module SavedModel with two signatures, built offline. Each builder saves into `directory` and
returns (path, extra export flags as keyword arguments of export_model)."""

from __future__ import annotations

from pathlib import Path

SEED = 7


def _save(model, directory: Path, name: str) -> Path:
    path = directory / f"{name}.keras"
    model.save(path)
    return path


def dense(directory: Path):
    """Dense layers with a Dropout between (inference: identity)."""
    import keras

    keras.utils.set_random_seed(SEED)
    m = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(8, activation="relu", name="hidden"),
                          keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(3, name="scores")])
    return _save(m, directory, "dense"), {}


def convnet(directory: Path):
    """Conv2D, BatchNormalization (inference, non-trivial statistics), DepthwiseConv2D,
    SeparableConv2D, ZeroPadding2D, a stride-2 convolution and ReLU6 (MobileNetV2's downsampling
    block), MaxPooling, AveragePooling and GlobalAveragePooling."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(SEED)
    L = keras.layers
    x = inp = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv")(x)
    bn = L.BatchNormalization(name="bn")
    x = bn(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="separable")(x)
    x = L.ZeroPadding2D(1, name="pad")(x)  # MobileNetV2's stride-2 blocks: explicit padding, stride 2, ReLU6
    x = L.Conv2D(6, 3, strides=2, name="strided")(x)
    x = L.ReLU(6.0, name="relu6")(x)
    x = L.MaxPooling2D(2, name="maxpool")(x)
    x = L.AveragePooling2D(2, name="avgpool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(2, name="logits")(x)
    m = keras.Model(inp, out)
    rng = np.random.default_rng(SEED)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([1 + 0.1 * rng.standard_normal(4), 0.1 * rng.standard_normal(4), 0.1 * rng.standard_normal(4),
                    rng.uniform(0.5, 2.0, 4)])
    return _save(m, directory, "convnet"), {}


def tokens(directory: Path):
    """Embedding of integer token ids, LayerNormalization, pooling over the sequence."""
    import keras

    keras.utils.set_random_seed(SEED)
    L = keras.layers
    inp = keras.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(20, 8, name="embed")(inp)
    x = L.LayerNormalization(name="norm")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    out = L.Dense(2, name="logits")(x)
    return _save(keras.Model(inp, out), directory, "tokens"), {"ranges": {"tokens": (0, 19)}}


def recurrent(directory: Path):
    """LSTM (full sequence) into GRU (last state)."""
    import keras

    keras.utils.set_random_seed(SEED)
    L = keras.layers
    inp = keras.Input((4, 3), name="series")
    x = L.LSTM(5, return_sequences=True, name="lstm")(inp)
    x = L.GRU(4, name="gru")(x)
    out = L.Dense(1, name="forecast")(x)
    return _save(keras.Model(inp, out), directory, "recurrent"), {}


def attention(directory: Path):
    """MultiHeadAttention (self-attention) with a residual and LayerNormalization."""
    import keras

    keras.utils.set_random_seed(SEED)
    L = keras.layers
    inp = keras.Input((4, 8), name="sequence")
    att = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(inp, inp)
    out = L.LayerNormalization(name="norm")(L.Add(name="residual")([inp, att]))
    return _save(keras.Model(inp, out), directory, "attention"), {}


def two_heads(directory: Path):
    """A functional model with two named inputs (a dict) and two named outputs (a dict)."""
    import keras

    keras.utils.set_random_seed(SEED)
    L = keras.layers
    a = keras.Input((3,), name="numbers")
    b = keras.Input((2,), name="flags")
    h = L.Dense(6, activation="tanh", name="trunk")(L.Concatenate(name="join")([a, b]))
    outputs = {"score": L.Dense(1, name="score_head")(h), "probs": L.Dense(3, activation="softmax", name="cls")(h)}
    return _save(keras.Model({"numbers": a, "flags": b}, outputs), directory, "two_heads"), {}


def mobilenet(directory: Path):
    """keras.applications.MobileNetV2(weights=None) at a small input (32x32, width 0.35)."""
    import keras

    keras.utils.set_random_seed(SEED)
    m = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5)
    return _save(m, directory, "mobilenet"), {}


def module_saved_model(directory: Path):
    """A tf.Module SavedModel with two signatures: serving_default (x -> y) and scaled
    (x, factor -> out, total)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(SEED)

    class Affine(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32), name="w")
            self.b = tf.Variable(rng.standard_normal(3).astype(np.float32), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, self.w) + self.b)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"),
                                      tf.TensorSpec([None, 1], tf.float32, name="factor")])
        def scaled(self, x, factor):
            out = tf.tanh(tf.matmul(x, self.w)) * factor
            return {"out": out, "total": tf.reduce_sum(out, axis=1, keepdims=True)}

    m = Affine()
    path = directory / "module_sm"
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve, "scaled": m.scaled})
    return path, {}


KERAS = {"dense": dense, "convnet": convnet, "tokens": tokens, "recurrent": recurrent, "attention": attention,
         "two_heads": two_heads, "mobilenet": mobilenet}

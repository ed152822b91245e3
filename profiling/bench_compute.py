"""A compute-bound network, where arithmetic rather than per-call dispatch sets the pace.

784-1024-1024-10, relu, batch 512, plain SGD, MSE, on seeded random data: this project's xla
mode against Keras 3 `fit` (jit_compile on, steps_per_execution 10), and a plain XLA-compiled
2048 x 2048 float32 matmul measured in the same process as the machine's practical ceiling.

FLOPs per training step (multiply-add = 2 FLOPs): forward F = 2 * B * sum(in * out) over the
Dense layers; backward ~ 2F (one matmul for the weight gradient, one for the input gradient);
step = 3F, the conventional figure. The first layer's input gradient is never needed, so the
matmuls actually run are 3F - 2 * B * 784 * 1024 (14% fewer): `matmul_step_flops`, reported
beside it. Bias adds, relu and the SGD update are O(B * width), under 0.2% of F, not counted.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.data.tables import Dataset
from tfscope.core.train.trainer import Trainer
from tfscope.profiling.bench import Timing, measure, summarize

SIZES = (784, 1024, 1024, 10)
BATCH = 512
LEARNING_RATE = 0.01


def forward_flops(sizes: tuple[int, ...] = SIZES, batch: int = BATCH) -> int:
    """Multiply-add FLOPs of one forward pass: 2 * B * sum(in * out)."""
    return 2 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def step_flops(sizes: tuple[int, ...] = SIZES, batch: int = BATCH) -> int:
    """FLOPs of one training step: forward + backward (~2x forward) = 3 * forward."""
    return 3 * forward_flops(sizes, batch)


def matmul_step_flops(sizes: tuple[int, ...] = SIZES, batch: int = BATCH) -> int:
    """The matmul FLOPs a training step really runs: 3F less the first layer's unneeded input gradient."""
    return step_flops(sizes, batch) - 2 * batch * sizes[0] * sizes[1]


def matmul_flops(n: int) -> int:
    """An (n, n) @ (n, n) product: n^2 outputs, each n multiply-adds."""
    return 2 * n**3


def random_data(rows: int = BATCH, sizes: tuple[int, ...] = SIZES, seed: int = 0) -> Dataset:
    """Seeded standard-normal features (rows, 784) and targets (rows, 10), float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, sizes[0])).astype(np.float32)
    z = rng.standard_normal((rows, sizes[-1])).astype(np.float32)
    return Dataset(x, z, tuple(f"x{i}" for i in range(sizes[0])), tuple(f"z{i}" for i in range(sizes[-1])), "random")


def project_config(mode: str = "xla") -> TrainConfig:
    return TrainConfig(hidden=list(SIZES[1:-1]), activation="relu", optimizer="sgd", learning_rate=LEARNING_RATE,
                       loss="mse", batch_size=BATCH, mode=mode, target_loss=0.0, standardize=False)


def time_project(window: int = 10, warmup: int = 1, repeats: int = 5, mode: str = "xla") -> Timing:
    """Seconds per step of this project's `mode` on one full batch of 512 rows."""
    trainer = Trainer(project_config(mode), random_data())

    def chunk() -> None:
        ran = len(trainer.run_chunk(window, mode).losses)
        if ran != window:
            raise RuntimeError(f"compute-bound {mode} mode ran {ran} of {window} steps")

    return measure(chunk, per=window, warmup=warmup, repeats=repeats)


def keras_model(seed: int = 0, steps_per_execution: int = 10):
    """The same network in Keras 3, compiled with XLA for `fit`."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(SIZES[0],))
    h = inputs
    for width in SIZES[1:-1]:
        h = keras.layers.Dense(width, activation="relu")(h)
    outputs = keras.layers.Dense(SIZES[-1])(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE), loss="mse", jit_compile=True,
                  steps_per_execution=steps_per_execution)
    return model


def epoch_clock(spans: list[tuple[float, float]]):
    """A Keras callback appending (start, end) perf_counter seconds of every epoch to `spans`."""
    import time

    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            spans.append((self.t0, time.perf_counter()))

    return Clock()


def time_keras_fit(window: int = 10, warmup: int = 1, repeats: int = 5, steps_per_execution: int = 10) -> Timing:
    """Seconds per step of `fit`: each epoch is `window` steps over the 512 rows repeated, no shuffle."""


    model = keras_model(steps_per_execution=steps_per_execution)
    d = random_data()
    x, z = np.tile(d.x, (window, 1)), np.tile(d.z, (window, 1))  # (512 * window, 784), (512 * window, 10)
    spans: list[tuple[float, float]] = []
    model.fit(x, z, batch_size=BATCH, epochs=warmup + repeats, shuffle=False, verbose=0,
              callbacks=[epoch_clock(spans)])
    return summarize([(end - start) / window for start, end in spans[warmup:]], window)


def time_matmul(n: int = 2048, window: int = 2, warmup: int = 1, repeats: int = 5, seed: int = 0) -> Timing:
    """Seconds per (n, n) @ (n, n) float32 product, XLA-compiled, `window` products per timed call."""
    rng = np.random.default_rng(seed)
    a = tf.constant(rng.standard_normal((n, n)), tf.float32)
    b = tf.constant(rng.standard_normal((n, n)), tf.float32)
    product = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)

    def call() -> None:
        for _ in range(window):
            c = product(a, b)  # (n, n)
        float(c[0, 0])  # wait for the result without copying all n^2 values out

    return measure(call, per=window, warmup=warmup, repeats=repeats)


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9

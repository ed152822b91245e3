"""Per training step at every size: a sweep over width and batch on 4,096 rows.

Network FEATURES-w-w-1, relu, Adam (lr 1e-3), MSE, seeded random data, mini-batches of B rows
shuffled every epoch. At each (w, B), seconds per step of
- this project's fused mode (many steps per compiled call), xla mode and graph mode (one step per call),
- Keras 3 `fit` on the same rows (shuffled, jit_compile on, steps_per_execution 100),
- the floors: the same network written plainly (Variables, tape, Adam by hand) on one fixed batch of
  B rows, inside one XLA-compiled `tf.while_loop` (the floor of fused and xla), and the same step as
  a plain `tf.function` per call (the floor of graph mode);
- the same two floors shuffled: each step's rows of the Feistel order gathered from all rows and the
  update under a finite-loss guard, which the modes do and a fixed batch does not.
FLOPs per step are `bench_compute.step_flops` (3 x forward); GFLOP/s is set against the matmul
ceiling measured earlier in the same run. Each window lasts about `window_seconds`, sized from an
untimed calibration call, so small and large points cost the same wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.data.tables import Dataset
from tfscope.core.train.trainer import Trainer
from tfscope.profiling.bench import Timing, measure, summarize
from tfscope.profiling.bench_compute import epoch_clock, step_flops

FEATURES, ROWS, LEARNING_RATE = 16, 4096, 1e-3
WIDTHS, BATCHES = (16, 64, 256, 1024), (32, 256, 1024)
METHODS = ("fused", "xla", "graph", "keras_fit", "floor_xla_loop", "floor_tf_function", "shuffled_floor_xla_loop",
           "shuffled_floor_tf_function")
KERAS_SPE = 100
MAX_WINDOW = 20_000  # steps per window at most (and the fused loop's steps per call)


def sizes(width: int) -> tuple[int, ...]:
    return (FEATURES, width, width, 1)


def random_data(rows: int = ROWS, seed: int = 0) -> Dataset:
    """Seeded standard-normal features (rows, FEATURES) and a target (rows, 1), float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    z = rng.standard_normal((rows, 1)).astype(np.float32)
    return Dataset(x, z, tuple(f"x{i}" for i in range(FEATURES)), ("z",), "random")


def _window(per_step: float, seconds: float, least: int = 3) -> int:
    return int(min(MAX_WINDOW, max(least, seconds / max(per_step, 1e-9))))


def _calibrated(run: Callable[[int], None], seconds: float, repeats: int, probe: int) -> Timing:
    """Compile/warm with one call of `probe` steps, then size the window twice (a short probe overstates
    the per-step time by its per-call cost), then measure."""
    run(probe)
    n = probe
    for _ in range(2):
        t0 = time.perf_counter()
        run(n)
        n = _window((time.perf_counter() - t0) / n, seconds)
    return measure(lambda: run(n), per=n, warmup=0, repeats=repeats)


def time_project(width: int, batch: int, mode: str, seconds: float, repeats: int, ordered: bool = True) -> Timing:
    """Seconds per step of this project's `mode` (Trainer.run_chunk, the path `tfscope train` takes).
    `ordered=False` replaces each step's rows of the epoch order by the contiguous slice at the same
    positions (the wrong batches: for timing what computing the order costs, nothing else)."""
    from tfscope.core.train import shuffle

    config = TrainConfig(hidden=[width, width], activation="relu", optimizer="adam", learning_rate=LEARNING_RATE,
                         batch_size=batch, mode=mode, target_loss=0.0, standardize=False, steps_per_call=MAX_WINDOW)
    trainer = Trainer(config, random_data())
    if not ordered:
        trainer.batch_rows = lambda step: shuffle.positions(step, trainer.batch_size, trainer.batches_per_epoch)

    def run(n: int) -> None:
        ran = len(trainer.run_chunk(n, mode).losses)
        if ran != n:
            raise RuntimeError(f"scaling {mode} w{width} b{batch}: ran {ran} of {n} steps")

    return _calibrated(run, seconds, repeats, probe=10 if mode == "fused" else 3)


class PlainStep:
    """The same network and Adam written plainly on one fixed batch: no shuffling, no early stop,
    no finiteness guard, no loss history. The floor the project's modes are held to. With `shuffled`
    and `guarded` (for explain()): each step's rows of the Feistel order instead of the fixed batch,
    and the update under a tf.cond on a finite loss, what a graph-mode step must add to the floor."""

    def __init__(self, width: int, batch: int, seed: int = 0, init: list[np.ndarray] | None = None,
                 shuffled: bool = False, guarded: bool = False) -> None:
        d = random_data()
        self.x = tf.Variable(d.x[:batch])  # (batch, FEATURES)
        self.z = tf.Variable(d.z[:batch])  # (batch, 1)
        self.rows = (tf.Variable(d.x), tf.Variable(d.z)) if shuffled else None  # (ROWS, FEATURES), (ROWS, 1)
        self.batch, self.guarded = batch, guarded
        rng = np.random.default_rng(seed)
        if init is None:  # He-normal weights, zero biases: w0, b0, w1, b1, w2, b2
            init = [a for i, o in zip(sizes(width)[:-1], sizes(width)[1:])
                    for a in ((rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(np.float32),
                              np.zeros(o, np.float32))]
        self.params = [tf.Variable(a) for a in init]
        self.m = [tf.Variable(tf.zeros_like(p)) for p in self.params]
        self.v = [tf.Variable(tf.zeros_like(p)) for p in self.params]
        self.t = tf.Variable(0.0)

    def step(self) -> tf.Tensor:
        from tfscope.core.train import shuffle

        x, z = self.x, self.z
        if self.rows is not None:
            rows = shuffle.batch_rows(tf.cast(self.t, tf.int64), ROWS, self.batch, 0)  # (batch,)
            x, z = (tf.gather(v, rows) for v in self.rows)
        with tf.GradientTape() as tape:
            h = x
            for i in range(0, len(self.params) - 2, 2):
                h = tf.nn.relu(h @ self.params[i] + self.params[i + 1])  # (batch, width)
            loss = tf.reduce_mean(tf.square(h @ self.params[-2] + self.params[-1] - z))
        grads = tape.gradient(loss, self.params)

        def update() -> tf.Tensor:
            self.t.assign_add(1.0)
            b1, b2, eps = 0.9, 0.999, 1e-7
            lr = LEARNING_RATE * tf.sqrt(1 - b2**self.t) / (1 - b1**self.t)
            for p, g, m, v in zip(self.params, grads, self.m, self.v):
                m.assign(b1 * m + (1 - b1) * g)
                v.assign(b2 * v + (1 - b2) * g * g)
                p.assign_sub(lr * m / (tf.sqrt(v) + eps))
            return tf.constant(True)

        if self.guarded:
            tf.cond(tf.math.is_finite(loss), update, lambda: tf.constant(False))
        else:
            update()
        return loss

    def loop(self, n: tf.Tensor) -> tf.Tensor:
        return tf.while_loop(lambda i: i < n, lambda i: (self.step(), i + 1)[1], [tf.constant(0)])[0]


def time_floor_loop(width: int, batch: int, seconds: float, repeats: int, **extras: bool) -> Timing:
    """Seconds per step of PlainStep (with `extras`: shuffled, guarded) inside one XLA-compiled while
    loop, n steps per call."""
    plain = PlainStep(width, batch, **extras)
    fn = tf.function(plain.loop, jit_compile=True, autograph=False)
    return _calibrated(lambda n: int(fn(tf.constant(n))), seconds, repeats, probe=10)


def time_floor_function(width: int, batch: int, seconds: float, repeats: int, **extras: bool) -> Timing:
    """Seconds per step of PlainStep (with `extras`: shuffled, guarded) as a plain tf.function, one call
    per step."""
    plain = PlainStep(width, batch, **extras)
    fn = tf.function(plain.step, autograph=False)

    def run(n: int) -> None:
        for _ in range(n):
            loss = fn()
        float(loss)

    return _calibrated(run, seconds, repeats, probe=3)


def time_keras_fit(width: int, batch: int, seconds: float, repeats: int) -> Timing:
    """Seconds per step of Keras `fit` on the 4,096 rows, shuffled, one epoch per timed window
    (epochs of whole passes: each window is `ROWS // batch` steps times an epoch count)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(FEATURES,))
    h = inputs
    for _ in range(2):
        h = keras.layers.Dense(width, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse", jit_compile=True,
                  steps_per_execution=KERAS_SPE)
    d = random_data()
    per_epoch = ROWS // batch
    spans: list[tuple[float, float]] = []

    # compile, then calibrate
    model.fit(d.x, d.z, batch_size=batch, epochs=2, verbose=0, callbacks=[epoch_clock(spans)])
    reps = max(1, int(seconds / max(spans[-1][1] - spans[-1][0], 1e-9)))  # epochs per window
    spans.clear()
    model.fit(d.x, d.z, batch_size=batch, epochs=reps * repeats, verbose=0, callbacks=[epoch_clock(spans)])
    samples = [(spans[i * reps + reps - 1][1] - spans[i * reps][0]) / (reps * per_epoch) for i in range(repeats)]
    return summarize(samples, reps * per_epoch)


TIMERS: dict[str, Callable[..., Timing]] = {
    "fused": lambda w, b, s, r: time_project(w, b, "fused", s, r),
    "xla": lambda w, b, s, r: time_project(w, b, "xla", s, r),
    "graph": lambda w, b, s, r: time_project(w, b, "graph", s, r),
    "keras_fit": time_keras_fit,
    "floor_xla_loop": time_floor_loop,
    "floor_tf_function": time_floor_function,
    # The floors doing what the modes must: each step's rows of the Feistel order, the update under a guard
    "shuffled_floor_xla_loop": lambda w, b, s, r: time_floor_loop(w, b, s, r, shuffled=True, guarded=True),
    "shuffled_floor_tf_function": lambda w, b, s, r: time_floor_function(w, b, s, r, shuffled=True, guarded=True),
}


def point(width: int, batch: int, seconds: float, repeats: int,
          progress: Callable[[str], None] = lambda s: None) -> dict:
    """Every method at (width, batch): us per step with its range, and GFLOP/s."""
    flops = step_flops(sizes(width), batch)
    row: dict = {"width": width, "batch": batch, "sizes": list(sizes(width)), "flops_per_step": flops}
    for method in METHODS:
        t = TIMERS[method](width, batch, seconds, repeats)
        row[method] = {**t.to_dict(1e6), "gflops": flops / t.median / 1e9}
        progress(f"scaling w{width} b{batch} {method}: {t.median * 1e6:,.1f} us/step "
                 f"({flops / t.median / 1e9:.1f} GFLOP/s)")
    return row


def explain(width: int, batch: int, seconds: float = 0.3, repeats: int = 5) -> dict[str, Timing]:
    """Where a step's time goes at (width, batch), each part timed in this process: the three modes and
    their floors, each floor with what the modes must add (shuffled rows, the guard),
    the fused step reading contiguous rows instead of the epoch order's (what the order
    costs), the call of an empty compiled function (the dispatch every one-step-per-call mode pays), one
    step's rows of the Feistel order alone, and one epoch's sort order (what runs recorded before the
    Feistel order pay once per epoch)."""
    from tfscope.core.train import shuffle

    out = {mode: time_project(width, batch, mode, seconds, repeats) for mode in ("fused", "xla", "graph")}
    out["fused, contiguous rows instead of the order"] = time_project(width, batch, "fused", seconds, repeats,
                                                                      ordered=False)
    out["floor: XLA while loop, fixed batch"] = time_floor_loop(width, batch, seconds, repeats)
    out["plain XLA while loop + Feistel rows + guard"] = time_floor_loop(width, batch, seconds, repeats,
                                                                        shuffled=True, guarded=True)
    out["floor: plain tf.function, fixed batch"] = time_floor_function(width, batch, seconds, repeats)
    out["plain tf.function + Feistel rows + tf.cond guard"] = time_floor_function(width, batch, seconds, repeats,
                                                                                 shuffled=True, guarded=True)
    step = tf.Variable(0, dtype=tf.int64)
    for jit, kind in ((True, "XLA"), (False, "tf.function")):
        empty = tf.function(lambda: tf.constant(0.0), jit_compile=jit, autograph=False)
        out[f"call of an empty {kind}"] = measure(lambda f=empty: f().numpy(), per=1, warmup=3, repeats=repeats * 20)
        rows = tf.function(lambda: shuffle.batch_rows(step.assign_add(1), ROWS, batch, 0), jit_compile=jit,
                           autograph=False)
        out[f"one step's Feistel rows, {kind} (a call)"] = measure(lambda f=rows: f().numpy(), per=1, warmup=3,
                                                                    repeats=repeats * 20)
        order = tf.function(lambda: shuffle.permutation(ROWS, 0, step.assign_add(1)), jit_compile=jit,
                            autograph=False)
        out[f"one epoch's sort order, {kind} (per epoch)"] = measure(lambda f=order: f().numpy(), per=1, warmup=3,
                                                                     repeats=repeats * 4)
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m tfscope.profiling.bench_scaling WIDTH BATCH`: explain() as a table, in us."""
    import sys

    width, batch = (int(a) for a in (argv if argv is not None else sys.argv[1:])[:2])
    steps_per_epoch = ROWS // batch
    print(f"{FEATURES}-{width}-{width}-1 relu, Adam, batch {batch}, {ROWS:,} rows ({steps_per_epoch} steps an epoch): "
          "us, medians of the repeats")
    for name, t in explain(width, batch).items():
        per_step = f"  = {t.median * 1e6 / steps_per_epoch:,.1f} us per step" if "per epoch" in name else ""
        print(f"  {name:<46} {t.median * 1e6:>10,.1f} ({t.low * 1e6:,.1f}..{t.high * 1e6:,.1f}){per_step}")


if __name__ == "__main__":
    main()

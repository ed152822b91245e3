"""The lecture network on the lecture data, run the ways a user otherwise would and this project's way.

- `LectureLoop`: the lecture's `custom_train` as written: a Keras Model (Input(2) -> Dense(2) ->
  Dense(1)), an eager `tf.GradientTape` step, `keras.optimizers.Adam()` (its defaults), MSE and a
  MAE metric read and reset every step, full batch of the 19 rows as integer arrays.
- Keras 3 `model.fit` with the same model, optimiser, loss and metric, for a given `jit_compile`
  and `steps_per_execution`. The 19 rows are repeated so one epoch holds many full-batch steps
  (batch 19, no shuffle): every step sees exactly the lecture's batch.
- This project's `Trainer` in its four modes, and its default `tfscope train` path.

Per-step timings share `profiling.bench`'s harness; time to solution runs from the start of
training (compilation included, TensorFlow import excluded) until the prediction at (3, 2) is
within the tolerance of 14 (z = 2x + 3y + 2).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.data import tables as data_mod
from tfscope.core.train.trainer import Trainer
from tfscope.profiling.bench import Timing, measure, summarize

POINT, TRUTH, TOLERANCE = (3.0, 2.0), 14.0, 1e-3  # the lecture's test point, its true z, the goal
MODES = ("eager", "graph", "xla", "fused")


def lecture_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 19 lecture rows as the lecture feeds them: int64 arrays read from the CSV, x (19, 2), z (19, 1)."""
    d = data_mod.builtin()
    return d.x.astype(np.int64), d.z.astype(np.int64)


def lecture_model(seed: int = 0):
    """The lecture's network: keras.Input(shape=(2,)), Dense(2), Dense(1), no activation."""
    import keras

    keras.utils.set_random_seed(seed)
    input_layer = keras.Input(shape=(2,))
    hidden_layer = keras.layers.Dense(2)(input_layer)
    output_layer = keras.layers.Dense(1)(hidden_layer)
    return keras.Model(input_layer, output_layer)


class LectureLoop:
    """The lecture's eager training loop, line for line (its printing aside)."""

    def __init__(self, seed: int = 0) -> None:
        import keras

        self.model = lecture_model(seed)
        self.optimizer = keras.optimizers.Adam()
        self.loss_fn = keras.losses.MeanSquaredError()
        self.metric = keras.metrics.MeanAbsoluteError()
        self.x, self.z = lecture_arrays()
        self.epoch = 0

    def train_step(self, x, y) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss_value = self.loss_fn(y, logits)
        grads = tape.gradient(loss_value, self.model.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_weights))
        self.metric.update_state(y, logits)
        return loss_value

    def run_epoch(self, loss_threshold: float = 0.01) -> bool:
        """One pass of the lecture's `for epoch` body: step, metric, the every-50 values it prints,
        the threshold test, the metric reset. Returns whether the lecture would stop here."""
        loss_value = self.train_step(self.x, self.z)
        train_acc = self.metric.result()
        if self.epoch % 50 == 0:
            float(train_acc), float(loss_value)  # the two values the lecture prints
        stop = bool(loss_value <= loss_threshold)
        self.metric.reset_state()
        self.epoch += 1
        return stop

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.run_epoch()

    def predict_point(self) -> float:
        return float(self.model(np.array([POINT], np.float32))[0, 0])


def time_lecture_loop(window: int = 20, warmup: int = 1, repeats: int = 5) -> Timing:
    """Seconds per step of the lecture's loop."""
    loop = LectureLoop()
    return measure(lambda: loop.steps(window), per=window, warmup=warmup, repeats=repeats)


def keras_fit_model(jit_compile: bool, steps_per_execution: int, seed: int = 0):
    """The lecture model compiled for `fit` with the lecture's optimiser, loss and metric."""
    import keras

    model = lecture_model(seed)
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse", metrics=["mae"],
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model


def repeated_rows(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The 19 rows repeated `steps` times in order, so batch 19 without shuffle gives `steps`
    identical full-batch steps per epoch: x (19 * steps, 2), z (19 * steps, 1)."""
    d = data_mod.builtin()
    return np.tile(d.x, (steps, 1)), np.tile(d.z, (steps, 1))


def _epoch_clock():
    """A Keras callback recording (start, end) perf_counter times of every epoch."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.spans: list[tuple[float, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.spans.append((self._t0, time.perf_counter()))

    return EpochClock()


def time_keras_fit(jit_compile: bool, steps_per_execution: int, window: int, warmup: int = 1,
                   repeats: int = 5) -> Timing:
    """Seconds per step of `model.fit`: each epoch is one window of `window` full-batch steps;
    the first `warmup` epochs (tracing, compiling) are dropped, the next `repeats` are timed."""
    model = keras_fit_model(jit_compile, steps_per_execution)
    x, z = repeated_rows(window)
    clock = _epoch_clock()
    model.fit(x, z, batch_size=19, epochs=warmup + repeats, shuffle=False, verbose=0, callbacks=[clock])
    samples = [(end - start) / window for start, end in clock.spans[warmup:]]
    return summarize(samples, window)


def project_trainer(steps_per_call: int = 100_000) -> Trainer:
    """This project's Trainer on the lecture data with default settings, never stopping early."""
    return Trainer(TrainConfig(target_loss=0.0, steps_per_call=steps_per_call), data_mod.builtin())


def time_project_mode(mode: str, window: int, warmup: int = 1, repeats: int = 5) -> Timing:
    """Seconds per step of this project's `mode` through `Trainer.run_chunk` (the path `tfscope
    train --mode MODE` takes). In fused mode one window is one compiled call of `window` steps."""
    trainer = project_trainer(steps_per_call=window if mode == "fused" else 100_000)

    def chunk() -> None:
        ran = len(trainer.run_chunk(window, mode).losses)
        if ran != window:
            raise RuntimeError(f"{mode} mode ran {ran} of {window} steps (the loss became non-finite)")

    return measure(chunk, per=window, warmup=warmup, repeats=repeats)


@dataclass
class Solution:
    """Wall time from the start of training until |prediction at (3, 2) - 14| <= tolerance."""

    seconds: float  # wall time (the cap when not reached)
    steps: int  # training steps taken
    reached: bool  # whether the tolerance was met before the cap
    prediction: float  # the prediction at (3, 2) when the clock stopped
    cap_seconds: float | None = None  # the time cap, for runs that have one
    check_every: int | None = None  # steps between checks of the prediction, for runs that check
    steps_to_solution: int | None = None  # when capped: the step the same trajectory first solves at

    def to_dict(self) -> dict:
        return asdict(self)


def solved(prediction: float) -> bool:
    return abs(prediction - TRUTH) <= TOLERANCE


def lecture_time_to_solution(cap_seconds: float, check_every: int = 50, max_steps: int = 200_000) -> Solution:
    """The lecture's loop, run on past its own loss threshold, checking (3, 2) every `check_every` steps.

    If the cap stops it, the same model, optimiser and metric objects carry on under `tf.function`
    (the same arithmetic, far faster) with the same checks, so `steps_to_solution` says where the
    lecture's own trajectory solves (None if not within `max_steps`)."""
    loop = LectureLoop()
    t0 = time.perf_counter()
    steps, pred = 0, loop.predict_point()
    while not solved(pred) and time.perf_counter() - t0 < cap_seconds:
        loop.steps(check_every)
        steps += check_every
        pred = loop.predict_point()
    result = Solution(time.perf_counter() - t0, steps, solved(pred), pred, cap_seconds, check_every)
    if not result.reached:
        step = tf.function(loop.train_step)
        more, p = steps, pred
        while not solved(p) and more < max_steps:
            for _ in range(check_every):
                step(loop.x, loop.z)
            more += check_every
            p = loop.predict_point()
        result.steps_to_solution = more if solved(p) else None
    return result


def keras_fit_time_to_solution(jit_compile: bool, steps_per_execution: int, cap_seconds: float,
                               check_every: int = 100, steps_per_epoch: int = 1000) -> Solution:
    """`model.fit`, checking (3, 2) at the end of each execution once `check_every` steps have passed
    since the last check (the optimiser's step counter says how many ran)."""
    import keras

    model = keras_fit_model(jit_compile, steps_per_execution)
    x, z = repeated_rows(steps_per_epoch)
    point = np.array([POINT], np.float32)
    state = {"steps": 0, "checked": 0, "pred": float("nan")}

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            state["steps"] = int(model.optimizer.iterations.numpy())
            if state["steps"] - state["checked"] < check_every:
                return
            state["checked"] = state["steps"]
            state["pred"] = float(model(point)[0, 0])
            if solved(state["pred"]) or time.perf_counter() - t0 >= cap_seconds:
                model.stop_training = True

    t0 = time.perf_counter()
    model.fit(x, z, batch_size=19, epochs=10**9, shuffle=False, verbose=0, callbacks=[Check()])
    return Solution(time.perf_counter() - t0, state["checked"], solved(state["pred"]), state["pred"], cap_seconds,
                    max(check_every, steps_per_execution))


def project_time_to_solution(config: TrainConfig | None = None) -> tuple[Solution, dict]:
    """`tfscope train`'s path (core.run.train, default TrainConfig) into a temporary run directory:
    the whole call, run directory and loss plot included. Returns the solution and the run's metrics."""
    from tfscope.core.train.run import train

    config = config or TrainConfig()
    with tempfile.TemporaryDirectory(prefix="tfscope-bench-") as tmp:
        t0 = time.perf_counter()
        result = train(config, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
    pred = float(result.metrics.get("prediction_at_3_2", [float("nan")])[0])
    return Solution(seconds, int(result.metrics["steps"]), solved(pred), pred), result.metrics


STRIPPED_ADAM = "Adam step alone: no guard, history, stop test"  # floors of the fused step (lecture_step_floors)
FLAT_ADAM = "same, the 9 weights and each slot one flat Variable"
MINIMAL_SGD = "same gradient, SGD on weights as loop values"


def lecture_step_floors(steps: int = 1_000_000, warmup: int = 1, repeats: int = 5) -> dict[str, Timing]:
    """Seconds per step of the lecture's fused step stripped down, each in one XLA-compiled while loop
    of `steps` steps (one call per window), on the default trainer's data and initial weights:
    STRIPPED_ADAM applies Adam to the Variables with nothing around it; FLAT_ADAM does the same with
    every weight in one flat Variable (per-layer views sliced from it) and each slot one flat Variable,
    so Adam is one update of 9 values instead of four small ones; MINIMAL_SGD carries the four weights as
    loop values and subtracts lr * gradient (no Variables, no optimiser state). What XLA:CPU's code for
    the step's arithmetic costs whatever the loop does around it: the floor of the fused row."""
    from tfscope.core.nn import gradients, losses

    trainer = project_trainer()
    mlp, opt, x, z = trainer.model.mlp, trainer.optimizer, trainer.x, trainer.z
    loss_fn = losses.get(trainer.config.loss)

    def adam(n: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor) -> tf.Tensor:
            _, grads = gradients.tape_gradients(mlp, trainer.config.loss, x, z)
            opt.apply_gradients(grads, mlp.weights)
            return i + 1

        return tf.while_loop(lambda i: i < n, body, [tf.constant(0)])[0]

    def sgd(n: tf.Tensor) -> list[tf.Tensor]:
        def body(i: tf.Tensor, *ws: tf.Tensor) -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                tape.watch(ws)
                value = loss_fn(mlp.apply(ws, x), z)
            return (i + 1, *[w - 0.01 * g for w, g in zip(ws, tape.gradient(value, ws))])

        start = [tf.convert_to_tensor(w) for w in mlp.weights]
        # The weights are the result: XLA drops a loop whose results nothing uses.
        return tf.while_loop(lambda i, *ws: i < n, body, [tf.constant(0), *start])[1:]

    def timed(loop) -> Timing:
        fn = tf.function(loop, jit_compile=True, autograph=False)
        return measure(lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(tf.constant(steps))), per=steps,
                       warmup=warmup, repeats=repeats)

    return {STRIPPED_ADAM: timed(adam), FLAT_ADAM: timed(flat_adam_floor(trainer)[0]), MINIMAL_SGD: timed(sgd)}


def flat_adam_floor(trainer: Trainer) -> tuple[Callable[[tf.Tensor], tf.Tensor], tf.Variable]:
    """FLAT_ADAM: `trainer`'s full-batch Adam step (its learning rate, betas and epsilon, from its
    network's current weights) with every weight in one flat Variable, returned with the loop of n steps.
    Per-layer views are slices of it; the gradient comes back flat, so Adam is one update of all values."""
    from tfscope.core.nn import losses

    mlp, config, x, z = trainer.model.mlp, trainer.config, trainer.x, trainer.z
    loss_fn = losses.get(config.loss)
    shapes = [w.shape for w in mlp.weights]
    flat = tf.Variable(tf.concat([tf.reshape(w, [-1]) for w in mlp.weights], 0))  # (9,) for the lecture net
    m, v, t = tf.Variable(tf.zeros_like(flat)), tf.Variable(tf.zeros_like(flat)), tf.Variable(0.0, dtype=flat.dtype)
    b1, b2, eps = config.beta_1, config.beta_2, config.epsilon

    def loop(n: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor) -> tf.Tensor:
            p = flat.read_value()
            with tf.GradientTape() as tape:
                tape.watch(p)
                views = [tf.reshape(w, s) for w, s in zip(tf.split(p, [s.num_elements() for s in shapes]), shapes)]
                value = loss_fn(mlp.apply(views, x), z)
            g = tape.gradient(value, p)
            t.assign_add(1.0)
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * g * g)
            flat.assign(p - config.learning_rate * tf.sqrt(1 - b2**t) / (1 - b1**t) * m / (tf.sqrt(v) + eps))
            return i + 1

        return tf.while_loop(lambda i: i < n, body, [tf.constant(0)])[0]

    return loop, flat


def fused_step_instructions(steps_per_call: int = 1000) -> dict:
    """What one fused step executes (from `profiling.hlo`): the optimized-HLO instructions with code
    of its loop's body, condition and update branch, by opcode, and whether XLA compiled the loop into
    one function (core/xla_flags.py). The loop does not depend on `steps_per_call`."""
    from collections import Counter

    from tfscope.profiling import hlo

    trainer = project_trainer(steps_per_call)
    fn = trainer.compiled("fused")
    module = hlo.parse(hlo.compiler_ir(fn, hlo.step_args(trainer, "fused"), "optimized_hlo"))
    (loop,) = module.whiles()
    parts = [loop.body, loop.condition, *(g.true_computation for g in module.guards(loop.body))]
    by_opcode = Counter(i.opcode for c in parts for i in module.computations.get(c, []) if i.opcode not in hlo.NO_CODE)
    return {"per_step": module.executed_per_step(), "compiled_whole": module.compiled_whole(loop),
            "step_by_opcode": dict(by_opcode.most_common())}


def cli_time_to_solution(cache_dir: Path | None) -> dict:
    """`tfscope train` (defaults) run the way a user runs it, in a fresh process with the compile cache
    in `cache_dir` (None: --no-compile-cache). Returns the process's wall time from its start to its
    answer, and the run's own training wall time, compile time, steps and prediction at (3, 2)."""
    import json
    import os
    import subprocess
    import sys

    from tfscope.core import compile_cache

    env = {**os.environ, compile_cache.ENV: str(cache_dir) if cache_dir else "off"}
    with tempfile.TemporaryDirectory(prefix="tfscope-bench-cli-") as tmp:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "tfscope", "train", "--out", str(Path(tmp) / "run")],
                           capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"tfscope train failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    pred = float(m["prediction_at_3_2"][0])
    return {"process_seconds": wall, "seconds": m["seconds"], "compile_seconds": m["compile_seconds"],
            "steps": m["steps"], "prediction": pred, "reached": solved(pred)}

"""The digits convnet: tfscope fused against Keras 3 `fit` at its best setting.

The same network in both (conv 8 filters 3x3 same relu, max-pool 2, flatten, dense 10: the
`--net conv:8x3,pool:2,flatten,dense` of tests/conftest.py), the same initial weights (tfscope's,
copied into Keras), the same standardised training rows (the seeded, stratified 80% of the built-in
digits), Adam at lr 0.01, batch 64, softmax cross-entropy from logits.

Two figures: time per step (after warm-up), and time from nothing to 97% accuracy on the held-out
20%, compilation included, both sides checking the held-out accuracy once per epoch (22 steps).
Keras' best setting is the fastest per step of jit_compile off/on x steps_per_execution 1 / one epoch;
its time to 97% is run at that setting.
"""

from __future__ import annotations

import math
import time

import numpy as np
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.data import split, tables
from tfscope.core.train.trainer import Trainer
from tfscope.profiling.bench import Timing, measure

NET = "conv:8x3,pool:2,flatten,dense"
BATCH, LR, SEED, VAL_FRACTION, GOAL = 64, 0.01, 0, 0.2, 0.97


def config(mode: str = "fused") -> TrainConfig:
    return TrainConfig(data="digits", task="classify", loss="cross_entropy", net=NET, activation="relu",
                       batch_size=BATCH, learning_rate=LR, seed=SEED, mode=mode, target_loss=0.0,
                       val_fraction=VAL_FRACTION)


def data():
    """(training rows, held-out rows) of the digits, as tfscope's runs split them."""
    return split.split(tables.load("digits", task="classify"), VAL_FRACTION, SEED)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels.reshape(-1)))


def tfscope_trainer() -> Trainer:
    train, _ = data()
    return Trainer(config(), train)


def time_tfscope(window: int, repeats: int) -> Timing:
    """Seconds per fused step, `window` steps per call."""
    t = tfscope_trainer()

    def chunk() -> None:
        if len(t.run_chunk(window, "fused").losses) != window:
            raise RuntimeError("the digits fused loop stopped early")

    return measure(chunk, per=window, warmup=1, repeats=repeats)


def tfscope_to_goal(cap_seconds: float) -> dict:
    """Seconds from building the trainer (data loading and compilation included) to GOAL held-out."""
    t0 = time.perf_counter()
    train, val = data()
    t = Trainer(config(), train)
    epoch = t.batches_per_epoch
    acc, steps = 0.0, 0
    while time.perf_counter() - t0 < cap_seconds:
        t.run_chunk(epoch, "fused")
        steps = t.step
        acc = accuracy(t.model.predict(val.x), val.z)
        if acc >= GOAL:
            break
    return {"seconds": time.perf_counter() - t0, "steps": steps, "accuracy": acc, "reached": acc >= GOAL}


def keras_model(jit: bool, spe: int):
    """The same network in Keras with tfscope's initial weights, compiled for `fit`."""
    import keras

    keras.utils.set_random_seed(SEED)
    t = tfscope_trainer()
    inputs = keras.Input(shape=t.model.in_shape)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.set_weights([v.numpy() for v in t.model.weights])  # conv w, conv b, dense w, dense b
    model.compile(optimizer=keras.optimizers.Adam(LR), jit_compile=jit, steps_per_execution=spe,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, t


def time_keras(jit: bool, spe: int, epochs: int, repeats: int) -> Timing:
    """Seconds per `fit` step: `epochs` epochs of the standardised training rows per timed repeat."""
    model, t = keras_model(jit, spe)
    x, y = t.x.numpy(), t.z.numpy()[:, 0].astype(np.int64)
    steps = epochs * (len(x) // BATCH)

    def fit() -> None:
        model.fit(x[: len(x) // BATCH * BATCH], y[: len(x) // BATCH * BATCH], batch_size=BATCH, epochs=epochs,
                  shuffle=True, verbose=0)

    return measure(fit, per=steps, warmup=1, repeats=repeats)


def keras_to_goal(jit: bool, spe: int, cap_seconds: float) -> dict:
    """Seconds from building the Keras model (compilation included) to GOAL held-out, checked per epoch."""
    t0 = time.perf_counter()
    model, t = keras_model(jit, spe)
    _, val = data()
    xv = t.model.norm.x_in(tf.constant(val.x)).numpy()  # the held-out rows, standardised as tfscope's
    x, y = t.x.numpy(), t.z.numpy()[:, 0].astype(np.int64)
    n = len(x) // BATCH * BATCH
    acc, epochs = 0.0, 0
    while time.perf_counter() - t0 < cap_seconds:
        model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
        epochs += 1
        acc = accuracy(model.predict(xv, batch_size=512, verbose=0), val.z)
        if acc >= GOAL:
            break
    return {"seconds": time.perf_counter() - t0, "steps": epochs * (n // BATCH), "accuracy": acc,
            "reached": acc >= GOAL}


def run(quick: bool = False, repeats: int = 5) -> dict:
    """Every figure of this part. `quick` (a smoke run) times two Keras settings on one epoch and
    skips the time to 97%."""
    window, epochs, cap = (22, 1, 0.0) if quick else (440, 10, 120.0)
    ours = time_tfscope(window, repeats)
    fits = []
    for jit, spe in ((False, 22),) if quick else ((False, 1), (False, 22), (True, 1), (True, 22)):
        fits.append({"jit_compile": jit, "steps_per_execution": spe,
                     **time_keras(jit, spe, epochs, repeats).to_dict(1e6)})
    best = min(fits, key=lambda r: r["median"])
    to_goal = {}
    if not quick:
        to_goal = {"tfscope_fused": tfscope_to_goal(cap),
                   "keras_fit_best": keras_to_goal(best["jit_compile"], best["steps_per_execution"], cap)}
    step_ratio = best["median"] / (ours.median * 1e6)
    done = to_goal and to_goal["tfscope_fused"]["reached"]
    goal_ratio = to_goal["keras_fit_best"]["seconds"] / to_goal["tfscope_fused"]["seconds"] if done else math.nan
    return {"net": NET, "batch": BATCH, "learning_rate": LR, "goal_accuracy": GOAL, "unit": "us/step",
            "tfscope_fused": ours.to_dict(1e6), "keras_fit": fits, "keras_best": best, "to_goal": to_goal,
            "ratio_per_step": step_ratio, "ratio_to_goal": goal_ratio}


def figures(part: dict) -> list[dict]:
    """The two goals of this part, in the bench's figure format."""
    note = f"{part['net']}: Keras fit at its best setting / tfscope fused"
    return [{"figure": "digits convnet: Keras fit / fused, per step", "goal": 2.0, "got": part["ratio_per_step"],
             "met": part["ratio_per_step"] >= 2.0, "note": note},
            {"figure": "digits convnet: Keras fit / fused, time to 97% held-out", "goal": 2.0,
             "got": part["ratio_to_goal"], "met": part["ratio_to_goal"] >= 2.0, "note": note}]


def table_lines(part: dict) -> list[str]:
    """This part as lines of the bench table."""
    lines = ["", f"6. Digits convnet ({part['net']}, batch {part['batch']}, Adam {part['learning_rate']:g}), "
                 f"per step and to {part['goal_accuracy']:.0%} held-out, compilation included"]
    o = part["tfscope_fused"]
    lines.append(f"  {'tfscope fused':<56} {o['median']:>9,.0f} us {o['low']:>9,.0f}..{o['high']:<9,.0f}")
    for r in part["keras_fit"]:
        name = f"Keras fit, jit {'on' if r['jit_compile'] else 'off'}, steps_per_execution {r['steps_per_execution']}"
        lines.append(f"  {name:<56} {r['median']:>9,.0f} us {r['low']:>9,.0f}..{r['high']:<9,.0f}"
                     f" {r['median'] / o['median']:>8.2f}x")
    for name, g in part["to_goal"].items():  # empty in a quick run
        state = "reached" if g["reached"] else "NOT reached"
        lines.append(f"  to {part['goal_accuracy']:.0%}: {name:<48} {g['seconds']:>9.2f} s  {g['steps']:>6,} steps, "
                     f"held-out {g['accuracy']:.2%} ({state})")
    to_goal = (f"{part['ratio_to_goal']:.2f}x to {part['goal_accuracy']:.0%}" if part["to_goal"]
               else "time to 97% skipped (--quick)")
    lines.append(f"  Keras fit best / tfscope fused: {part['ratio_per_step']:.2f}x per step, {to_goal} "
                 "(goal >= 2x on both)")
    return lines

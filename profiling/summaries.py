"""TensorBoard summaries of a training session: loss and learning rate per step, weight and
gradient histograms, gradient norms, and the graph of the step function.

They go into `LOGDIR/train`, beside the profiler capture in `LOGDIR/plugins/profile`, so one
`tensorboard --logdir LOGDIR` shows Scalars, Histograms, Graphs and Profile together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfscope.core.nn import gradients
from tfscope.core.train.trainer import Trainer

RUN = "train"  # the TensorBoard run (subdirectory of LOGDIR) that holds the summaries


def writer(logdir: str | Path) -> tf.summary.SummaryWriter:
    return tf.summary.create_file_writer(str(Path(logdir) / RUN))


def weight_tags(trainer: Trainer) -> list[str]:
    """One tag per trainable Variable, in `model.weights` order: dense_0/w, dense_0/b, dense_1/w, ..."""
    return [f"{layer.name}/{part}" for layer in trainer.model.mlp.layers for part in ("w", "b")]


def write_losses(w: tf.summary.SummaryWriter, trainer: Trainer, first_step: int, losses: Sequence[float]) -> None:
    """One `loss` and one `learning_rate` point per training step, from `first_step` on.

    The writes run as one graph loop: an eager `tf.summary.scalar` costs ~2.5 ms a point here, so
    a profile window of 100,000 steps took minutes; in a graph it is ~20 us a point. The function
    is traced per call because a traced summary op keeps the writer it was traced with."""
    lr = float(trainer.optimizer.learning_rate.numpy())

    from tensorboard.plugins.scalar import metadata

    meta = {tag: metadata.create_summary_metadata(tag, None).SerializeToString() for tag in ("loss", "learning_rate")}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64), tf.TensorSpec([], tf.int64)])
    def write(values: tf.Tensor, first: tf.Tensor) -> None:
        with w.as_default():  # tf.summary.write keeps its tag as given (scalar() would prefix the loop's scope)
            for i in tf.range(tf.shape(values, out_type=tf.int64)[0]):
                tf.summary.write("loss", tf.cast(values[i], tf.float32), step=first + i, metadata=meta["loss"])
                tf.summary.write("learning_rate", tf.constant(lr, tf.float32), step=first + i,
                                 metadata=meta["learning_rate"])

    write(tf.constant(np.asarray(losses, np.float64)), tf.constant(first_step, tf.int64))


def write_state(w: tf.summary.SummaryWriter, trainer: Trainer, step: int | None = None) -> dict[str, float]:
    """Histograms of every weight and of its gradient at the current weights, and gradient norms.

    The gradient is the run's own route (tape or chain rule) on the batch of the current step, as
    the next training step will see it. Returns the norms written (tag -> value)."""
    step = trainer.step if step is None else step
    x, z = trainer.batch(trainer.optimizer.iterations)
    _, grads = gradients.ROUTES[trainer.config.grad](trainer.model.mlp, trainer.config.loss, x, z)
    norms: dict[str, float] = {}
    with w.as_default():
        for tag, v, g in zip(weight_tags(trainer), trainer.model.weights, grads):
            tf.summary.histogram(f"weights/{tag}", v, step=step)
            tf.summary.histogram(f"gradients/{tag}", g, step=step)
            norms[f"gradient_norm/{tag}"] = float(tf.norm(tf.cast(g, tf.float64)))
        norms["gradient_norm/global"] = float(np.sqrt(sum(n * n for n in norms.values())))
        for tag, value in norms.items():
            tf.summary.scalar(tag, value, step=step)
    return norms


def write_graph(w: tf.summary.SummaryWriter, fn: Callable, args: tuple, mode: str) -> Callable[[], None]:
    """Record the step function's graph. Returns a callback to run after the function's first call.

    Graph mode: `tf.summary.trace_on(graph=True)` before the first call and `trace_export` after it
    record the graph as executed. An XLA-compiled call does not pass through that collector (the
    export comes out empty), so for xla and fused the traced function graph is written directly."""
    if mode == "eager":
        return lambda: None
    if mode == "graph":
        tf.summary.trace_on(graph=True, profiler=False)

        def export() -> None:
            with w.as_default():
                tf.summary.trace_export(name="step_function", step=0)
        return export
    with w.as_default():
        tf.summary.graph(fn.get_concrete_function(*args).graph.as_graph_def())
    return lambda: None

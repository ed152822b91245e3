"""Profile any model or any tf.function: XLA-compiled call, roofs, capture, hot path, roofline.

`profile_function(fn, *args, logdir=...)` is the one core; `profile_model` feeds it a Source's
function (core/sources/source.py) on feeds from the one input generator (core/sources/feeds.py),
or, with `train=True`, a training step of a Keras model: forward, the model's compiled loss (or
the mean squared output when it has none), the gradient by tape over its trainable variables and
an SGD update, all in one `jit_compile=True` function.

Order of work: compile (outside the capture; an op XLA cannot compile is named and the plain
tf.function graph is profiled instead, reported per TF op), measure the roofs, warm up, capture a
bounded window of calls each marked `Trace("train", step_num=i, _r=1)`, then the reports. Nothing
is written to LOGDIR until the function has compiled.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tfscope.core.errors import ConfigError
from tfscope.profiling import hlo, hot_path, roofline
from tfscope.profiling.limits import DEFAULT_EVENT_BUDGET, EVENTS_PER_CALL, EVENTS_PER_INSTRUCTION, WARM_UP_CALLS
from tfscope.profiling.logdirs import check_logdir, prepare_logdir
from tfscope.profiling.roofs import Roofs

DEFAULT_CALLS = 10
LEARNING_RATE = 0.01  # the SGD step of --train: its size does not change what is timed
_UNSUPPORTED = re.compile(r"No registered '([\w.]+)' OpKernel")
_NODE = re.compile(r"\{\{node ([^}]+)\}\}")


def xla_refusal(error: BaseException) -> str:
    """The op XLA could not compile, from TensorFlow's error, as one phrase."""
    text = str(error)
    op, node = _UNSUPPORTED.search(text), _NODE.search(text)
    if op:
        return f"op {op.group(1)}" + (f" (node {node.group(1)})" if node else "")
    first = text.strip().splitlines()[0][:160] if text.strip() else type(error).__name__
    return f"the function ({first})"


def _wait(result) -> None:
    """Bring every output to the host: a call is over when its results exist."""
    import tensorflow as tf

    for t in tf.nest.flatten(result):
        if hasattr(t, "numpy"):
            t.numpy()


def _window(calls: int | None, module: hlo.HloModule | None) -> int:
    if calls is not None:
        if calls < 1:
            raise ConfigError(f"--calls: must be >= 1, got {calls}")
        return calls
    if module is None:
        return DEFAULT_CALLS
    per_call = EVENTS_PER_CALL + EVENTS_PER_INSTRUCTION * module.executed_outside_loops()
    return max(1, min(DEFAULT_CALLS, DEFAULT_EVENT_BUDGET // per_call))


def profile_compiled(xla_fn: Callable, graph_fn: Callable, args: Sequence, logdir: str | Path, *,
                     calls: int | None = None, force: bool = False, roofs: Roofs | None = None,
                     source: Path | None = None, top: int = 15, warn: Callable[[str], None] | None = None,
                     title: str | None = None) -> dict:
    """Profile `xla_fn(*args)` (a jit_compile=True tf.function), or `graph_fn(*args)` when XLA
    refuses it; write LOGDIR's hot-path and roofline reports; return the hot-path report with the
    roofline under "roofline" (None in graph mode) and the refusal under "xla_refused"."""
    import tensorflow as tf

    from tfscope.profiling import roofs as roofs_mod

    logdir = Path(logdir)
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    check_logdir(logdir, source, force)
    args = tuple(args)
    refused = None
    try:
        hlo_text = xla_fn.experimental_get_compiler_ir(*args)(stage="optimized_hlo")
        fn, mode = xla_fn, "xla"
    except (tf.errors.OpError, ValueError, TypeError) as e:
        refused = xla_refusal(e)
        warn(f"tfscope: warning: XLA cannot compile {refused}; profiling the tf.function graph instead")
        hlo_text, fn, mode = None, graph_fn, "graph"
    module = hlo.parse(hlo_text) if hlo_text else None
    n = _window(calls, module)
    measured = roofs if roofs is not None or module is None else roofs_mod.measure()
    prepare_logdir(logdir, source, force)
    for _ in range(WARM_UP_CALLS):  # compilation and first-run costs stay out of the capture
        _wait(fn(*args))
    if hlo_text:
        (logdir / hot_path.HLO_NAME).write_text(hlo_text, encoding="utf-8")
    tf.profiler.experimental.start(str(logdir))
    try:
        for i in range(n):
            with tf.profiler.experimental.Trace("train", step_num=i, _r=1):
                _wait(fn(*args))
    finally:
        tf.profiler.experimental.stop()
    report = hot_path.build(logdir, hlo_text, mode, 1)
    report["xla_refused"] = refused
    roofline.attach(report, hlo_text, measured, logdir, top, title)
    hot_path.write(report, logdir)
    return report


def profile_function(fn: Callable, *args, logdir: str | Path, calls: int | None = None, force: bool = False,
                     roofs: Roofs | None = None, top: int = 15) -> dict:
    """Profile any tf.function (or Python function of tensors) on `args`, compiled with XLA; see
    `profile_compiled` for what it writes and returns."""
    import tensorflow as tf

    base = getattr(fn, "python_function", fn)
    return profile_compiled(tf.function(base, jit_compile=True), tf.function(base), args, logdir, calls=calls,
                            force=force, roofs=roofs, top=top)


def loss_name(model) -> str | None:
    """The compiled loss of a Keras model as a name, or None when it was compiled without one."""
    loss = getattr(model, "loss", None)
    if loss is None:
        return None
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or str(loss)


def train_step(source, feeds: dict, learning_rate: float = LEARNING_RATE) -> tuple[Callable, Callable, tuple]:
    """(XLA step, plain step, args) of one SGD training step of a Keras source on `feeds`.

    Targets are the model's own outputs on these inputs (argmax for a sparse loss), computed once:
    a profile needs a well-formed step, not learning."""
    import tensorflow as tf

    if getattr(source, "kind", "") != "keras":
        raise ConfigError("--train: needs a Keras model (--keras); a SavedModel signature has no training step")
    model = source.model
    x = source.structured(source.args(feeds))
    name = loss_name(model)
    y = tf.nest.map_structure(tf.identity, model(x, training=False))
    if name and "sparse" in name.lower():
        y = tf.nest.map_structure(lambda t: tf.argmax(t, axis=-1), y)
    lr = tf.constant(learning_rate, tf.float32)
    variables = list(model.trainable_variables)

    def step(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            if name is not None:
                loss = model.compute_loss(x=x, y=y, y_pred=pred)
            else:
                loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(p, tf.float32))) for p in tf.nest.flatten(pred)])
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_sub(tf.cast(lr, v.dtype) * g)
        return loss

    return tf.function(step, jit_compile=True), tf.function(step), (x, y)


def profile_model(source, feeds: dict, logdir: str | Path, *, train: bool = False, calls: int | None = None,
                  force: bool = False, roofs: Roofs | None = None, model_path: Path | None = None,
                  top: int = 15) -> dict:
    """Profile a Source's inference (its XLA-compiled function) or, with `train`, a Keras model's
    training step, on one feed set."""
    if train:
        xla_fn, graph_fn, args = train_step(source, feeds)
    else:
        xla_fn, graph_fn, args = source.function(jit_compile=True), source.function(), tuple(source.args(feeds))
    inputs = ", ".join(f"{'x'.join(map(str, v.shape))}" for v in feeds.values())
    what = "training step" if train else "inference"
    title = f"{Path(model_path).name if model_path else source.kind} {what}, {inputs}"
    report = profile_compiled(xla_fn, graph_fn, args, logdir, calls=calls, force=force, roofs=roofs,
                              source=model_path, top=top, title=title)
    report["model"] = source.description
    report["train"] = train
    report["feeds"] = {k: list(v.shape) for k, v in feeds.items()}
    return report

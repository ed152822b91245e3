"""A TensorBoard profiler session over a run's compiled step, plus its summaries and report.

`profile_run` rebuilds the run (network, optimiser, data) from its newest checkpoint, takes the
compiled step of the chosen mode (default fused, the fastest), compiles and warms it up outside
the capture, then captures a bounded window of calls, each marked
`Trace("train", step_num=i, _r=1)` so TensorBoard's overview shows steps. The training it does
happens on an in-memory copy: nothing is written to RUN_DIR.

The window is sized by instruction count: on CPU, XLA records an event for each executed HLO
instruction (and a short "end:" marker after it), once per iteration inside a fused loop, so
events per call ~ 2 x (instructions outside the loop + instructions per iteration x fused steps);
a loop XLA compiled into one function (core/xla_flags.py) records one event per call instead.
The default keeps a capture under DEFAULT_EVENT_BUDGET events (SIZE_LIMIT_BYTES on disk).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfscope.core.config import MODES
from tfscope.core.errors import ConfigError
from tfscope.core.train.run import load_run
from tfscope.core.train.trainer import Trainer
from tfscope.profiling import hlo, hot_path, roofline, summaries
from tfscope.profiling import roofs as roofs_mod
from tfscope.profiling.limits import (  # noqa: F401  (re-exported: the window's sizes are part of this API)
    BYTES_PER_EVENT,
    DEFAULT_CALLS,
    DEFAULT_EVENT_BUDGET,
    EVENTS_PER_CALL,
    EVENTS_PER_INSTRUCTION,
    EVENTS_PER_TF_OP,
    SIZE_LIMIT_BYTES,
    WARM_UP_CALLS,
)
from tfscope.profiling.logdirs import check_logdir, prepare_logdir  # noqa: F401  (part of this API)
from tfscope.profiling.roofs import Roofs


@dataclass
class Window:
    """The captured window: how many calls, how many steps per call, and the events expected."""

    mode: str
    calls: int
    steps_per_call: int
    events_per_call: int  # estimate from the HLO (or TF graph) instruction count
    estimated_events: int
    estimated_bytes: int
    over_budget: bool  # the user asked for more than DEFAULT_EVENT_BUDGET


def _events_per_call(trainer: Trainer, mode: str) -> tuple[int, int]:
    """(events per call outside any loop, events per fused step) for `mode`, from the IR."""
    if mode in ("xla", "fused"):
        # A throwaway wrapping: the trainer's own fused function is traced only once K is fixed.
        probe = tf.function(trainer.train_step if mode == "xla" else trainer.fused_steps, jit_compile=True,
                            autograph=False)
        module = hlo.parse(hlo.compiler_ir(probe, hlo.step_args(trainer, mode), "optimized_hlo"))
        return (EVENTS_PER_CALL + EVENTS_PER_INSTRUCTION * module.executed_outside_loops(),
                EVENTS_PER_INSTRUCTION * module.executed_per_step(dispatched_only=True))
    graph = tf.function(trainer.train_step, autograph=False).get_concrete_function().graph
    return EVENTS_PER_CALL + EVENTS_PER_TF_OP * len(graph.get_operations()), 0


def plan_window(trainer: Trainer, mode: str, calls: int | None = None, steps_per_call: int | None = None,
                budget: int = DEFAULT_EVENT_BUDGET) -> Window:
    """Choose calls and fused steps per call so the capture stays within `budget` events, unless
    the user fixed them (then `over_budget` says whether the estimate exceeds it)."""
    if mode not in MODES:
        raise ConfigError(f"--mode: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if calls is not None and calls < 1:
        raise ConfigError(f"--calls: must be >= 1, got {calls}")
    if steps_per_call is not None:
        if mode != "fused":
            raise ConfigError(f"--steps-per-call: only the fused mode runs several steps per call (mode is {mode})")
        if steps_per_call < 1:
            raise ConfigError(f"--steps-per-call: must be >= 1, got {steps_per_call}")
    outside, per_step = _events_per_call(trainer, mode)
    n = calls or DEFAULT_CALLS[mode]
    if mode == "fused":
        k = steps_per_call or max(1, min(trainer.config.steps_per_call, (budget // n - outside) // max(per_step, 1)))
    else:
        k = 1
    if calls is None and steps_per_call is None:
        n = max(1, min(n, budget // max(outside + per_step * k, 1)))
    per_call = outside + per_step * k
    total = n * per_call
    return Window(mode, n, k, per_call, total, total * BYTES_PER_EVENT, total > budget)


def window_warning(window: Window) -> str | None:
    """The one stderr line for a window above the default cap, else None."""
    if not window.over_budget:
        return None
    return (f"tfscope: warning: profile window of {window.calls} calls x {window.steps_per_call:,} steps records "
            f"about {window.estimated_events:,} events (~{window.estimated_bytes / 1e6:.0f} MB), above the default "
            f"cap of {DEFAULT_EVENT_BUDGET:,} (~{DEFAULT_EVENT_BUDGET * BYTES_PER_EVENT / 1e6:.0f} MB)")


def _call(fn: Callable, args: tuple, mode: str) -> np.ndarray:
    """One call of the compiled step; returns the losses of the steps it ran (read back to the host,
    which also waits for a device to finish)."""
    if mode == "fused":
        ran, hist = fn(*args)
        return hist.numpy()[: int(ran)]
    return np.array([float(fn(*args))])


def profile_run(run_dir: str | Path, logdir: str | Path, mode: str = "fused", calls: int | None = None,
                steps_per_call: int | None = None, force: bool = False,
                warn: Callable[[str], None] | None = None, roofs: Roofs | None = None, top: int = 15) -> dict:
    """Capture a profile of RUN_DIR's compiled step into LOGDIR, write summaries, the hot-path
    report (LOGDIR/hot_path.json, .csv) and, in the XLA modes, the roofline of its instructions
    against `roofs` (measured here, before the capture, when not given); return the report (with
    the window it captured, the roofline under "roofline")."""
    run_dir, logdir = Path(run_dir), Path(logdir)
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    check_logdir(logdir, run_dir, force)
    trainer = load_run(run_dir)  # an in-memory copy: nothing below writes to run_dir
    window = plan_window(trainer, mode, calls, steps_per_call)
    if window_warning(window):
        warn(window_warning(window))
    prepare_logdir(logdir, run_dir, force)

    trainer.target.assign(0.0)  # a finished run sits below its target loss; keep the loop running
    trainer.steps_per_call = window.steps_per_call  # the fused loop's buffer size, fixed at its first trace
    fn = trainer.compiled(mode)
    args = hlo.step_args(trainer, mode)
    w = summaries.writer(logdir)
    summaries.write_state(w, trainer)  # weights and gradients as restored, before any step
    after_first_call = summaries.write_graph(w, fn, args, mode)
    losses: list[tuple[int, np.ndarray]] = []
    for i in range(WARM_UP_CALLS):  # compilation and first-run costs stay out of the capture
        start = trainer.step
        losses.append((start, _call(fn, args, mode)))
        if i == 0:
            after_first_call()
    hlo_text = hlo.compiler_ir(fn, args, "optimized_hlo") if mode in hlo.IR_MODES else None
    if hlo_text:
        (logdir / hot_path.HLO_NAME).write_text(hlo_text, encoding="utf-8")
        roofs = roofs or roofs_mod.measure()

    first_captured = trainer.step
    tf.profiler.experimental.start(str(logdir))
    try:
        for i in range(window.calls):
            start = trainer.step
            with tf.profiler.experimental.Trace("train", step_num=i, _r=1):
                out = _call(fn, args, mode)
            losses.append((start, out))
    finally:
        tf.profiler.experimental.stop()

    norms = summaries.write_state(w, trainer)
    for start, vals in losses:
        summaries.write_losses(w, trainer, start, vals)
    w.flush()

    report = hot_path.build(logdir, hlo_text, mode, window.steps_per_call)
    report["run_dir"] = str(run_dir)
    report["window"] = asdict(window)
    report["first_captured_step"] = first_captured
    report["steps_captured"] = trainer.step - first_captured
    report["gradient_norms"] = norms
    report["final_loss"] = float(losses[-1][1][-1]) if len(losses[-1][1]) else math.nan
    k = window.steps_per_call
    roofline.attach(report, hlo_text, roofs, logdir, top,
                    f"{run_dir.name}: {mode} mode" + (f", {k:,} steps per call" if k > 1 else ""))
    hot_path.write(report, logdir)
    return report


def tensorboard_hint(logdir: str | Path) -> str:
    return (f"open it in TensorBoard: tensorboard --logdir {logdir} --host 127.0.0.1 --port 6006, "
            "then http://127.0.0.1:6006 (Scalars, Histograms, Graphs, Profile)")

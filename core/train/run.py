"""A training run and its directory: config.json, history.csv, metrics.json, loss.png, checkpoints/.

`train` creates or resumes a run and drives the compiled step in chunks; `load_run` rebuilds a
finished run's network (and optimiser) from its config and newest checkpoint. The Python side does
per-call work only: in fused mode one call runs many steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfscope.core.config import CHECKPOINT_SECONDS, TrainConfig, resumed
from tfscope.core.data import split
from tfscope.core.data import tables as data_mod
from tfscope.core.nn import losses
from tfscope.core.nn.network import Classifier
from tfscope.core.optim import rules
from tfscope.core.train.checkpoints import Checkpointer
from tfscope.core.train.distributed import is_chief, make_strategy, make_trainer, worker_name
from tfscope.core.train.run_dir import (  # noqa: F401  (re-exported: a run's files are part of this API)
    CONFIG,
    HISTORY,
    METRICS,
    PLOT,
    append_history,
    check_resume,
    is_run,
    load_config,
    plot_loss,
    prepare_dir,
    read_history,
    write_atomic,
    write_history,
)
from tfscope.core.train.trainer import DIVERGED, INTERRUPTED, STEPS, Trainer

CONFUSION = "confusion.png"
CALL_SECONDS = 0.3  # fused mode sizes each call to last about this long


@dataclass
class Progress:
    step: int  # global steps done
    total: int  # the run's step budget
    loss: float  # last step's loss
    steps_per_second: float  # over this invocation


@dataclass
class Result:
    run_dir: Path
    trainer: Trainer
    metrics: dict = field(default_factory=dict)


def datasets(config: TrainConfig, dataset: data_mod.Dataset | None = None
             ) -> tuple[data_mod.Dataset, data_mod.Dataset | None]:
    """The run's (training rows, held-out rows or None), from config's data unless given."""
    if dataset is None:
        dataset = data_mod.load(config.data, config.target, config.features, config.dtype, config.task)
    return split.split(dataset, config.val_fraction, config.seed)


def with_classes(config: TrainConfig, dataset: data_mod.Dataset) -> TrainConfig:
    """`config` recording the data's class labels (index order), as config.json keeps them."""
    return dataclasses.replace(config, classes=list(dataset.classes)) if dataset.classes else config


def classification_summary(trainer: Trainer) -> dict:
    """Accuracy and per-class precision and recall on the training rows and the held-out rows, and
    the confusion matrix of the held-out rows (of the training rows without a split)."""
    model, out = trainer.model, {}
    sets = [("train", trainer.data), ("val", getattr(trainer, "validation", None))]
    for name, d in sets:
        if d is None:
            continue
        k, _ = model.predict_classes(d.x)
        m = losses.classification_metrics(k, d.z[:, 0], len(model.classes))
        out[f"{name}_accuracy"] = m["accuracy"]
        out[f"{name}_rows"] = d.rows
        out[f"{name}_precision"] = dict(zip(model.classes, m["precision"]))
        out[f"{name}_recall"] = dict(zip(model.classes, m["recall"]))
        out["confusion"] = {"rows": name, "classes": list(model.classes), "matrix": m["confusion"],
                            "layout": "row = true class, column = predicted class"}
    return out


def plot_confusion(run_dir: Path, confusion: dict) -> None:
    """confusion.png: the confusion matrix as a heat map with the counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, names = np.asarray(confusion["matrix"]), confusion["classes"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(names), 1.0 + 0.45 * len(names)))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({confusion['rows']} rows)")
    fig.tight_layout()
    tmp = run_dir / f".{CONFUSION}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(run_dir / CONFUSION)


def summary(trainer: Trainer) -> dict:
    """Raw-unit quality of the trained network on its training (and held-out) data, its affine map,
    (3, 2); for a classifier, classification_summary."""
    d = trainer.data
    if isinstance(trainer.model, Classifier):
        return classification_summary(trainer)
    pred = trainer.model.predict(d.x)
    out: dict = {f"train_{k}": v for k, v in losses.metrics(pred, d.z).items()}
    val = getattr(trainer, "validation", None)
    if val is not None:
        out.update({f"val_{k}": v for k, v in losses.metrics(trainer.model.predict(val.x), val.z).items()})
    if trainer.model.mlp.is_linear():
        w, b = trainer.model.affine_map()
        out["affine_map"] = {"W": w[:, 0].tolist() if w.shape[1] == 1 else w.tolist(),
                             "b": b.tolist() if b.size > 1 else float(b[0])}
    if d.x.ndim == 2 and d.x.shape[1] == 2:
        out["prediction_at_3_2"] = trainer.model.predict(np.array([[3.0, 2.0]]))[0].tolist()
    if getattr(trainer, "rule", None) is not None:  # a local learning rule: what it adds (core/optim/rules.py)
        out.update(rules.report(trainer.rule, trainer.x.numpy(), trainer.z.numpy()))
    return out


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, force: bool = False,
          progress: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False, dataset: data_mod.Dataset | None = None) -> Result:
    """Train (or resume) a run in `run_dir` up to `config.steps` total steps; return its metrics.

    Under a strategy, the strategy is made first (it must precede every other TensorFlow op).
    Under multiworker only the chief writes to `run_dir`; every other worker trains in step with it
    but writes to a private temporary copy, removed at the end, so nothing collides. `dataset` is
    config's data when the caller has loaded it already (the command line does, to refuse a bad
    file before TensorFlow loads)."""
    strategy = make_strategy(config.strategy, config.devices)
    if is_chief(strategy):
        return _train(config, run_dir, resume, force, progress, should_stop, dataset)
    scratch = Path(tempfile.mkdtemp(prefix=f"tfscope-{worker_name(strategy)}-"))
    try:
        if resume and is_run(Path(run_dir)):  # start from the chief's files (a shared or copied directory)
            shutil.copytree(run_dir, scratch / "run")
        result = _train(config, scratch / "run", resume, force, progress, should_stop, dataset)
        result.run_dir = Path(run_dir)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: TrainConfig, run_dir: str | Path, resume: bool, force: bool,
           progress: Callable[[Progress], None] | None, should_stop: Callable[[], bool],
           dataset: data_mod.Dataset | None = None) -> Result:
    config.validate()
    run_dir = Path(run_dir)
    # The data before the directory: a bad file must not cost a run that --force would replace.
    if dataset is None:
        dataset = data_mod.load(config.data, config.target, config.features, config.dtype, config.task)
    config = with_classes(config, dataset)
    train_rows, held_out = datasets(config, dataset)
    prepare_dir(run_dir, resume, force)
    if resume:
        check_resume(run_dir, config)
        config = resumed(load_config(run_dir), config)  # the run's own row order (a run before `shuffle`: sort)
    trainer = make_trainer(config, train_rows)
    trainer.validation = held_out
    ckpt = Checkpointer(run_dir, trainer.model, trainer.optimizer, config.keep_checkpoints)
    if resume:
        # A run killed before its first checkpoint resumes from step 0: the seeded initial
        # weights are the ones it started from.
        start = ckpt.restore_latest() if ckpt.started() else 0
        write_atomic(run_dir / CONFIG, config.to_json())
        steps, vals = read_history(run_dir, upto=start)
        write_history(run_dir, steps, vals)
    else:
        # config.json first: from here on RUN_DIR is a run, so a kill at any later point can be resumed.
        write_atomic(run_dir / CONFIG, config.to_json())
        write_history(run_dir, np.zeros(0, np.int64), np.zeros(0))

    t0 = time.perf_counter()
    first_step = trainer.step
    compile_seconds = _warm_up(trainer)
    stopped, diverged_at, last_loss, compute = STEPS, None, math.nan, 0.0
    n = 1000 if config.mode == "fused" else 100
    every, saved_at = config.checkpoint_every, time.perf_counter()
    while trainer.step < config.steps:
        if should_stop():
            stopped = INTERRUPTED
            break
        todo = min(n, config.steps - trainer.step)
        if every:
            todo = min(todo, (trainer.step // every + 1) * every - trainer.step)
        tc = time.perf_counter()
        chunk = trainer.run_chunk(todo)
        took = time.perf_counter() - tc
        compute += took
        append_history(run_dir, chunk.start, chunk.losses)
        if len(chunk.losses):
            last_loss = float(chunk.losses[-1])
        if config.mode == "fused" and len(chunk.losses) == todo and config.strategy != "multiworker":
            n = int(min(trainer.steps_per_call, max(1000, todo * CALL_SECONDS / max(took, 1e-6))))
        due = trainer.step % every == 0 if every else time.perf_counter() - saved_at >= CHECKPOINT_SECONDS
        if due or chunk.stopped:
            ckpt.save()
            saved_at = time.perf_counter()
        if progress:
            progress(Progress(trainer.step, config.steps, last_loss,
                              (trainer.step - first_step) / max(time.perf_counter() - t0, 1e-9)))
        if chunk.stopped:
            stopped = chunk.stopped
            if stopped == DIVERGED:
                diverged_at = chunk.start + len(chunk.losses) - 1
            break
    seconds = time.perf_counter() - t0
    ckpt.save()
    ran = trainer.step - first_step
    steps, vals = read_history(run_dir)
    metrics = {
        "final_loss": last_loss if math.isfinite(last_loss) else str(last_loss),
        "steps": trainer.step,
        "steps_this_invocation": ran,
        "seconds": seconds,
        "compile_seconds": compile_seconds,
        "compute_seconds": compute,
        "us_per_step": compute / ran * 1e6 if ran else None,
        "mode": config.mode,
        "stopped_because": stopped,
        "diverged_at_step": diverged_at,
        "last_checkpoint_step": ckpt.last_saved,
        "loss_units": ("nats" if config.task == "classify" else "standardised" if config.standardize else "raw"),
    }
    if stopped != DIVERGED:
        metrics.update(summary(trainer))
    write_atomic(run_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    if "confusion" in metrics:
        plot_confusion(run_dir, metrics["confusion"])
    plot_loss(run_dir, steps, vals, f"{config.mode}, {config.optimizer}, lr {config.learning_rate:g}")
    return Result(run_dir, trainer, metrics)


def _warm_up(trainer: Trainer) -> float:
    """Compile the fused loop with a zero-step call, so its compile time is measured apart."""
    if trainer.config.mode != "fused":
        return 0.0
    t = time.perf_counter()
    trainer.compiled()(tf.constant(0, tf.int32))
    return time.perf_counter() - t


def load_run(run_dir: str | Path) -> Trainer:
    """Rebuild a run's Trainer (network, optimiser, data) from config.json and the newest checkpoint."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    train_rows, held_out = datasets(config)
    trainer = Trainer(config, train_rows)
    trainer.validation = held_out  # the rows the run held out (None without --val-fraction)
    Checkpointer(run_dir, trainer.model, trainer.optimizer).restore_latest()
    return trainer

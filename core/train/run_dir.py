"""A run directory's files, apart from training so that the command line can check a directory
before TensorFlow loads: config.json, history.csv (step, loss), metrics.json, loss.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from tfscope.core.errors import RunDirError
from tfscope.core.paths import check_creatable

CONFIG, METRICS, HISTORY, PLOT = "config.json", "metrics.json", "history.csv", "loss.png"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def is_run(path: Path) -> bool:
    return (path / CONFIG).is_file()


def load_config(run_dir: str | Path):
    """A run's TrainConfig from its config.json, or one line saying RUN_DIR is not a run; needs no
    TensorFlow, so commands call it before loading the network."""
    from tfscope.core.config import TrainConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    return TrainConfig.load(run_dir / CONFIG)


def check_resume(run_dir: Path, config) -> None:
    """--resume continues a run only with the settings it was started with (core.config.resume_mismatch)."""
    from tfscope.core.config import resume_mismatch

    diff = resume_mismatch(load_config(run_dir), config)
    if diff:
        raise RunDirError(f"{run_dir}: --resume with a different {diff}")


def check_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse to clobber, changing nothing: an existing non-empty RUN_DIR needs --resume or --force,
    --resume needs a run, and --force replaces only a run."""
    if resume:
        if not is_run(run_dir):
            raise RunDirError(f"{run_dir}: not a run directory (no {CONFIG}); nothing to resume")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    check_creatable(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunDirError(f"{run_dir}: already exists; use --resume to continue it or --force to replace it")
        if not is_run(run_dir):
            raise RunDirError(f"{run_dir}: exists and is not a run directory; --force only replaces runs")


def prepare_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """`check_dir`, then make RUN_DIR ready: a run replaced with --force is removed first."""
    check_dir(run_dir, resume, force)
    if resume:
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"{run_dir}: cannot write there ({e.strerror})") from None


def read_history(run_dir: Path, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) from history.csv, keeping only steps < `upto` when given.

    A run killed mid-append can leave a cut-off last line ("12" of "1234,0.5"); lines that are not
    a whole `step,loss` pair are skipped (a cut line that still parses belongs to a step at or
    after the newest checkpoint, so a resume truncates it anyway)."""
    path = run_dir / HISTORY
    if not path.exists():
        return np.zeros(0, np.int64), np.zeros(0)
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        try:
            step, loss = line.split(",")
            rows.append((int(step), float(loss)))
        except ValueError:
            continue
    steps = np.array([r[0] for r in rows], np.int64)
    vals = np.array([r[1] for r in rows], np.float64)
    if upto is not None:
        keep = steps < upto
        steps, vals = steps[keep], vals[keep]
    return steps, vals


def write_history(run_dir: Path, steps: np.ndarray, vals: np.ndarray) -> None:
    lines = ["step,loss"] + [f"{s},{v!r}" for s, v in zip(steps.tolist(), vals.tolist())]
    write_atomic(run_dir / HISTORY, "\n".join(lines) + "\n")


def append_history(run_dir: Path, start: int, vals: np.ndarray) -> None:
    with open(run_dir / HISTORY, "a", encoding="utf-8") as f:
        f.write("".join(f"{start + i},{float(v)!r}\n" for i, v in enumerate(vals)))


def plot_loss(run_dir: Path, steps: np.ndarray, vals: np.ndarray, title: str) -> None:
    """loss.png: training loss against step on a log scale, like the lecture's plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    finite = np.isfinite(vals) & (vals > 0)
    ax.plot(steps[finite], vals[finite], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = run_dir / ".loss.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, run_dir / PLOT)

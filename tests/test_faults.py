"""Faults: a training run killed (SIGKILL) anywhere, or interrupted (SIGINT), resumes to the very
weights and history of an uninterrupted run; checkpoints survive a kill mid-save; divergence never
leaves a non-finite checkpoint.

Each run is `python -m tfscope train` in a subprocess, killed when the run directory shows the
state a scenario wants (polled, so the kill points do not depend on the machine's speed). Every
subprocess has a deadline and is reaped. The scenarios run two at a time (one per core).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.train.checkpoints import CHECKPOINT_DIR, INDEX, Checkpointer
from tfscope.core.train.run import HISTORY, METRICS, load_run
from tfscope.core.train.trainer import Trainer

pytestmark = pytest.mark.slow(seconds=176)  # the file's test time under -n 2; see conftest

STEPS, EVERY = 1000, 20
# Mini-batches (the data position must resume too), a non-linear net (the loss never reaches 0),
# a checkpoint every 20 steps: 50 saves, so many kill points fall near or inside one.
FLAGS = ("--batch-size", "4", "--hidden", "8,8", "--activation", "tanh", "--target-loss", "0",
         "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--seed", "3")
DEADLINE = 120.0  # seconds for any one subprocess; a healthy one takes about 10


class Proc(subprocess.Popen):
    """A `tfscope train` subprocess whose stdout and stderr go to files (no pipe can fill up)."""

    def output(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()


def launch(run_dir: Path, *extra: str) -> Proc:
    """`tfscope train --out run_dir FLAGS extra` in the background."""
    log = run_dir.parent / f"{run_dir.name}.{time.monotonic_ns()}"
    out, err = Path(f"{log}.out"), Path(f"{log}.err")
    with open(out, "w") as fo, open(err, "w") as fe:
        p = Proc([sys.executable, "-m", "tfscope", "train", "--out", str(run_dir), *FLAGS, *extra],
                 stdout=fo, stderr=fe)
    p.out, p.err = out, err
    return p


def finish(p: Proc, timeout: float = DEADLINE) -> int:
    """Wait for `p` within `timeout`; kill and reap it on the way out whatever happens."""
    try:
        return p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def history_rows(run: Path) -> int:
    try:
        return max(0, (run / HISTORY).read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def indexed_step(run: Path) -> int | None:
    """The step of the checkpoint the `checkpoint` index names as newest, or None."""
    try:
        m = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', (run / CHECKPOINT_DIR / INDEX).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(m.group(1)) if m else None


def saving(run: Path, at_least: int) -> bool:
    """A save is under way: TF's `ckpt-N_temp` directory of a step >= at_least exists."""
    try:
        names = [e.name for e in (run / CHECKPOINT_DIR).iterdir()]
    except FileNotFoundError:
        return False
    return any(re.fullmatch(r"ckpt-(\d+)_temp", n) and int(n[5:-5]) >= at_least for n in names)


def kill_when(p: Proc, ready: Callable[[], bool], sig: int = signal.SIGKILL) -> None:
    """Send `sig` to `p` as soon as `ready()` holds (polled every 0.5 ms); fail if `p` ends first
    or the deadline passes. After SIGKILL, reap `p`; after SIGINT the caller does."""
    deadline = time.monotonic() + DEADLINE
    try:
        while not ready():
            assert p.poll() is None, f"the run ended (status {p.returncode}) before its kill point: {p.output()}"
            assert time.monotonic() < deadline, "kill point not reached in time"
            time.sleep(0.0005)
        p.send_signal(sig)
    except BaseException:
        p.kill()
        p.wait(timeout=30)
        raise
    if sig == signal.SIGKILL:
        assert finish(p) == -signal.SIGKILL


def after(seconds: float, ready: Callable[[], bool]) -> Callable[[], bool]:
    """A kill point `seconds` after `ready()` first holds."""
    since: list[float] = []

    def check() -> bool:
        if not since and ready():
            since.append(time.monotonic())
        return bool(since) and time.monotonic() - since[0] >= seconds

    return check


def state(run: Path) -> dict:
    """Everything the run's future depends on: weights, optimiser slots and step, and history.csv."""
    trainer = load_run(run)
    return {"step": trainer.step,
            "variables": [v.numpy() for v in (*trainer.model.weights, *trainer.optimizer.variables)],
            "history": (run / HISTORY).read_bytes()}


def resume(run: Path) -> None:
    p = launch(run, "--resume")
    assert finish(p) == 0, p.output()


def mid_save_kill(run: Path) -> dict:
    """Kill while a checkpoint is being written; retry (a new run) until the directory proves it:
    a `_temp` directory left behind, or a finished checkpoint newer than the one the index names."""
    for attempt in range(4):
        p = launch(run, "--force")
        kill_when(p, lambda: saving(run, STEPS // 2))
        ckdir = run / CHECKPOINT_DIR
        newest = max(int(m.group(1)) for n in ckdir.iterdir() if (m := re.match(r"ckpt-(\d+)", n.name)))
        if any(n.name.endswith("_temp") for n in ckdir.iterdir()) or newest > indexed_step(run):
            before = indexed_step(run)
            trainer = load_run(run)  # the previous checkpoint, whole
            return {"unfinished": newest, "indexed": before, "loaded": trainer.step, "attempts": attempt + 1}
    pytest.fail("could not kill a run during a checkpoint write in 4 attempts")


def scenario(name: str, tmp: Path) -> dict:
    """Run scenario `name` in tmp/name, killing and resuming; return what it observed."""
    run = tmp / name
    seen: dict = {}
    if name == "before the first checkpoint":
        p = launch(run)
        kill_when(p, lambda: (run / "config.json").exists())
        seen["indexed"] = indexed_step(run)
    elif name == "after 0.4 s of training":
        p = launch(run)
        kill_when(p, after(0.4, lambda: history_rows(run) > 0))
        seen["rows"] = history_rows(run)
    elif name == "history ahead of the checkpoint":
        p = launch(run)
        kill_when(p, lambda: history_rows(run) >= STEPS // 3 and history_rows(run) > (indexed_step(run) or 0))
        seen["rows"], seen["indexed"] = history_rows(run), indexed_step(run)
    elif name == "during a checkpoint write":
        seen.update(mid_save_kill(run))
    elif name == "twice":
        p = launch(run)
        kill_when(p, lambda: history_rows(run) >= STEPS // 4)
        p = launch(run, "--resume")
        kill_when(p, lambda: (indexed_step(run) or 0) >= 3 * STEPS // 4)
        seen["indexed"] = indexed_step(run)
    elif name == "after the last checkpoint":
        p = launch(run)
        kill_when(p, lambda: indexed_step(run) == STEPS)
        seen["metrics_written"] = (run / METRICS).exists()
    resume(run)
    return seen


SCENARIOS = ("before the first checkpoint", "after 0.4 s of training", "history ahead of the checkpoint",
             "during a checkpoint write", "twice", "after the last checkpoint")


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    """The uninterrupted run's state, and each scenario's resumed state and observations."""
    tmp = tmp_path_factory.mktemp("faults")
    with ThreadPoolExecutor(2) as pool:
        whole = pool.submit(lambda: finish(launch(tmp / "whole")))
        futures = {name: pool.submit(scenario, name, tmp) for name in SCENARIOS}
        assert whole.result() == 0
        seen = {name: f.result() for name, f in futures.items()}
    return {"whole": state(tmp / "whole"), "tmp": tmp, "seen": seen}


def assert_same(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == STEPS
    assert len(a["variables"]) == len(b["variables"])
    for va, vb in zip(a["variables"], b["variables"]):
        assert va.dtype == vb.dtype and np.array_equal(va, vb)  # bit for bit: same values, same order
    assert a["history"] == b["history"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_sigkill_then_resume_is_bit_identical(killed, name):
    seen = killed["seen"][name]
    if name == "before the first checkpoint":
        assert seen["indexed"] is None, "the kill was meant to land before any checkpoint"
    if name == "history ahead of the checkpoint":
        assert seen["rows"] > (seen["indexed"] or 0)
    if name == "after the last checkpoint":
        assert not seen["metrics_written"]
    assert_same(state(killed["tmp"] / name), killed["whole"])


def test_a_kill_mid_save_leaves_the_previous_checkpoint_whole(killed):
    """The unfinished save is newer than the index's newest, which loads and is the step restored."""
    seen = killed["seen"]["during a checkpoint write"]
    assert seen["unfinished"] > seen["indexed"] == seen["loaded"] >= STEPS // 2 - EVERY


def test_sigint_saves_says_how_to_resume_and_resumes_exactly(killed):
    run = killed["tmp"] / "sigint"
    p = launch(run)
    kill_when(p, lambda: history_rows(run) >= STEPS // 3, sig=signal.SIGINT)
    assert finish(p) == 130
    out, err = p.output()
    m = re.search(r"interrupted: checkpoint saved at step ([\d,]+); continue with `tfscope train --out (\S+) "
                  r"--resume` and the same flags", out)
    assert m, out
    step = int(m.group(1).replace(",", ""))
    assert Path(m.group(2)) == run and indexed_step(run) == step == history_rows(run) >= STEPS // 3
    assert "Traceback" not in err
    metrics = json.loads((run / METRICS).read_text())
    assert (metrics["stopped_because"], metrics["steps"]) == ("interrupted", step)
    resume(run)
    assert_same(state(run), killed["whole"])


def diverge(run: Path, lr: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Plain SGD on raw lecture data at `lr`, a checkpoint due every step: (process, metrics)."""
    p = subprocess.run([sys.executable, "-m", "tfscope", "train", "--out", str(run), "--optimizer", "sgd",
                        "--lr", lr, "--no-standardize", "--checkpoint-every", "1", "--mode", "xla"],
                       capture_output=True, text=True, timeout=DEADLINE)
    assert p.returncode == 1, p.stderr
    return p, json.loads((run / METRICS).read_text())


def test_divergence_names_the_step_and_never_checkpoints_a_non_finite_state(tmp_path):
    """Raw lecture data, plain SGD at lr 1e38: the first update overflows the weights to inf
    (the loss at step 0 is finite, at step 1 NaN); a checkpoint is due at every step."""
    run = tmp_path / "r"
    p, metrics = diverge(run, "1e38")
    assert (metrics["stopped_because"], metrics["diverged_at_step"], metrics["last_checkpoint_step"]) == (
        "diverged", 1, None)
    assert "the loss became non-finite at step 1; no checkpoint was saved" in p.stdout
    assert "Try a smaller --lr (a new run: --force) or drop --no-standardize." in p.stdout
    assert not (run / CHECKPOINT_DIR).exists()

    # lr 0.05: the loss overflows while the weights are still finite; every kept checkpoint is finite
    run = tmp_path / "s"
    p, metrics = diverge(run, "0.05")
    at = metrics["diverged_at_step"]
    assert f"the loss became non-finite at step {at}; the last finite checkpoint is step {at}." in p.stdout
    history = (run / HISTORY).read_text().splitlines()
    losses = [float(r.split(",")[1]) for r in history[1:]]
    assert len(losses) == at + 1 and not np.isfinite(losses[-1]) and np.all(np.isfinite(losses[:-1]))
    prefixes = tf.train.get_checkpoint_state(str(run / CHECKPOINT_DIR)).all_model_checkpoint_paths
    assert len(prefixes) == 3
    for prefix in prefixes:
        reader = tf.train.load_checkpoint(prefix)
        for key, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.all(np.isfinite(reader.get_tensor(key))), (prefix, key)


def test_the_checkpointer_refuses_a_non_finite_state(tmp_path):
    """The guard itself: one inf weight (or optimiser slot) and save() writes nothing."""
    from tfscope.core.data import tables as data

    trainer = Trainer(TrainConfig(), data.builtin())
    trainer.run_chunk(3, "eager")
    ckpt = Checkpointer(tmp_path, trainer.model, trainer.optimizer)
    trainer.model.weights[0].assign(tf.fill(trainer.model.weights[0].shape, np.inf))
    assert ckpt.save() is None and not (tmp_path / CHECKPOINT_DIR).exists()


def test_an_export_moved_aside_by_a_dead_force_replacement_is_put_back(tmp_path):
    """`export --force` renames the old export aside, then the new one in: a kill between the two
    renames (too short a window to hit with a signal, so the state is made here) must not lose the
    old export. The next export puts it back, or deletes it once a new one is in place.
    (tests/test_export_cli.py kills an export while it writes.)"""
    from tfscope.export.preflight import MARKER
    from tfscope.export.writer import OLD, PARTIAL, remove_stale

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(timeout=DEADLINE)  # its pid is now a dead process's
    out = tmp_path / "exp"
    old, partial = tmp_path / f".exp{OLD}{done.pid}", tmp_path / f".exp{PARTIAL}{done.pid}"
    for d, text in ((old, "the old export"), (partial, "the new one, complete but not yet in place")):
        d.mkdir()
        (d / MARKER).write_text(text)
    mine = tmp_path / f".exp{OLD}{os.getpid()}"  # a live process's: left alone
    mine.mkdir()
    remove_stale(out)
    assert (out / MARKER).read_text() == "the old export"
    assert not old.exists() and not partial.exists() and mine.exists()
    old.mkdir()  # crashed after the new export was in place: the old one just goes
    remove_stale(out)
    assert not old.exists() and (out / MARKER).read_text() == "the old export"

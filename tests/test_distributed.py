"""The custom loop on tf.distribute against the single-device Trainer, the oracle.

Tolerance: the largest weight difference relative to the network's largest weight, 1e-6 in
float32 and 1e-12 in float64. A replica's share of the gradient is scaled by (its rows / global
rows) and the shares are summed, so the sum differs from the single-device mean only by the order
of additions: a few ulps per step, grown over 50 steps to ~1e-7 (float32) and ~1e-14 (float64)
in the measured runs. The comparison is network-wide rather than per weight because the biases of
the full-batch lecture net are zero in exact arithmetic, and their rounding noise has no scale.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tfscope

# 112-240 s under -n 2: its mirrored subprocess slows most beside the other worker, so it starts first
pytestmark = pytest.mark.slow(seconds=240)

TOL = {"float32": 1e-6, "float64": 1e-12}
# Seconds for any child process, so a hang fails the test instead of blocking CI. Generous: the
# mirrored check needs ~30 s alone on 2 cores but took 150 s beside other test runs.
TIMEOUT = 420


@pytest.fixture(scope="module")
def mirrored() -> dict:
    """tests/mirrored_check.py's findings (it splits the CPU into two devices before TF starts)."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "mirrored_check.py")], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_mirrored_weights_equal_single_device_after_50_steps(mirrored):
    assert len(mirrored["parity"]) == 6
    modes = set()
    for case in mirrored["parity"]:
        dtype, mode = case["case"][0], case["case"][1]
        modes.add(mode)
        assert case["replicas"] == 2
        assert case["steps"] == [50, 50]
        assert case["copies_equal"], f"replica copies drifted apart in {case['case']}"
        assert case["rel"] <= TOL[dtype], case
    assert modes == {"eager", "graph", "xla", "fused"}


def test_checkpoints_move_between_mirrored_and_single_device(mirrored):
    c = mirrored["checkpoints"]
    assert c["m2s_exact"] and c["s2m_exact"]  # network, standardisation, slots and step, bit for bit
    assert c["m2s_kind"] == "Trainer" and c["s2m_kind"] == "DistributedTrainer"
    assert c["steps"] == [50, 50]
    assert c["m2s_rel"] <= TOL["float32"] and c["s2m_rel"] <= TOL["float32"]


def test_global_batch_smaller_than_replicas_is_refused(mirrored):
    assert mirrored["refusal"] == "batch size: 1 rows cannot be split over 2 replicas; use at least 2"


def test_split_points_cover_the_batch_once():
    from tfscope.core.train.distributed import split_points

    for batch in range(1, 40):
        for replicas in range(1, min(batch, 8) + 1):
            b = split_points(batch, replicas)
            sizes = np.diff(b)
            assert b[0] == 0 and b[-1] == batch and len(sizes) == replicas
            assert sizes.max() - sizes.min() <= 1 and sizes.min() >= 1


def weights_of(run_dir: Path) -> tuple[int, np.ndarray]:
    from tfscope.core.train.run import load_run

    t = load_run(run_dir)
    return t.step, np.concatenate([w.numpy().ravel() for w in t.model.weights]).astype(np.float64)


def single_device(tmp_path: Path, **kw) -> np.ndarray:
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train

    t = train(TrainConfig(**kw), tmp_path / "single").trainer
    return np.concatenate([w.numpy().ravel() for w in t.model.weights]).astype(np.float64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_chief_matches_single_device(tmp_path):
    ports = [free_port(), free_port()]
    out, scratch = tmp_path / "mw", tmp_path / "scratch"
    scratch.mkdir()
    flags = ["--steps", "50", "--target-loss", "0", "--batch-size", "8", "--mode", "xla"]
    procs = []
    try:
        for i in range(2):
            tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": i}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch),
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
            procs.append(subprocess.Popen([sys.executable, "-m", "tfscope", "train", "--out", str(out),
                                           "--strategy", "multiworker", *flags], env=env, cwd=ROOT,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:  # reap both, whatever happened
            if p.poll() is None:
                p.kill()
            p.wait()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    step, chief = weights_of(out)
    assert step == 50
    ref = single_device(tmp_path, steps=50, target_loss=0, batch_size=8, mode="xla")
    assert np.max(np.abs(chief - ref)) / np.max(np.abs(ref)) <= TOL["float32"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "history.csv", "loss.png",
                                                     "metrics.json"]
    assert list(scratch.iterdir()) == []  # the other worker's private copy is gone


def test_cli_mirrored_two_devices(tmp_path):
    out = tmp_path / "run"
    proc = tfscope("train", "--out", str(out), "--strategy", "mirrored", "--devices", "2", "--steps", "50",
                   "--target-loss", "0", "--batch-size", "8", "--mode", "fused", timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped:    steps after 50 steps" in proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["strategy"], cfg["devices"]) == ("mirrored", 2)
    step, w = weights_of(out)
    ref = single_device(tmp_path, steps=50, target_loss=0, batch_size=8, mode="fused")
    assert step == 50 and np.max(np.abs(w - ref)) / np.max(np.abs(ref)) <= TOL["float32"]


@pytest.mark.parametrize("flags, message", [
    (["--strategy", "nope"], "argument --strategy: invalid choice: 'nope'"),
    (["--devices", "0"], "argument --devices: must be a whole number >= 1, got 0"),
    (["--devices", "2"], "devices: 2 devices need a strategy"),
    (["--strategy", "multiworker"], "strategy multiworker: TF_CONFIG is not set"),
])
def test_cli_bad_distribution_flags(tmp_path, flags, message):
    out = tmp_path / "run"
    env = {"TF_CONFIG": ""}
    proc = tfscope("train", "--out", str(out), *flags, timeout=TIMEOUT, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfscope: error: ") and message in lines[0], proc.stderr
    assert not out.exists()

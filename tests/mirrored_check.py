"""Runs in its own process for tests/test_distributed.py: MirroredStrategy over two logical CPUs
needs the CPU split before TensorFlow initialises, which the pytest process cannot promise.

Prints one JSON object: per case the relative weight difference to the single-device Trainer,
whether the replicas' copies are identical, and the checkpoint round trips in both directions.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tfscope.core.train import distributed

STRATEGY = distributed.make_strategy("mirrored", 2)  # first: before any other TensorFlow op

import numpy as np  # noqa: E402

from tfscope.core.config import TrainConfig  # noqa: E402
from tfscope.core.data import tables as data_mod  # noqa: E402
from tfscope.core.errors import ConfigError  # noqa: E402
from tfscope.core.train.checkpoints import Checkpointer  # noqa: E402
from tfscope.core.train.distributed import DistributedTrainer  # noqa: E402
from tfscope.core.train.run import load_run, train  # noqa: E402
from tfscope.core.train.trainer import Trainer  # noqa: E402

STEPS = 50
# (dtype, mode, optimizer, batch size, learning rate): full batch splits the 19 rows 10/9, batch 8
# splits 4/4 and shuffles. Every case stays finite for 50 steps (momentum at lr 0.05 on batches of 8
# diverges, on one device as well).
CASES = [("float32", "xla", "adam", 8, 0.05), ("float32", "fused", "sgd", 0, 0.05),
         ("float32", "graph", "momentum", 8, 0.01), ("float64", "fused", "adam", 8, 0.05),
         ("float64", "xla", "sgd", 0, 0.05), ("float64", "eager", "momentum", 0, 0.05)]


def flat(variables) -> np.ndarray:
    return np.concatenate([np.asarray(v).ravel() for v in variables]).astype(np.float64)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest weight difference relative to the largest weight of the network."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def run_to(trainer: Trainer, steps: int) -> Trainer:
    while trainer.step < steps:
        if trainer.run_chunk(steps - trainer.step).stopped:
            raise RuntimeError(f"stopped early at step {trainer.step}")
    return trainer


def config(dtype: str, mode: str, optimizer: str, batch: int, lr: float = 0.05, **kw) -> TrainConfig:
    return TrainConfig(steps=STEPS, mode=mode, dtype=dtype, optimizer=optimizer, batch_size=batch,
                       learning_rate=lr, target_loss=0.0, **kw)


def parity() -> list[dict]:
    out = []
    for dtype, mode, optimizer, batch, lr in CASES:
        data = data_mod.load(None, dtype=dtype)
        single = run_to(Trainer(config(dtype, mode, optimizer, batch, lr), data), STEPS)
        dist = run_to(DistributedTrainer(config(dtype, mode, optimizer, batch, lr, strategy="mirrored", devices=2),
                                         data, STRATEGY), STEPS)
        copies = [flat([dist.replica_values(w)[r] for w in dist.model.weights]) for r in range(2)]
        out.append({"case": [dtype, mode, optimizer, batch], "steps": [single.step, dist.step],
                    "replicas": dist.replicas, "rel": rel(copies[0], flat(single.model.weights)),
                    "copies_equal": bool(np.array_equal(copies[0], copies[1]))})
    return out


def state(trainer: Trainer) -> np.ndarray:
    slots = [v for vs in trainer.optimizer.slots.values() for v in vs]
    return flat([*trainer.model.weights, *trainer.model.norm.variables, *slots, trainer.optimizer.iterations])


def checkpoints(root: Path) -> dict:
    """Mirrored -> single device and single device -> mirrored, each checked twice: the restored
    state bit for bit, and the resumed run against an uninterrupted single-device run."""
    kw = dict(dtype="float32", mode="xla", optimizer="adam", batch=8)
    whole = run_to(Trainer(config(**kw), data_mod.load(None)), STEPS)

    half = config(**kw, strategy="mirrored", devices=2)
    half.steps = 30
    written = train(half, root / "m2s").trainer  # a DistributedTrainer
    restored = load_run(root / "m2s")  # a plain Trainer on one device
    m2s_exact = bool(np.array_equal(state(written), state(restored))) and restored.step == 30
    m2s = train(config(**kw), root / "m2s", resume=True).trainer

    half = config(**kw)
    half.steps = 30
    written = train(half, root / "s2m").trainer
    probe = DistributedTrainer(config(**kw, strategy="mirrored", devices=2), data_mod.load(None), STRATEGY)
    Checkpointer(root / "s2m", probe.model, probe.optimizer).restore_latest()
    s2m_exact = probe.step == 30 and all(
        np.array_equal(state(written), flat([*(probe.replica_values(v)[r] for v in probe.model.weights),
                                            *probe.model.norm.variables,
                                            *(probe.replica_values(v)[r] for vs in probe.optimizer.slots.values()
                                              for v in vs), probe.optimizer.iterations]))
        for r in range(2))
    s2m = train(config(**kw, strategy="mirrored", devices=2), root / "s2m", resume=True).trainer
    return {"m2s_exact": m2s_exact, "s2m_exact": bool(s2m_exact), "m2s_kind": type(m2s).__name__,
            "s2m_kind": type(s2m).__name__, "m2s_rel": rel(flat(m2s.model.weights), flat(whole.model.weights)),
            "s2m_rel": rel(flat(s2m.model.weights), flat(whole.model.weights)), "steps": [m2s.step, s2m.step]}


def refusal() -> str:
    try:
        DistributedTrainer(config("float32", "xla", "sgd", 1, strategy="mirrored", devices=2),
                           data_mod.load(None), STRATEGY)
    except ConfigError as e:
        return str(e)
    return ""


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        result = {"parity": parity(), "checkpoints": checkpoints(Path(tmp)), "refusal": refusal()}
    json.dump(result, sys.stdout)

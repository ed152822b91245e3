"""The seeded inputs every runtime is run on, saved as inputs.npz so a mismatch can be replayed.

Sets (each an array of shape (batch, n_in) in the network's dtype, in this order):
  train          the training rows
  range_1/7/1024 uniform rows inside the training range (per feature min..max), batch 1, 7, 1024
  beyond_1024    uniform rows in the range widened ten times about its centre
  zeros          a batch of 7 all-zero rows
  large          rows of magnitude 1e3 .. 1e6 with mixed signs
Image-shaped inputs (batch, H, W, C) get the training rows plus core/sources/feeds' generated
sets (batch_1, batch_7, batch_64: uniform inside the training range), each of shape (batch, H, W, C).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUTS = "inputs.npz"
SEED = 20240611


def make_inputs(x_train: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """The input sets for a network trained on `x_train` (rows, n_in), in its dtype."""
    x_train = np.asarray(x_train)
    dtype = x_train.dtype
    if x_train.ndim > 2:
        from tfscope.core.sources import feeds

        spec = feeds.InputSpec("x", dtype.name, (None, *x_train.shape[1:]))
        lo, hi = float(x_train.min()), float(x_train.max())
        generated = feeds.generate([spec], ranges={"x": (lo, hi if hi > lo else lo + 1.0)}, seed=seed)
        sets = {"train": x_train, **{name: f["x"] for name, f in generated.items()}}
        return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in sets.items()}
    rng = np.random.default_rng(seed)
    n = x_train.shape[1]
    lo, hi = x_train.min(0).astype(np.float64), x_train.max(0).astype(np.float64)  # (n_in,)
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1.0)
    sets = {"train": x_train}
    for batch in (1, 7, 1024):
        sets[f"range_{batch}"] = rng.uniform(lo, np.where(hi > lo, hi, lo + 1.0), size=(batch, n))
    sets["beyond_1024"] = rng.uniform(centre - 10 * half, centre + 10 * half, size=(1024, n))
    sets["zeros"] = np.zeros((7, n))
    magnitudes = 10.0 ** rng.integers(3, 7, size=(7, n))
    sets["large"] = magnitudes * rng.choice([-1.0, 1.0], size=(7, n))
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in sets.items()}


def save_inputs(path: Path, sets: dict[str, np.ndarray]) -> None:
    np.savez(path, **sets)


def load_inputs(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def save_feed_sets(path: Path, sets: dict[str, dict[str, np.ndarray]]) -> None:
    """Named feed sets {set: {input: array}} (core.sources.feeds.generate) as one npz, keys 'set/input'."""
    np.savez(path, **{f"{s}/{name}": a for s, feeds in sets.items() for name, a in feeds.items()})


def load_feed_sets(path: Path, input_name: str = "x") -> dict[str, dict[str, np.ndarray]]:
    """{set: {input: array}} from either kind of inputs.npz: 'set/input' keys (an export of any
    model), or one array per set (a tfscope run's export, whose one input is `input_name`)."""
    sets: dict[str, dict[str, np.ndarray]] = {}
    for key, a in load_inputs(path).items():
        s, sep, name = key.partition("/")
        sets.setdefault(s, {})[name if sep else input_name] = a
    return sets

"""The held-out split (`--val-fraction`): seeded, and stratified for classification (each class
gives the same share of its rows, at least one row stays in training), so a run and its reload
hold out the same rows."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfscope.core.data.tables import Dataset
from tfscope.core.errors import DataError


def held_out(data: Dataset, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out rows."""
    rng = np.random.default_rng([seed, 0x5EED])  # its own stream: the weights' seed draws nothing here
    if data.classes:
        groups = [np.flatnonzero(data.z[:, 0] == k) for k in range(len(data.classes))]
    else:
        groups = [np.arange(data.rows)]
    picked = []
    for rows in groups:
        n = min(int(round(fraction * len(rows))), len(rows) - 1)
        picked.append(rng.permutation(rows)[:n])
    out = np.sort(np.concatenate(picked)).astype(np.int64)
    if fraction > 0 and len(out) == 0:
        raise DataError(f"{data.source}: --val-fraction {fraction:g} of {data.rows} rows holds out no row")
    return out


def split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """(training rows, held-out rows) of `data`; (data, None) when `fraction` is 0."""
    if fraction <= 0:
        return data, None
    val = held_out(data, fraction, seed)
    keep = np.setdiff1d(np.arange(data.rows), val)
    part = lambda rows: dataclasses.replace(data, x=data.x[rows], z=data.z[rows])  # noqa: E731
    return part(keep), part(val)

"""Class labels for `--task classify`: integers, or names mapped to indices in sorted order.

Labels are whole numbers (sorted numerically: 0, 1, 10 ...) or, when any label is not a number,
names (sorted as text). A number that is not whole (2.5) is refused: it is a regression target, not
a class. The result is (index of each row's class, the class labels in index order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfscope.core.data.tables import NUMBER
from tfscope.core.errors import DataError


def _name(v: float) -> str:
    return str(int(v))


def from_cells(cells: Sequence[str], where: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices and labels from text cells; `where[i]` names cell i for messages
    (e.g. "iris.csv: row 7, column 'species'")."""
    cells = [c.strip() for c in cells]
    for c, w in zip(cells, where):
        if not c:
            raise DataError(f"{w}: empty class label")
    if all(NUMBER.fullmatch(c) for c in cells):
        values = np.array([float(c) for c in cells])
        return from_numbers(values, where)
    classes = tuple(sorted(set(cells)))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[c] for c in cells], np.int64), classes


def from_numbers(values: np.ndarray, where: Sequence[str] | str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices and labels from numeric labels, which must be finite whole numbers."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    bad = ~np.isfinite(values) | (values != np.round(values)) if values.dtype.kind == "f" else np.zeros(0, bool)
    if bad.any():
        i = int(np.argmax(bad))
        at = where[i] if not isinstance(where, str) else f"{where}[{i}]"
        raise DataError(f"{at}: {values[i]:g} is not a class label (--task classify takes whole numbers "
                        "or names; a fractional value is a regression target)")
    keys = np.unique(values)
    return np.searchsorted(keys, values).astype(np.int64), tuple(_name(v) for v in keys)


def from_array(y: np.ndarray, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices and labels from an array of numbers or of strings (an npz's `y`)."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind in "US":
        names = [str(v) for v in y]
        return from_cells(names, [f"{source}: y[{i}]" for i in range(len(names))])
    if y.dtype.kind not in "iufb":
        raise DataError(f"{source}: y has dtype {y.dtype}; class labels are numbers or strings")
    return from_numbers(y, f"{source}: y")


def check(indices: np.ndarray, classes: tuple[str, ...], source: str, column: str) -> None:
    """At least two classes, and fewer classes than rows (a class per row teaches nothing)."""
    if len(classes) < 2:
        raise DataError(f"{source}: {column} holds one class ({classes[0]!r}); classification needs at least 2")
    if len(classes) >= len(indices):
        raise DataError(f"{source}: {column} has {len(classes)} classes in {len(indices)} rows; "
                        "classification needs more rows than classes")

"""Tabular data: the lecture's built-in rows and CSV files with a header row.

Every problem raises DataError with one line naming the file, row (as the file numbers it,
header = row 1) and column at fault.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from core.errors import DataError

BUILTIN = "lecture"
DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Dataset:
    """Features x (rows, n_in) and targets z (rows, n_out) as float arrays, with their names."""

    x: np.ndarray
    z: np.ndarray
    features: tuple[str, ...]
    targets: tuple[str, ...]
    source: str

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


def _column_index(header: list[str], col: str | int, source: str, what: str) -> int:
    if isinstance(col, int) or (isinstance(col, str) and col.lstrip("-").isdigit() and col not in header):
        i = int(col)
        if not -len(header) <= i < len(header):
            raise DataError(f"{source}: {what} column {i} is out of range (the header has {len(header)} columns)")
        return i % len(header)
    if col not in header:
        raise DataError(f"{source}: {what} column {col!r} is not in the header ({', '.join(header)})")
    return header.index(col)


def parse_table(text: str, source: str) -> tuple[list[str], np.ndarray]:
    """Header names and a finite float64 matrix (rows, columns) from CSV text with a header row."""
    text = text.lstrip("\ufeff")
    if "\x00" in text:
        raise DataError(f"{source}: not a text CSV file (it contains NUL bytes)")
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{source}: the file is empty (expected a header row and data rows)")
    header = [h.strip() for h in rows[0]]
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"{source}: row 1: column {i + 1} has an empty name")
        if header.index(name) != i:
            raise DataError(f"{source}: row 1: column name {name!r} appears twice")
    values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
    for r, row in enumerate(rows[1:]):
        line = r + 2
        if len(row) != len(header):
            raise DataError(f"{source}: row {line}: has {len(row)} fields, the header has {len(header)}")
        for c, cell in enumerate(row):
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"{source}: row {line}, column {header[c]!r}: {cell.strip()!r} "
                                "is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{source}: row {line}, column {header[c]!r}: {cell.strip()!r} is not finite")
            values[r, c] = v
    return header, values


def parse_csv(text: str, source: str, target: str | int | None = None,
              features: Sequence[str | int] | None = None, dtype: str = "float32") -> Dataset:
    """Parse CSV text (header first) into a Dataset; `target` defaults to the last column and
    `features` to every other column."""
    if dtype not in DTYPES:
        raise DataError(f"dtype: unknown dtype {dtype!r}; choose float32 or float64")
    header, values = parse_table(text, source)
    if len(header) < 2:
        raise DataError(f"{source}: row 1: the header has {len(header)} column; need at least a feature and a target")
    t = _column_index(header, -1 if target is None else target, source, "target")
    if features is None:
        f = [i for i in range(len(header)) if i != t]
    else:
        f = [_column_index(header, c, source, "feature") for c in features]
        if not f:
            raise DataError(f"{source}: no feature columns chosen")
        if t in f:
            raise DataError(f"{source}: column {header[t]!r} is both a feature and the target")
        if len(set(f)) != len(f):
            raise DataError(f"{source}: a feature column is chosen twice")
    if values.shape[0] < 2:
        raise DataError(f"{source}: has {values.shape[0]} data row(s); need at least 2")
    np_dtype = DTYPES[dtype]
    x = values[:, f].astype(np_dtype)
    z = values[:, [t]].astype(np_dtype)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(z))):
        raise DataError(f"{source}: a value overflows {dtype}")
    return Dataset(x, z, tuple(header[i] for i in f), (header[t],), source)


def read_text(path: str | Path) -> str:
    """A file's UTF-8 text, or DataError naming the file: missing, a directory, unreadable, not UTF-8."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a CSV file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (bad byte at offset {e.start})") from None


def load_features(path: str | Path, names: Sequence[str], dtype: str = "float32") -> np.ndarray:
    """Rows to predict on: the columns called `names` when the header has them all, else every
    column when there are exactly len(names) of them."""
    header, values = parse_table(read_text(path), str(path))
    if all(n in header for n in names):
        cols = [header.index(n) for n in names]
    elif len(header) == len(names):
        cols = list(range(len(header)))
    else:
        raise DataError(f"{path}: needs the columns {', '.join(names)} (or exactly {len(names)} columns)")
    if values.shape[0] == 0:
        raise DataError(f"{path}: has no data rows")
    return values[:, cols].astype(DTYPES[dtype])


def load_csv(path: str | Path, target: str | int | None = None,
             features: Sequence[str | int] | None = None, dtype: str = "float32") -> Dataset:
    """Load a UTF-8 CSV file (with or without byte-order mark) with a header row."""
    return parse_csv(read_text(path), str(path), target, features, dtype)


def _builtin_text() -> str:
    return resources.files("core").joinpath("builtin", "lecture.csv").read_text(encoding="utf-8")


def builtin(dtype: str = "float32") -> Dataset:
    """The lecture's 19 rows, made by z = 2x + 3y + 2 (the file keeps the lecture's byte-order mark)."""
    return parse_csv(_builtin_text(), BUILTIN, dtype=dtype)


def load(source: str | None = None, target: str | int | None = None,
         features: Sequence[str | int] | None = None, dtype: str = "float32") -> Dataset:
    """The built-in lecture data when `source` is None or "lecture", else the CSV at that path."""
    if source in (None, BUILTIN):
        return parse_csv(_builtin_text(), BUILTIN, target, features, dtype)
    return load_csv(source, target, features, dtype)


def least_squares(data: Dataset) -> np.ndarray:
    """Ordinary least squares in float64: coefficients of each feature, then the intercept."""
    a = np.hstack([data.x.astype(np.float64), np.ones((data.rows, 1))])
    coef, *_ = np.linalg.lstsq(a, data.z.astype(np.float64), rcond=None)
    return coef[:, 0]

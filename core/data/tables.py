"""Tabular data: the lecture's built-in rows and CSV files with a header row.

Every problem raises DataError with one line naming the file, row (the file's line number, as an
editor shows it: blank lines count; the header is usually line 1) and column at fault. Cells must be
plain decimal numbers; any line ending (LF, CRLF, CR) is accepted.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tfscope.core.errors import DataError

BUILTIN = "lecture"
DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass(frozen=True)
class Dataset:
    """Features x (rows, n_in), or images (rows, H, W, C), and targets z (rows, n_out) as float
    arrays, with their names. A classification data set's z is the class index (rows, 1) and
    `classes` holds the original labels in index order; a regression one's `classes` is empty."""

    x: np.ndarray
    z: np.ndarray
    features: tuple[str, ...]
    targets: tuple[str, ...]
    source: str
    classes: tuple[str, ...] = ()

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


# A number as a CSV cell writes it: optional sign, decimal digits with an optional point and exponent
# (float() alone would also take "1_000", non-ASCII digits and "nan"/"inf").
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _show(cell: str, limit: int = 40) -> str:
    """A cell for an error message: stripped, quoted, cut short if long."""
    cell = cell.strip()
    return repr(cell) if len(cell) <= limit else repr(cell[:limit]) + f"... ({len(cell):,} characters)"


def _line_of(text: str, index: int) -> int:
    """1-based line number of character `index` of `text` (lines already normalised to \\n)."""
    return text.count("\n", 0, index) + 1


def _records(text: str, source: str) -> list[tuple[int, list[str]]]:
    """(line where the record starts, its fields) for every CSV record with a non-blank cell."""
    reader = csv.reader(io.StringIO(text))
    out = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return out
        except csv.Error as e:  # e.g. a cell over the csv module's field size limit
            raise DataError(f"{source}: row {start}: not readable as CSV ({e})") from None
        if any(cell.strip() for cell in row):
            out.append((start, row))


def _parse(text: str, source: str, label: str | int | None | bool = False
           ) -> tuple[list[str], np.ndarray, list[int]] | tuple[list[str], np.ndarray, list[int], int, list[str]]:
    """Header names, a finite float64 matrix (rows, columns), and each data row's line in the file.
    With `label` (a target column, None = the last) that column is kept as text instead (its
    matrix cells are NaN), and its index and cells are returned too."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")  # any line ending
    if "\x00" in text:
        raise DataError(f"{source}: row {_line_of(text, text.index(chr(0)))}: not a text CSV file "
                        "(it contains NUL bytes)")
    records = _records(text, source)
    if not records:
        raise DataError(f"{source}: the file is empty (expected a header row and data rows)")
    head_line, head = records[0]
    header = [h.strip() for h in head]
    for i, name in enumerate(header):
        if not name:
            raise DataError(f"{source}: row {head_line}: column {i + 1} has an empty name")
        if header.index(name) != i:
            raise DataError(f"{source}: row {head_line}: column name {_show(name)} appears twice")
    keep = -1 if label is False else _column_index(header, -1 if label is None else label, source, "target")
    values = np.empty((len(records) - 1, len(header)), dtype=np.float64)
    texts = []
    for r, (line, row) in enumerate(records[1:]):
        if len(row) != len(header):
            raise DataError(f"{source}: row {line}: has {len(row)} fields, the header has {len(header)}")
        for c, cell in enumerate(row):
            if c == keep:
                texts.append(cell)
                values[r, c] = np.nan
                continue
            where = f"{source}: row {line}, column {header[c]!r}: {_show(cell)}"
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"{where} is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{where} is not finite")
            if not NUMBER.fullmatch(cell.strip()):
                raise DataError(f"{where} is not a plain decimal number")
            values[r, c] = v
    lines = [line for line, _ in records[1:]]
    if label is False:
        return header, values, lines
    return header, values, lines, keep, texts


def parse_table(text: str, source: str) -> tuple[list[str], np.ndarray]:
    """Header names and a finite float64 matrix (rows, columns) from CSV text with a header row."""
    header, values, _ = _parse(text, source)
    return header, values


def parse_csv(text: str, source: str, target: str | int | None = None,
              features: Sequence[str | int] | None = None, dtype: str = "float32", task: str = "regress") -> Dataset:
    """Parse CSV text (header first) into a Dataset; `target` defaults to the last column and
    `features` to every other column. With `task` "classify" the target column holds class
    labels (core/data/labels.py) and z the class index."""
    if dtype not in DTYPES:
        raise DataError(f"dtype: unknown dtype {dtype!r}; choose float32 or float64")
    classes: tuple[str, ...] = ()
    if task == "classify":
        from tfscope.core.data import labels

        header, values, lines, t_col, texts = _parse(text, source, target)
        where = [f"{source}: row {line}, column {header[t_col]!r}" for line in lines]
        index, classes = labels.from_cells(texts, where)
        values[:, t_col] = index
    else:
        header, values, lines = _parse(text, source)
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
    too_big = np.abs(values[:, [*f, t]]) > np.finfo(np_dtype).max  # (rows, used columns)
    if too_big.any():
        r, c = np.argwhere(too_big)[0]
        col = [*f, t][c]
        raise DataError(f"{source}: row {lines[r]}, column {header[col]!r}: "
                        f"{float(values[r, col]):g} overflows {dtype}")
    if classes:
        from tfscope.core.data import labels

        labels.check(values[:, t], classes, source, f"column {header[t]!r}")
    x = values[:, f].astype(np_dtype)
    z = values[:, [t]].astype(np_dtype)
    return Dataset(x, z, tuple(header[i] for i in f), (header[t],), source, classes)


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
        before = raw[: e.start].decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        raise DataError(f"{p}: row {_line_of(before, len(before))}: not UTF-8 text "
                        f"(byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def load_features(path: str | Path, names: Sequence[str], dtype: str = "float32") -> np.ndarray:
    """Rows to predict on: the columns called `names` when the header has them all, else every
    column when there are exactly len(names) of them."""
    header, values, lines = _parse(read_text(path), str(path))
    if all(n in header for n in names):
        cols = [header.index(n) for n in names]
    elif len(header) == len(names):
        cols = list(range(len(header)))
    else:
        raise DataError(f"{path}: needs the columns {', '.join(names)} (or exactly {len(names)} columns)")
    if values.shape[0] == 0:
        raise DataError(f"{path}: has no data rows")
    too_big = np.abs(values[:, cols]) > np.finfo(DTYPES[dtype]).max  # (rows, len(names))
    if too_big.any():
        r, c = np.argwhere(too_big)[0]
        raise DataError(f"{path}: row {lines[r]}, column {header[cols[c]]!r}: "
                        f"{float(values[r, cols[c]]):g} overflows {dtype}")
    return values[:, cols].astype(DTYPES[dtype])


def load_csv(path: str | Path, target: str | int | None = None,
             features: Sequence[str | int] | None = None, dtype: str = "float32", task: str = "regress") -> Dataset:
    """Load a UTF-8 CSV file (with or without byte-order mark) with a header row."""
    return parse_csv(read_text(path), str(path), target, features, dtype, task)


def _builtin_text() -> str:
    return resources.files("tfscope.core.data").joinpath("builtin", "lecture.csv").read_text(encoding="utf-8")


def builtin(dtype: str = "float32") -> Dataset:
    """The lecture's 19 rows, made by z = 2x + 3y + 2 (the file keeps the lecture's byte-order mark)."""
    return parse_csv(_builtin_text(), BUILTIN, dtype=dtype)


def load(source: str | None = None, target: str | int | None = None,
         features: Sequence[str | int] | None = None, dtype: str = "float32", task: str = "regress") -> Dataset:
    """The built-in lecture data when `source` is None or "lecture", the built-in digits images for
    "digits", an npz of images for a path ending .npz (core/data/images.py), else the CSV there."""
    if source in (None, BUILTIN):
        return parse_csv(_builtin_text(), BUILTIN, target, features, dtype, task)
    if source == "digits" or str(source).endswith(".npz"):
        from tfscope.core.data import images

        return images.load(source, dtype, task)
    return load_csv(source, target, features, dtype, task)


def least_squares(data: Dataset) -> np.ndarray:
    """Ordinary least squares in float64: coefficients of each feature, then the intercept."""
    a = np.hstack([data.x.astype(np.float64), np.ones((data.rows, 1))])
    coef, *_ = np.linalg.lstsq(a, data.z.astype(np.float64), rcond=None)
    return coef[:, 0]

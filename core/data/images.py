"""Image data: `--data FILE.npz` (arrays `x`: (N, H, W, C) images or (N, F) rows, and `y`) and the
built-in 8x8 handwritten digits (`--data digits`: 1,797 images, 10 classes; builtin/digits.csv.gz,
CC BY 4.0, see builtin/digits.LICENSE.txt).

Every problem is one DataError line naming the file and the array at fault. Numpy only: a bad
file is refused before TensorFlow loads.
"""

from __future__ import annotations

import gzip
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np

from tfscope.core.data import labels
from tfscope.core.data.tables import DTYPES, Dataset
from tfscope.core.errors import DataError

DIGITS = "digits"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (1797, 8, 8, 1) pixel counts in 0..16 and (1797,) digits, both int64."""
    raw = resources.files("tfscope.core.data").joinpath("builtin", "digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    return table[:, :64].reshape(-1, 8, 8, 1), table[:, 64]  # (1797, 8, 8, 1), (1797,)


def from_arrays(x: np.ndarray, y: np.ndarray, source: str, dtype: str = "float32", task: str = "regress") -> Dataset:
    """A Dataset from images (N, H, W, C) or rows (N, F) and their targets (N,) or (N, k)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim not in (2, 4):
        hint = " (add a channel axis: x[..., None])" if x.ndim == 3 else ""
        raise DataError(f"{source}: x has shape {x.shape}; images need rank 4 (N, H, W, C), rows rank 2 (N, F){hint}")
    if x.dtype.kind not in "iufb":
        raise DataError(f"{source}: x has dtype {x.dtype}; it must hold numbers")
    if min(x.shape) < 1:
        raise DataError(f"{source}: x has shape {x.shape}; every dimension must be >= 1")
    if y.ndim == 0 or len(y) != len(x):
        raise DataError(f"{source}: x has {len(x)} rows but y has {y.shape[0] if y.ndim else 'no'} "
                        "(their first dimensions must match)")
    if len(x) < 2:
        raise DataError(f"{source}: has {len(x)} row(s); need at least 2")
    xf = x.astype(np.float64)
    if not np.isfinite(xf).all():
        i = np.argwhere(~np.isfinite(xf))[0]
        raise DataError(f"{source}: x[{', '.join(map(str, i))}] is not finite")
    if (np.abs(xf) > np.finfo(DTYPES[dtype]).max).any():
        raise DataError(f"{source}: x has values that overflow {dtype}")
    np_dtype = DTYPES[dtype]
    features = ("x",) if x.ndim == 4 else tuple(f"x{i}" for i in range(x.shape[1]))
    if task == "classify":
        if y.ndim > 1 and y.shape[1:] != (1,):
            raise DataError(f"{source}: y has shape {y.shape}; class labels need one per row, (N,) or (N, 1)")
        index, classes = labels.from_array(y, source)
        labels.check(index, classes, source, "y")
        return Dataset(xf.astype(np_dtype), index.reshape(-1, 1).astype(np_dtype), features, ("y",), source, classes)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{source}: y has dtype {y.dtype}; regression targets must be numbers")
    yf = y.astype(np.float64).reshape(len(y), -1)  # (N, n_out)
    if not np.isfinite(yf).all():
        raise DataError(f"{source}: y row {int(np.argwhere(~np.isfinite(yf))[0][0])} is not finite")
    targets = ("y",) if yf.shape[1] == 1 else tuple(f"y{i}" for i in range(yf.shape[1]))
    return Dataset(xf.astype(np_dtype), yf.astype(np_dtype), features, targets, source)


def load_npz(path: str | Path, dtype: str = "float32", task: str = "regress") -> Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not an npz file")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k in ("x", "y")}
            names = list(f.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(f"{p}: not a readable npz file ({why})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{p}: no array {missing[0]!r} (the file has: {', '.join(names) or 'nothing'}); "
                        "an image file holds x (N, H, W, C) and y (N,)")
    return from_arrays(arrays["x"], arrays["y"], str(p), dtype, task)


def load_inputs(path: str | Path, in_shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """An npz's `x` to predict on: it must hold rows of `in_shape` (a `y`, if present, is ignored)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as f:
            if "x" not in f.files:
                raise KeyError("x")
            x = f["x"]
    except KeyError:
        raise DataError(f"{p}: no array 'x' (the inputs to predict on)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, AttributeError, TypeError) as e:
        raise DataError(f"{p}: not a readable npz file ({type(e).__name__})") from None
    if tuple(x.shape[1:]) != tuple(in_shape) or x.dtype.kind not in "iufb":
        want = ", ".join(map(str, in_shape))
        raise DataError(f"{p}: x has shape {x.shape} ({x.dtype}); the network takes (N, {want})")
    if not np.isfinite(x.astype(np.float64)).all():
        raise DataError(f"{p}: x is not finite everywhere")
    return x.astype(DTYPES[dtype])


def load(source: str, dtype: str = "float32", task: str = "regress") -> Dataset:
    """The built-in digits (`source` "digits") or an npz file."""
    if source == DIGITS:
        x, y = digits_arrays()
        return from_arrays(x, y, DIGITS, dtype, task)
    return load_npz(source, dtype, task)

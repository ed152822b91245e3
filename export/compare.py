"""Polygraphy's comparison rules for one output of one runtime against the reference.

An element fails only where |got - ref| > atol AND |got - ref| / |ref| > rtol; NaN always fails
(in either array); infinities match only an equal infinity. Shapes and dtypes are checked apart
from values. The minimum passing tolerances are reported as Polygraphy does: the atol that alone
would pass (rtol = 0) is the largest absolute error, the rtol that alone would pass is the largest
relative error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


@dataclass
class Comparison:
    runtime: str  # the runtime compared with the reference (live eager)
    input: str  # the name of the input set in inputs.npz
    output: str  # the output name (z, or a stage name in a localisation)
    ref_shape: list[int]
    got_shape: list[int]
    ref_dtype: str
    got_dtype: str
    shape_ok: bool
    dtype_ok: bool
    elements: int
    max_abs: float  # largest absolute error over comparable elements
    mean_abs: float
    median_abs: float
    max_rel: float  # largest |got - ref| / |ref|; inf where ref is 0 and got is not
    min_atol: float  # smallest atol that passes with rtol = 0 (inf when any NaN)
    min_rtol: float  # smallest rtol that passes with atol = 0 (inf when any NaN)
    nan_ref: int
    nan_got: int
    inf_ref: int
    inf_got: int
    failed_elements: int
    first_failed_row: int | None  # the first input row holding a failing element
    atol: float
    rtol: float
    passed: bool

    def to_dict(self) -> dict:
        return {k: _json_number(v) for k, v in dataclasses.asdict(self).items()}

    def why(self) -> str:
        """What fails, in one clause list: shape, dtype, NaN, and the elements beyond the tolerances
        with the smallest tolerances that would pass; the one wording verify, JUnit and
        tfscope.testing give."""
        why = []
        if not self.shape_ok:
            why.append(f"shape {self.got_shape} != {self.ref_shape}")
        if not self.dtype_ok:
            why.append(f"dtype {self.got_dtype} != {self.ref_dtype}")
        if self.nan_got or self.nan_ref:
            why.append(f"{self.nan_got + self.nan_ref} NaN")
        if self.shape_ok and self.failed_elements:
            why.append(f"{self.failed_elements} of {self.elements} element(s) beyond atol {self.atol:g} and rtol "
                       f"{self.rtol:g} (first at row {self.first_failed_row}), max abs {self.max_abs:.3g}, max rel "
                       f"{self.max_rel:.3g}; passing would need atol {self.min_atol:.3g} or rtol {self.min_rtol:.3g}")
        return "; ".join(why or ["failed"])


def _json_number(v):
    """JSON has no inf or NaN: write them as strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def errors(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(abs error, rel error, NaN mask) elementwise in float64; equal infinities have error 0."""
    r, g = ref.astype(np.float64), got.astype(np.float64)
    nan = np.isnan(r) | np.isnan(g)
    same = (r == g) | nan  # equal values, equal infinities; NaN handled by the mask
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        abs_err = np.where(same, 0.0, np.abs(g - r))
        rel_err = np.where(same, 0.0, abs_err / np.abs(r))
    return abs_err, np.nan_to_num(rel_err, nan=np.inf), nan


def compare(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, runtime: str = "",
            input: str = "", output: str = "z") -> Comparison:
    """Compare `got` with `ref` under (atol, rtol); see the module docstring for the rules."""
    ref, got = np.asarray(ref), np.asarray(got)
    shape_ok = ref.shape == got.shape
    dtype_ok = ref.dtype == got.dtype
    counts = dict(nan_ref=int(np.isnan(ref).sum()), nan_got=int(np.isnan(got).sum()),
                  inf_ref=int(np.isinf(ref).sum()), inf_got=int(np.isinf(got).sum()))
    base = dict(runtime=runtime, input=input, output=output, ref_shape=list(ref.shape), got_shape=list(got.shape),
                ref_dtype=str(ref.dtype), got_dtype=str(got.dtype), shape_ok=shape_ok, dtype_ok=dtype_ok,
                atol=float(atol), rtol=float(rtol), **counts)
    if not shape_ok:
        nan = math.nan
        return Comparison(**base, elements=0, max_abs=nan, mean_abs=nan, median_abs=nan, max_rel=nan,
                          min_atol=math.inf, min_rtol=math.inf, failed_elements=int(ref.size),
                          first_failed_row=0, passed=False)
    abs_err, rel_err, nan_mask = errors(ref, got)
    fail = nan_mask | ((abs_err > atol) & (rel_err > rtol))
    ok = ~nan_mask
    any_nan = bool(nan_mask.any())
    size = int(ref.size)
    finite_abs, finite_rel = abs_err[ok], rel_err[ok]
    failed_rows = np.argwhere(fail.reshape(ref.shape[0], -1).any(axis=1)) if ref.ndim and size else np.zeros((0, 1))
    return Comparison(
        **base, elements=size,
        max_abs=float(finite_abs.max()) if finite_abs.size else 0.0,
        mean_abs=float(finite_abs.mean()) if finite_abs.size else 0.0,
        median_abs=float(np.median(finite_abs)) if finite_abs.size else 0.0,
        max_rel=float(finite_rel.max()) if finite_rel.size else 0.0,
        min_atol=math.inf if any_nan else (float(finite_abs.max()) if finite_abs.size else 0.0),
        min_rtol=math.inf if any_nan else (float(finite_rel.max()) if finite_rel.size else 0.0),
        failed_elements=int(fail.sum()),
        first_failed_row=int(failed_rows[0, 0]) if len(failed_rows) else None,
        passed=bool(dtype_ok and not fail.any()),
    )


def combine(parts: list[Comparison], refs: list[np.ndarray], gots: list[np.ndarray], input: str = "all"
            ) -> Comparison:
    """One summary over several comparisons of the same runtime (all elements pooled)."""
    first = parts[0]
    if all(p.shape_ok for p in parts):
        pooled = compare(np.concatenate([np.ravel(r) for r in refs]), np.concatenate([np.ravel(g) for g in gots]),
                         first.atol, first.rtol, first.runtime, input, first.output)
    else:
        pooled = next(p for p in parts if not p.shape_ok)
        pooled = dataclasses.replace(pooled, input=input)
    failing = next((p for p in parts if not p.passed), None)
    return dataclasses.replace(
        pooled, ref_shape=[], got_shape=[], shape_ok=all(p.shape_ok for p in parts),
        dtype_ok=all(p.dtype_ok for p in parts), ref_dtype=first.ref_dtype, got_dtype=first.got_dtype,
        first_failed_row=failing.first_failed_row if failing else None,
        passed=all(p.passed for p in parts))

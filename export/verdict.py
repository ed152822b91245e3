"""The verdict on one tensor of one runtime: within what float32 rounding can explain, or not.

Three rules, in order of preference:
  bound     |got - oracle| <= bound elementwise, the bound from export/bounds.py (a proof:
            every correct float32 evaluation lies inside it); `bound_use` = max error / bound.
  fallback  for tensors downstream of an op with no bound rule: max |got - oracle| <=
            FALLBACK_K * max(max |eager - oracle|, u max |oracle|), i.e. within k times
            TensorFlow eager's own float32 error vs float64 (u max|oracle| keeps an exactly
            rounded eager from demanding bit equality). k = 8: measured on Softmax,
            LayerNormalization, LSTM, GRU, attention and exp/log models (inputs N(0, 1) and
            N(0, 100)), XLA's, onnxruntime's and the ONNX reference's error vs float64 stayed
            within 1.52 times eager's own; 8 leaves 5x room.
  fixed     Polygraphy's rule (export/compare.py) against eager at an explicit atol/rtol, when
            the user asks for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from tfscope.export.compare import _json_number, compare, errors

U = 2.0**-24
FALLBACK_K = 8.0


@dataclass
class Judgement:
    runtime: str
    input: str
    output: str
    rule: str  # 'bound', 'fallback (<op> <node>)' or 'fixed (atol A, rtol R)'
    elements: int
    shape_ok: bool
    max_error: float  # max |got - oracle| (float64 oracle), or vs eager under the fixed rule
    max_rel_error: float  # max error / max |oracle|
    bound_use: float  # max over elements of error / allowed error; 1.0 = at the limit
    median_bound_use: float
    allowed_at_worst: float  # the allowed error at the worst element
    worst_index: list[int] | None  # index of the element with the largest bound use
    nan: int  # NaN in got where the oracle has none
    passed: bool
    worst_input: str = ""  # the input set holding the worst element (pooled summaries)

    def to_dict(self) -> dict:
        return {k: _json_number(v) for k, v in dataclasses.asdict(self).items()}

    def why(self, what: str | None = None, oracle: str = "the float64 oracle") -> str:
        """How far the tensor is from the oracle against what its rule allows, in one clause; `what`
        names the tensor (default: its output name). The one wording verify, JUnit and
        tfscope.testing give."""
        what = what or (repr(self.output) if self.output else "its output")
        if not self.shape_ok:
            return f"{what} has the wrong shape"
        where = "" if self.worst_index is None else f" at element {self.worst_index}"
        nan = f", {self.nan} NaN" if self.nan else ""
        limit = "its rounding bound" if self.rule == "bound" else f"what its rule allows ({self.rule})"
        return (f"{what} is {self.max_error:.3g} from {oracle}{nan}, {self.bound_use:.3g} x {limit} "
                f"({self.allowed_at_worst:.3g}{where})")


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)] if shape else []


def judge(got: np.ndarray, oracle: np.ndarray, bound: np.ndarray | None = None, eager: np.ndarray | None = None,
          atol: float | None = None, rtol: float | None = None, fallback: str = "fallback",
          k: float = FALLBACK_K, runtime: str = "", input: str = "", output: str = "") -> Judgement:
    """Judge `got` against the float64 `oracle`: by `bound` when given, else by k times eager's own
    error (`eager` required); with `atol`/`rtol` given, by Polygraphy's fixed rule against `eager`."""
    got, oracle = np.asarray(got), np.asarray(oracle)
    base = dict(runtime=runtime, input=input, output=output)
    if atol is not None or rtol is not None:
        if eager is None:
            raise ValueError("the fixed rule compares with eager: give `eager`")
        c = compare(eager, got, 0.0 if atol is None else atol, 0.0 if rtol is None else rtol, runtime, input, output)
        abs_err, rel_err, _ = errors(np.asarray(eager), got) if c.shape_ok else (None, None, None)
        if c.shape_ok and got.size:
            with np.errstate(divide="ignore", invalid="ignore"):
                use = np.where(abs_err <= c.atol, 0.0, np.minimum(abs_err / max(c.atol, 1e-300),
                               np.where(rel_err <= c.rtol, 0.0, rel_err / max(c.rtol, 1e-300))))
            worst = int(np.argmax(use))
            uses = (float(use.max()), float(np.median(use)), _index(worst, got.shape))
        else:
            uses = (math.inf if not c.passed else 0.0, 0.0, None)
        return Judgement(**base, rule=f"fixed (atol {c.atol:g}, rtol {c.rtol:g})", elements=c.elements,
                         shape_ok=c.shape_ok, max_error=c.max_abs, max_rel_error=c.max_rel, bound_use=uses[0],
                         median_bound_use=uses[1], allowed_at_worst=c.atol, worst_index=uses[2],
                         nan=c.nan_got, passed=c.passed)
    if got.shape != oracle.shape:
        return Judgement(**base, rule="bound" if bound is not None else fallback, elements=0, shape_ok=False,
                         max_error=math.nan, max_rel_error=math.nan, bound_use=math.inf, median_bound_use=math.inf,
                         allowed_at_worst=math.nan, worst_index=None, nan=0, passed=False)
    abs_err, _, nan_mask = errors(oracle, got)
    scale = float(np.max(np.abs(oracle[np.isfinite(oracle)]), initial=0.0))
    if bound is not None:
        allowed = np.broadcast_to(np.asarray(bound, np.float64), got.shape)
        rule = "bound"
    else:
        if eager is None:
            raise ValueError("no bound rule for this tensor: give `eager` for the fallback")
        eager_err, _, eager_nan = errors(oracle, np.asarray(eager))
        own = float(np.max(eager_err[~eager_nan], initial=0.0))
        allowed = np.full(got.shape, k * max(own, U * scale))
        rule = fallback
    with np.errstate(divide="ignore", invalid="ignore"):
        use = np.where((abs_err == 0) | np.isposinf(allowed), 0.0, abs_err / allowed)
    use = np.where(nan_mask & ~np.isnan(oracle), np.inf, np.where(np.isnan(oracle), 0.0, use))
    worst = int(np.argmax(use)) if use.size else 0
    finite = abs_err[~nan_mask]
    max_error = float(finite.max()) if finite.size else 0.0
    return Judgement(
        **base, rule=rule, elements=int(got.size), shape_ok=True, max_error=max_error,
        max_rel_error=max_error / scale if scale else (0.0 if max_error == 0 else math.inf),
        bound_use=float(use.max()) if use.size else 0.0, median_bound_use=float(np.median(use)) if use.size else 0.0,
        allowed_at_worst=float(allowed.flat[worst]) if use.size else 0.0,
        worst_index=_index(worst, got.shape) if use.size else None,
        nan=int((nan_mask & ~np.isnan(oracle)).sum()), passed=bool(use.size == 0 or use.max() <= 1.0))


def pooled(parts: list[Judgement], input: str = "all") -> Judgement:
    """One summary over several judgements of the same runtime: the worst bound use, the largest error."""
    worst = max(parts, key=lambda j: (not j.passed, j.bound_use))
    return dataclasses.replace(
        worst, input=input, elements=sum(j.elements for j in parts), shape_ok=all(j.shape_ok for j in parts),
        max_error=max(j.max_error for j in parts), max_rel_error=max(j.max_rel_error for j in parts),
        median_bound_use=float(np.median([j.median_bound_use for j in parts])),
        nan=sum(j.nan for j in parts), passed=all(j.passed for j in parts), worst_input=worst.input)

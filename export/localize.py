"""Per-stage localisation of a mismatch: compare each stage's output (standardised input, each
Dense layer's activation, raw output) of a failing runtime with the live eager network's, on the
failing input, and name the first stage that diverges."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfscope.export.compare import Comparison, compare
from tfscope.export.runtimes import Runtime


@dataclass
class Localisation:
    runtime: str
    input: str
    stages: list[Comparison] = field(default_factory=list)  # in network order
    missing: list[str] = field(default_factory=list)  # stages the runtime does not expose (folded away)
    first_diverging: str | None = None  # the first stage that fails, or None when every stage passes
    judgements: list = field(default_factory=list)  # each stage's rounding-bound check (export/assess.py)

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "input": self.input, "first_diverging": self.first_diverging,
                "missing": self.missing, "stages": [c.to_dict() for c in self.stages],
                "bound_checks": [j.to_dict() for j in self.judgements]}


def localise(reference: Runtime, runtime: Runtime, x: np.ndarray, input_name: str, atol: float,
             rtol: float) -> Localisation:
    """Compare every stage `runtime` exposes with the reference's on the rows `x`."""
    ref = reference.stages(x)
    got = runtime.stages(x)
    loc = Localisation(runtime.name, input_name)
    for stage, r in ref.items():
        if stage not in got:
            loc.missing.append(stage)
            continue
        c = compare(r, got[stage], atol, rtol, runtime.name, input_name, stage)
        loc.stages.append(c)
        if not c.passed and loc.first_diverging is None:
            loc.first_diverging = stage
    return loc


# Deep checks: the scale-aware rule for intermediate tensors. A tensor's error is judged against
# its scale, the largest magnitude among the tensor and the op's computed inputs: float32 rounding
# of a sum of n products is bounded by gamma_n times the magnitudes summed (Higham ch. 3), so an
# absolute error is meaningful only against the size of what was added, not of the result (a
# subtraction that cancels leaves a small result carrying the inputs' rounding). DEEP_RTOL is that
# bound's allowance: 1e-4 x scale for float32 is ~1,700 u, far above what reordering a dot of a few
# thousand terms produces (~sqrt(n) u) and two orders below a 1% change of one weight tensor.
DEEP_RTOL = {"float32": 1e-4, "float64": 1e-10, "float16": 1e-2}


def short(name: str) -> str:
    """A TF/ONNX name without the call wrappers a SavedModel signature adds ('StatefulPartitionedCall/')."""
    while True:
        head, sep, rest = name.partition("/")
        if not sep or head not in ("StatefulPartitionedCall", "PartitionedCall"):
            return name
        name = rest


@dataclass
class TensorCheck:
    """One matched tensor of a deep check: the TF tensor, its ONNX value and the verdict."""

    pair: object  # tensor_map.Pair
    comparison: Comparison
    scale: float

    def to_dict(self) -> dict:
        return {**self.pair.to_dict(), "scale": self.scale, **{k: self.comparison.to_dict()[k] for k in (
            "max_abs", "max_rel", "atol", "rtol", "failed_elements", "shape_ok", "passed")}}


@dataclass
class TensorLocalisation(Localisation):
    """The first diverging operation over every TF tensor matched to an ONNX value (topological
    order), with the tensor counts, so a report never claims a location it did not measure."""

    tf_tensors: int = 0  # TF tensors considered (floating point, computed by an op)
    checks: list[TensorCheck] = field(default_factory=list)  # every matched tensor, topological order
    first: TensorCheck | None = None
    last_agreeing: TensorCheck | None = None
    unmatched: dict = field(default_factory=dict)  # TF tensor -> why it has no ONNX counterpart
    note: str | None = None

    @property
    def matched(self) -> int:
        return len(self.checks)

    @property
    def passed(self) -> bool:
        return self.first is None

    def describe(self) -> str:
        if self.first is None:
            return self.note or f"all {self.matched} matched tensors agree"
        p, c = self.first.pair, self.first.comparison
        line = (f"TF op {short(p.tf_op)} ({p.tf_type}) = ONNX node {short(p.onnx_node)} ({p.onnx_type}): "
                f"max abs {c.max_abs:.3g}, "
                f"max rel {c.max_rel:.3g} (allowed {c.atol:.3g} abs at scale {self.first.scale:.3g})")
        last = self.last_agreeing
        line += f"; last agreeing tensor {short(last.pair.tf_tensor)}" if last else "; no agreeing tensor before it"
        return line + f"; {self.matched} of {self.tf_tensors} TF tensors matched"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "tf_tensors": self.tf_tensors, "matched": self.matched,
                "first": self.first.to_dict() if self.first else None,
                "last_agreeing": self.last_agreeing.to_dict() if self.last_agreeing else None,
                "description": self.describe(), "note": self.note,
                "checks": [c.to_dict() for c in self.checks], "unmatched": self.unmatched}

    def detail(self) -> str:
        """Every compared tensor, one line each (verify --detail)."""
        lines = [f"tensor by tensor ({self.runtime} vs the TF graph on input {self.input!r}; "
                 f"{self.matched} of {self.tf_tensors} TF tensors matched):"]
        for c in self.checks:
            p, cmp = c.pair, c.comparison
            verdict = "pass" if cmp.passed else "FAIL"
            lines.append(f"  {verdict}  {short(p.tf_tensor)} ({p.tf_type}) = {short(p.onnx_value)} "
                         f"({p.onnx_type}{', NCHW' if p.nchw else ''})  max abs {cmp.max_abs:.3g}  "
                         f"scale {c.scale:.3g}")
        return "\n".join(lines)


def localise_tensors(tmap, tf_values: dict[str, np.ndarray], onnx_values: dict[str, np.ndarray], runtime: str,
                     input_name: str, dtype: str, tf_tensors: int) -> TensorLocalisation:
    """Judge every matched tensor by the scale-aware rule (DEEP_RTOL) and name the first that fails."""
    rtol = DEEP_RTOL.get(dtype, DEEP_RTOL["float32"])
    loc = TensorLocalisation(runtime, input_name, tf_tensors=tf_tensors, unmatched=dict(tmap.unmatched))
    for pair in tmap.pairs:
        if pair.tf_tensor not in tf_values or pair.onnx_value not in onnx_values:
            continue
        ref = tf_values[pair.tf_tensor]
        got = pair.onnx_as_tf(np.asarray(onnx_values[pair.onnx_value]))
        mags = [np.abs(ref.astype(np.float64)).max(initial=0.0)]
        for t in tmap.tf_inputs.get(pair.tf_op, []):
            if t in tf_values and tf_values[t].dtype.kind == "f":
                mags.append(np.abs(tf_values[t].astype(np.float64)).max(initial=0.0))
        scale = float(max(mags)) or 1.0
        cmp = compare(ref, got, rtol * scale, rtol, runtime, input_name, pair.tf_tensor)
        check = TensorCheck(pair, cmp, scale)
        loc.checks.append(check)
        if cmp.passed and loc.first is None:
            loc.last_agreeing = check
        elif not cmp.passed and loc.first is None:
            loc.first = check
    if loc.first is not None:
        loc.first_diverging = loc.describe()
        loc.stages = [c.comparison for c in (loc.last_agreeing, loc.first) if c is not None]
    return loc

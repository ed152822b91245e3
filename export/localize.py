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


# Deep checks. A matched tensor is judged by its node's local rounding bound where the reference
# ONNX graph has a rule for it (export/graph_verdict.pair_checks): the ONNX runtime's value within
# the bound of the node evaluated in float64 on that runtime's own inputs, and TensorFlow's within
# TF_SIDE times the bound of the same node seeded with how far TF's inputs are from the runtime's.
# TF evaluates the ops tf2onnx fused (Conv + BiasAdd + an inference BatchNormalization's Mul and
# Add become one Conv with folded weights) separately, and computes at run time the constants the
# converter folded: for the fused Conv that is at most two more roundings per term than the fused
# node's n + 1 (gamma_{n+3} <= 2 gamma_{n+1} for n >= 1), hence 2.
# Elsewhere (an op with no bound rule, or a TF input with no ONNX counterpart) the scale-aware
# rule: a tensor's error is judged against its scale, the largest magnitude among the tensor and
# the op's computed inputs: float32 rounding of a sum of n products is bounded by gamma_n times the
# magnitudes summed (Higham ch. 3), so an absolute error is meaningful only against the size of
# what was added, not of the result (a subtraction that cancels leaves a small result carrying
# the inputs' rounding). DEEP_RTOL is that rule's allowance: 1e-4 x scale for float32 is ~1,700 u,
# far above what reordering a dot of a few thousand terms produces (~sqrt(n) u) and two orders
# below a 1% change of one weight tensor.
DEEP_RTOL = {"float32": 1e-4, "float64": 1e-10, "float16": 1e-2}
TF_SIDE = 2.0


def short(name: str) -> str:
    """A TF/ONNX name without the call wrappers a SavedModel signature adds ('StatefulPartitionedCall/')."""
    while True:
        head, sep, rest = name.partition("/")
        if not sep or head not in ("StatefulPartitionedCall", "PartitionedCall"):
            return name
        name = rest


@dataclass
class TensorCheck:
    """One matched tensor of a deep check: the TF tensor, its ONNX value and the verdict. `rule` is
    'bound' (then `judgements` holds the TF side's and the ONNX side's checks against the float64
    oracle) or 'scale' (the comparison's atol is DEEP_RTOL x scale)."""

    pair: object  # tensor_map.Pair
    comparison: Comparison  # TF vs ONNX; its `passed` is the check's verdict under either rule
    scale: float
    rule: str = "scale"
    judgements: list = field(default_factory=list)  # export/verdict.Judgement: TF side, ONNX side

    @property
    def use(self) -> float:
        """How much of what its rule allows the tensor uses (1.0 = at the limit)."""
        if self.judgements:
            return max(j.bound_use for j in self.judgements)
        c = self.comparison
        return c.max_abs / c.atol if c.atol else (0.0 if c.max_abs == 0 else float("inf"))

    def allowance(self) -> str:
        if self.judgements:
            worst = max(self.judgements, key=lambda j: j.bound_use)
            return (f"bound use {worst.bound_use:.3g} ({worst.runtime} side vs float64, "
                    f"allowed {worst.allowed_at_worst:.3g})")
        c = self.comparison
        return f"allowed {c.atol:.3g} abs at scale {self.scale:.3g}"

    def to_dict(self) -> dict:
        return {**self.pair.to_dict(), "scale": self.scale, "rule": self.rule, "use": self.use,
                **{k: self.comparison.to_dict()[k] for k in (
                    "max_abs", "max_rel", "atol", "rtol", "failed_elements", "shape_ok", "passed")},
                "bound_checks": [j.to_dict() for j in self.judgements]}


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
    def bounded(self) -> int:
        return sum(c.rule.startswith("bound") for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.first is None

    def counts(self) -> str:
        return (f"{self.matched} of {self.tf_tensors} TF tensors matched, {self.bounded} of them judged by the "
                "rounding bound")

    def describe(self) -> str:
        if self.first is None:
            return self.note or f"all {self.matched} matched tensors agree ({self.counts()})"
        p, c = self.first.pair, self.first.comparison
        line = (f"TF op {short(p.tf_op)} ({p.tf_type}) = ONNX node {short(p.onnx_node)} ({p.onnx_type}): "
                f"max abs {c.max_abs:.3g}, max rel {c.max_rel:.3g}, {self.first.allowance()}")
        last = self.last_agreeing
        line += f"; last agreeing tensor {short(last.pair.tf_tensor)}" if last else "; no agreeing tensor before it"
        return line + f"; {self.counts()}"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "tf_tensors": self.tf_tensors, "matched": self.matched, "bounded": self.bounded,
                "first": self.first.to_dict() if self.first else None,
                "last_agreeing": self.last_agreeing.to_dict() if self.last_agreeing else None,
                "description": self.describe(), "note": self.note,
                "checks": [c.to_dict() for c in self.checks], "unmatched": self.unmatched}

    def detail(self) -> str:
        """Every compared tensor, one line each (verify --detail)."""
        lines = [f"tensor by tensor ({self.runtime} vs the TF graph on input {self.input!r}; {self.counts()}):"]
        for c in self.checks:
            p, cmp = c.pair, c.comparison
            verdict = "pass" if cmp.passed else "FAIL"
            lines.append(f"  {verdict}  {short(p.tf_tensor)} ({p.tf_type}) = {short(p.onnx_value)} "
                         f"({p.onnx_type}{', NCHW' if p.nchw else ''})  max abs {cmp.max_abs:.3g}  {c.allowance()}")
        return "\n".join(lines)


def localise_tensors(tmap, tf_values: dict[str, np.ndarray], onnx_values: dict[str, np.ndarray], runtime: str,
                     input_name: str, dtype: str, tf_tensors: int, judged: dict | None = None) -> TensorLocalisation:
    """Judge every matched tensor (by its local bound checks in `judged`, TF tensor -> [TF side, ONNX
    side] or [ONNX side] Judgements, where given; else, and for a TF side without a bound check, by the
    scale-aware rule) and name the first that fails."""
    import dataclasses

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
        js = (judged or {}).get(pair.tf_tensor) if dtype == "float32" else None
        if not js:
            check = TensorCheck(pair, cmp, scale)
        else:
            both = len(js) == 2  # else the TF side is held to the scale-aware rule
            passed = cmp.shape_ok and all(j.passed for j in js) and (both or cmp.passed)
            check = TensorCheck(pair, dataclasses.replace(cmp, passed=passed), scale,
                                "bound" if both else "bound (ONNX side), scale (TF side)", js)
        loc.checks.append(check)
        if check.comparison.passed and loc.first is None:
            loc.last_agreeing = check
        elif not check.comparison.passed and loc.first is None:
            loc.first = check
    if loc.first is not None:
        loc.first_diverging = loc.describe()
        loc.stages = [c.comparison for c in (loc.last_agreeing, loc.first) if c is not None]
    return loc

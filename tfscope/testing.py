"""Parity checks for a user's own test suite: the checks `tfscope verify` makes, as assertions.

  assert_equivalent(reference, candidate, inputs)   two forms of one model give the same outputs
  assert_gradients_match(fn, variables)              tape gradient vs float64 central differences
  assert_optimizer_matches_keras(optimizer, keras_optimizer)   one trajectory on one gradient sequence

A side of assert_equivalent is a Keras model, a `.keras` file, a SavedModel directory, a SavedModel
signature (or any callable: called with the inputs as keyword arguments, returning an array, a list
or a dict of arrays), an `.onnx` file, an onnxruntime InferenceSession, or a tfscope Source. Outputs
are matched by position. The verdict is `tfscope verify`'s: the rounding bound against a float64
oracle (export/bounds.py, export/verdict.py) where one side is an ONNX graph, else Polygraphy's rule
(export/compare.py); a failure raises AssertionError with the verify table and the first diverging
element (and op, where one side is a TF graph and the other ONNX).

Importing this module imports neither TensorFlow nor tfscope.core (which sets an XLA option), so the
pytest plugin costs nothing in a session that does not use it. Every check is recorded in `CHECKS`
(the plugin's --tfscope-report and summary line read it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfscope.export.compare import DEFAULT_TOLERANCE, Comparison, combine, compare

RULES = ("auto", "polygraphy")  # auto: the rounding-bound verdict where one side is an ONNX graph, else Polygraphy's
CHECKS: list[dict] = []  # every check of this process, as JSON-ready records (the pytest plugin adds "test")


# ---------------------------------------------------------------------------------------------
# The two sides of a comparison


@dataclass
class Side:
    """One model as the comparison sees it: a label, its input specs (when known), a call."""

    label: str
    kind: str  # keras | saved_model | function | onnx | source
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]  # feeds -> outputs in order
    specs: list | None = None  # [InputSpec] when the model states them
    output_names: list[str] = field(default_factory=list)
    graph: Any = None  # the TF Source or the onnx.ModelProto, where the side is a graph (for localisation)
    path: Path | None = None  # the ONNX file, when the side was read from one


def _is_onnx_session(model: Any) -> bool:
    return type(model).__module__.startswith("onnxruntime") and hasattr(model, "get_inputs")


def _onnx_side(session, label: str, proto: Any = None, path: Path | None = None) -> Side:
    from tfscope.core.sources.feeds import InputSpec

    types = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
             "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(int8)": "int8",
             "tensor(uint8)": "uint8"}
    specs = [InputSpec(i.name, types.get(i.type, i.type), tuple(d if isinstance(d, int) else None for d in i.shape))
             for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(feeds):
        missing = [s.name for s in specs if s.name not in feeds]
        if missing:
            raise AssertionError(f"{label}: no value for input {missing[0]!r} (inputs: {', '.join(feeds)})")
        cast = {s.name: np.asarray(feeds[s.name]).astype(s.dtype, copy=False) for s in specs}
        return [np.asarray(v) for v in session.run(None, cast)]

    return Side(label, "onnx", run, specs, outputs, proto, path)


def _source_side(source, label: str | None = None) -> Side:
    def run(feeds):
        out = source.call(feeds)
        return [out[k] for k in source.outputs]

    return Side(label or source.description, source.kind, run, list(source.inputs), list(source.outputs), source)


def _signature_specs(fn: Any) -> list | None:
    """The keyword inputs of a SavedModel signature (a ConcreteFunction), as InputSpecs."""
    structured = getattr(fn, "structured_input_signature", None)
    if not structured or not isinstance(structured[1], Mapping) or not structured[1]:
        return None
    from tfscope.core.sources.feeds import InputSpec

    return [InputSpec(name, spec.dtype.name, tuple(spec.shape.as_list()) if spec.shape.rank is not None else ())
            for name, spec in structured[1].items()]


def _callable_side(fn: Callable, label: str) -> Side:
    def run(feeds):
        result = fn(**feeds)
        if isinstance(result, Mapping):
            values = list(result.values())
        elif isinstance(result, (list, tuple)):
            values = list(result)
        else:
            values = [result]
        return [np.asarray(v) for v in values]

    specs = _signature_specs(fn)
    return Side(label, "saved_model" if specs else "function", run, specs)


def side(model: Any, label: str | None = None) -> Side:
    """Anything assert_equivalent accepts, as a Side (see the module docstring)."""
    from tfscope.core.sources.source import Source, as_source

    if isinstance(model, Side):
        return model
    if isinstance(model, (str, Path)):
        p = Path(model)
        if p.suffix == ".onnx":
            if not p.is_file():
                raise AssertionError(f"{p}: no such ONNX file")
            import onnx
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 3
            return _onnx_side(ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]),
                              label or f"ONNX {p.name}", onnx.load(str(p)), p)
        return _source_side(as_source(p), label)
    if _is_onnx_session(model):
        path = getattr(model, "_model_path", None)  # set when the session was built from a file
        proto = None
        if path:
            import onnx

            proto = onnx.load(path)
        return _onnx_side(model, label or "onnxruntime session", proto, Path(path) if path else None)
    if isinstance(model, Source) or (hasattr(model, "inputs") and hasattr(model, "get_weights")):
        return _source_side(as_source(model), label or (f"Keras model {model.name!r}" if hasattr(model, "name")
                                                         and not isinstance(model, Source) else None))
    if callable(model):
        if _signature_specs(model) is not None:
            return _callable_side(model, label or "SavedModel signature")
        name = getattr(model, "__name__", None) or type(model).__name__
        return _callable_side(model, label or f"function {name}")
    raise AssertionError(f"cannot compare a {type(model).__name__}: give a Keras model, a .keras/.onnx path, a "
                         "SavedModel directory or signature, an onnxruntime session or a callable")


# ---------------------------------------------------------------------------------------------
# Inputs


def generate_inputs(model: Any, shapes: Mapping[str, Sequence[int]] | None = None,
                    ranges: Mapping[str, tuple[float, float]] | None = None,
                    batch_sizes: Sequence[int] | None = None, seed: int | None = None) -> dict[str, dict]:
    """Seeded feed sets from a model's input signature, by core/sources/feeds.generate (the input
    generator of export, verify and profile): {set name: {input name: array}}."""
    from tfscope.core.sources import feeds as feeds_mod

    specs = model if isinstance(model, (list, tuple)) else side(model).specs
    if specs is None:
        raise AssertionError("this model states no input signature: give the inputs as {name: array}")
    kwargs = {} if seed is None else {"seed": seed}
    return feeds_mod.generate(specs, {k: tuple(v) for k, v in (shapes or {}).items()}, ranges,
                              feeds_mod.BATCH_SIZES if batch_sizes is None else tuple(batch_sizes), **kwargs)


def _feed_sets(inputs: Any, ref: Side, cand: Side) -> dict[str, dict]:
    """`inputs` as named feed sets: one feed dict, a dict of them, or None (generated from a signature)."""
    if inputs is None:
        specs = ref.specs or cand.specs
        if specs is None:
            raise AssertionError("neither side states an input signature: give the inputs as {name: array}")
        return generate_inputs(list(specs))
    if not isinstance(inputs, Mapping) or not inputs:
        raise AssertionError("inputs: give {input name: array}, {set name: {input name: array}} or None")
    if all(isinstance(v, Mapping) for v in inputs.values()):
        return {str(k): {n: np.asarray(a) for n, a in v.items()} for k, v in inputs.items()}
    return {"inputs": {n: np.asarray(a) for n, a in inputs.items()}}


# ---------------------------------------------------------------------------------------------
# The first diverging element


@dataclass
class Divergence:
    input: str
    output: str
    row: int
    index: tuple[int, ...]  # within the row
    reference: float
    candidate: float

    def line(self) -> str:
        where = f"row {self.row}" + (f", index {list(self.index)}" if self.index else "")
        return (f"first diverging element: input set {self.input!r}, output {self.output!r}, {where}: "
                f"reference {self.reference!r}, candidate {self.candidate!r}")


def first_divergence(c: Comparison, ref: np.ndarray, got: np.ndarray) -> Divergence | None:
    """The first failing element of a failed comparison, found by the same engine: the failing row's
    elements compared one per row, so that comparison's first failing row is the element's index."""
    if c.passed or not c.shape_ok or c.first_failed_row is None or ref.ndim == 0:
        return None
    row = c.first_failed_row
    r, g = ref[row].reshape(-1, 1), got[row].reshape(-1, 1)
    within = compare(r, g, c.atol, c.rtol).first_failed_row
    if within is None:  # only the dtype differed
        return None
    index = tuple(int(i) for i in np.unravel_index(within, ref.shape[1:])) if ref.ndim > 1 else ()
    return Divergence(c.input, c.output, row, index, float(r[within, 0]), float(g[within, 0]))


def tolerance_use(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> float:
    """How much of Polygraphy's tolerance the worst element uses (> 1 fails; inf for NaN or a shape
    mismatch): export/verdict.py's fixed-rule use, the figure `tfscope verify` reports."""
    from tfscope.export.verdict import judge

    j = judge(np.asarray(got), np.asarray(ref), eager=np.asarray(ref), atol=atol, rtol=rtol)
    return j.bound_use if j.passed or j.bound_use > 1 else math.inf  # failed on NaN or dtype: no finite use


def diverging_op(ref: Side, cand: Side, feeds: Mapping[str, np.ndarray], set_name: str, dtype) -> str | None:
    """Where one side is a TF graph and the other an ONNX graph: the first operation whose tensor
    differs, by export/model_parity.deep_check (the tensor map of export/tensor_map.py, each pair judged
    by its node's local rounding bound in the ONNX graph where it has one, else by export/localize.py's
    scale-aware rule; onnxruntime with optimisation off). None otherwise."""
    from tfscope.core.sources.source import Source

    tf_side = next((s for s in (ref, cand) if isinstance(s.graph, Source)), None)
    onnx_side = next((s for s in (ref, cand) if s.kind == "onnx" and s.graph is not None), None)
    if tf_side is None or onnx_side is None:
        return None
    from tfscope.export.model_parity import converted_graph, deep_check, read_meta
    from tfscope.export.model_runtimes import ort_runtime

    graph = tf_side.graph
    if onnx_side.path is not None:  # an ONNX file of a tfscope export: its TF side is the graph it was converted from
        meta = read_meta(onnx_side.path.parent)
        if meta is not None:
            graph = converted_graph(onnx_side.path.parent, meta)
    runtime = ort_runtime(onnx_side.graph, onnx_side.output_names, optimise=False)
    loc = deep_check(graph, onnx_side.graph, runtime, dict(feeds), set_name, np.dtype(dtype).name, onnx_side.graph)
    return loc.describe()


# ---------------------------------------------------------------------------------------------
# assert_equivalent


@dataclass
class ParityResult:
    """What one assert_equivalent call found; also recorded in CHECKS."""

    reference: str
    candidate: str
    rule: str
    atol: float
    rtol: float
    comparisons: list[Comparison]
    summaries: list[Comparison]
    tolerance_use: float
    divergence: Divergence | None = None
    diverging_op: str | None = None
    judgements: list = field(default_factory=list)  # export/verdict.Judgement per (side, set, output): bound rule
    why_not_bound: str | None = None  # under rule "auto", why Polygraphy's rule decided

    @property
    def passed(self) -> bool:
        if self.rule == "bound":
            return all(j.passed for j in self.judgements)
        return all(c.passed for c in self.comparisons)

    @property
    def bound_use(self) -> float | None:
        return max((j.bound_use for j in self.judgements), default=None) if self.judgements else None

    def bound_table(self) -> str:
        """Each side against the float64 oracle of the ONNX graph, within its rounding bound."""
        from tfscope.export.parity import _format, _g

        head = ["side", "input", "output", "err vs f64", "rel vs f64", "allowed at worst", "bound use", "worst at",
                "rule", "result"]
        body = [[j.runtime, j.input, j.output, _g(j.max_error), _g(j.max_rel_error), _g(j.allowed_at_worst),
                 _g(j.bound_use), str(j.worst_index), j.rule, "pass" if j.passed else "FAIL"] for j in self.judgements]
        title = ("rounding-bound verdict (bound use <= 1 passes); the oracle is the ONNX graph evaluated in float64, "
                 "so a side far outside its bound computes another function than that graph:")
        return "\n".join([title, *_format(head, body)])

    def table(self) -> str:
        """The verify table (export/parity.py's Report) over these comparisons, headed by both sides."""
        from tfscope.export.parity import Report

        inputs: dict[str, list[int]] = {}
        for c in self.comparisons:
            inputs.setdefault(c.input, c.ref_shape)
        report = Report("", self.comparisons[0].ref_dtype if self.comparisons else "", self.atol, self.rtol,
                        inputs, self.comparisons, self.summaries)
        lines = report.table(detail=True).splitlines()
        decides = "for information; the rounding bound decides" if self.rule == "bound" else "this rule decides"
        lines[0] = (f"{self.candidate} vs {self.reference} (Polygraphy's rule, atol {self.atol:g}, "
                    f"rtol {self.rtol:g}, {decides}; {len(inputs)} input set(s))")
        lines = [line.replace("runtime vs eager", "candidate vs ref") for line in lines
                 if not line.startswith(("PASS:", "FAIL:"))]
        return "\n".join(lines)

    def message(self) -> str:
        lines = [f"{self.candidate} differs from {self.reference}"]
        if self.rule == "bound":
            lines.append(self.bound_table())
            bad = next(j for j in self.judgements if not j.passed)
            lines.append(f"first failing: {bad.runtime} on input set {bad.input!r}: {bad.why()}")
        lines.append(self.table())
        if self.why_not_bound:
            lines.append(f"(Polygraphy's rule decided: {self.why_not_bound})")
        failing = next((c for c in self.comparisons if not c.passed), None) if self.rule != "bound" else None
        if failing is not None:
            lines.append(f"first failing: input set {failing.input!r}, output {failing.output!r}: {failing.why()}")
        if self.divergence is not None:
            lines.append(self.divergence.line())
        if self.diverging_op is not None:
            lines.append(f"first diverging op: {self.diverging_op}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate, "rule": self.rule,
                "atol": self.atol, "rtol": self.rtol, "passed": self.passed,
                "tolerance_use": _json(self.tolerance_use),
                "bound_use": None if self.bound_use is None else _json(self.bound_use),
                "why_not_bound": self.why_not_bound, "judgements": [j.to_dict() for j in self.judgements],
                "first_divergence": None if self.divergence is None else {
                    "input": self.divergence.input, "output": self.divergence.output, "row": self.divergence.row,
                    "index": list(self.divergence.index), "reference": _json(self.divergence.reference),
                    "candidate": _json(self.divergence.candidate)},
                "first_diverging_op": self.diverging_op,
                "summaries": [c.to_dict() for c in self.summaries],
                "comparisons": [c.to_dict() for c in self.comparisons]}


def _json(v: float):
    return v if math.isfinite(v) else str(v)


def assert_equivalent(reference: Any, candidate: Any, inputs: Any = None, *, atol: float | None = None,
                      rtol: float | None = None, rule: str = "auto", reference_label: str | None = None,
                      candidate_label: str | None = None) -> ParityResult:
    """Assert that `candidate` gives `reference`'s outputs on every feed set of `inputs`.

    inputs: {input name: array}, {set name: {input name: array}}, or None for seeded sets generated
    from a signature (core/sources/feeds.generate; `generate_inputs` takes shapes and ranges).
    rule "auto" (default): where one side is an ONNX graph and the outputs are float32, the verdict
    of `tfscope verify`: both sides within the rounding bound of that graph's float64 oracle (a
    proof, no guessed tolerance); otherwise, or with atol/rtol given, or rule="polygraphy":
    Polygraphy's rule (an element fails only where |diff| > atol and rel diff > rtol; NaN always
    fails), default 1e-5 for float32, 1e-12 for float64 (export/compare.py). Polygraphy's numbers
    are reported in every case. Returns the ParityResult; raises AssertionError with the tables,
    the first diverging element and, where one side is TF and the other ONNX, the first diverging op.
    """
    if rule not in RULES:
        raise AssertionError(f"rule: {rule!r} is not one of {', '.join(RULES)}")
    ref, cand = side(reference, reference_label), side(candidate, candidate_label)
    sets = _feed_sets(inputs, ref, cand)
    comparisons: list[Comparison] = []
    pairs: list[tuple[Comparison, np.ndarray, np.ndarray]] = []
    outputs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    atol_used = rtol_used = None
    for set_name, feeds in sets.items():
        r_out, c_out = ref.run(feeds), cand.run(feeds)
        if len(r_out) != len(c_out):
            raise AssertionError(f"{cand.label} returns {len(c_out)} output(s), {ref.label} returns {len(r_out)}: "
                                 "outputs are matched by position")
        outputs[set_name] = (r_out, c_out)
        for i, (r, g) in enumerate(zip(r_out, c_out)):
            default = DEFAULT_TOLERANCE.get(str(r.dtype), DEFAULT_TOLERANCE["float32"])
            atol_used = default if atol is None else float(atol)
            rtol_used = default if rtol is None else float(rtol)
            c = compare(r, g, atol_used, rtol_used, cand.label, set_name, _output_name(ref, cand, i))
            comparisons.append(c)
            pairs.append((c, r, g))
    summaries = []
    for out in dict.fromkeys(c.output for c in comparisons):
        mine = [(c, r, g) for c, r, g in pairs if c.output == out]
        summaries.append(combine([m[0] for m in mine], [m[1] for m in mine], [m[2] for m in mine]))
    use = max((tolerance_use(r, g, c.atol, c.rtol) for c, r, g in pairs), default=0.0)
    result = ParityResult(ref.label, cand.label, "polygraphy", float(atol_used or 0.0), float(rtol_used or 0.0),
                          comparisons, summaries, use)
    if rule == "auto" and atol is None and rtol is None:
        verdict = bound_verdicts(ref, cand, sets, outputs)
        if isinstance(verdict, str):
            result.why_not_bound = verdict
        else:
            result.rule, result.judgements = "bound", [b.judgement for b in verdict]
    elif rule == "auto":
        result.why_not_bound = "atol/rtol were given"
    if not result.passed:
        if result.rule == "bound":
            bad = next(b for b in verdict if not b.judgement.passed)
            r_out, c_out = outputs[bad.judgement.input]
            i = bad.output_index
            result.divergence = first_divergence_bound(bad, r_out[i], c_out[i])
            set_name, dtype = bad.judgement.input, r_out[i].dtype
        else:
            failing = next((c, r, g) for c, r, g in pairs if not c.passed)
            result.divergence = first_divergence(*failing)
            set_name, dtype = failing[0].input, failing[1].dtype
        result.diverging_op = diverging_op(ref, cand, sets[set_name], set_name, dtype)
    CHECKS.append({"kind": "equivalent", **result.to_dict()})
    if not result.passed:
        raise AssertionError(result.message())
    return result


def _output_name(ref: Side, cand: Side, i: int) -> str:
    names = ref.output_names or cand.output_names
    return names[i] if i < len(names) else f"output_{i}"


@dataclass
class BoundCheck:
    """One side's output on one feed set judged by the bound rule, with what judged it."""

    judgement: Any  # export/verdict.Judgement
    is_reference: bool
    output_index: int
    oracle: np.ndarray  # the float64 oracle of the ONNX graph
    bound: np.ndarray | None  # elementwise bound, or None where the fallback rule judged


def bound_verdicts(ref: Side, cand: Side, sets: dict, outputs: dict) -> list[BoundCheck] | str:
    """Both sides judged against the float64 oracle of the ONNX side's graph within the rounding
    bound propagated through it (export/bounds.py, export/verdict.py: `tfscope verify`'s verdict);
    an output downstream of an op without a bound rule is judged by verdict.py's fallback (k times
    the reference's own error vs float64). A string says why there is no bound verdict."""
    onnx_side = next((s for s in (cand, ref) if s.kind == "onnx" and s.graph is not None), None)
    if onnx_side is None:
        return "neither side is an ONNX graph to propagate rounding bounds through"
    kinds = {str(a.dtype) for r_out, c_out in outputs.values() for a in [*r_out, *c_out]}
    if kinds != {"float32"}:
        return f"the bound is for float32 evaluations; the outputs are {', '.join(sorted(kinds))}"
    from tfscope.export.graph_verdict import TF_SIDE, graph_bounds, judge_output
    from tfscope.export.oracle import GraphOracle, NoFloat64Form

    checks = []
    try:
        oracle = GraphOracle(onnx_side.graph)
        for set_name, feeds in sets.items():
            gb = graph_bounds(onnx_side.graph, {s.name: feeds[s.name] for s in onnx_side.specs}, oracle)
            r_out, c_out = outputs[set_name]
            for i, name in enumerate(onnx_side.output_names):
                for is_ref, s, got in ((True, ref, r_out[i]), (False, cand, c_out[i])):
                    widen = 1.0 if s.kind == "onnx" else TF_SIDE  # TF evaluates the graph before conversion
                    j = judge_output(got, r_out[i], gb, name, widen, runtime=s.label, input=set_name)
                    j.output = _output_name(ref, cand, i)
                    bound = widen * gb.bounds.get(name, np.zeros(np.shape(got))) if j.rule == "bound" else None
                    checks.append(BoundCheck(j, is_ref, i, gb.values[name], bound))
    except NoFloat64Form as e:
        return str(e)
    return checks


def first_divergence_bound(check: BoundCheck, ref: np.ndarray, got: np.ndarray) -> Divergence | None:
    """Under the bound rule: the first element (row, then index) of the failing side beyond what it
    is allowed (its bound, or the fallback's allowance, which is one number for the whole tensor),
    found by judging that side row by row, then the failing row element by element."""
    from tfscope.export.verdict import judge

    j = check.judgement
    side = ref if check.is_reference else got
    if not j.shape_ok or side.ndim == 0:
        return None
    allowed = np.broadcast_to(check.bound if check.bound is not None else j.allowed_at_worst, side.shape)
    for row in range(side.shape[0]):
        if judge(side[row], check.oracle[row], allowed[row]).passed:
            continue
        values, oracle, limit = side[row].reshape(-1), check.oracle[row].reshape(-1), allowed[row].reshape(-1)
        for k in range(values.size):
            if not judge(values[k:k + 1], oracle[k:k + 1], limit[k:k + 1]).passed:
                index = tuple(int(x) for x in np.unravel_index(k, side.shape[1:])) if side.ndim > 1 else ()
                return Divergence(j.input, j.output, row, index, float(ref[row].reshape(-1)[k]),
                                  float(got[row].reshape(-1)[k]))
    return None


# ---------------------------------------------------------------------------------------------
# Gradients


GRADIENT_TOLERANCE = {"float32": 1e-4, "float64": 1e-6}


def assert_gradients_match(fn: Callable, variables: Sequence, *, rtol: float | None = None,
                           step: float = 1e-5) -> float:
    """Assert that the tape gradient of the scalar `fn(*variables)` equals central differences of
    `fn` evaluated in float64 (core/nn/gradients.central_differences, h = step * max(1, |w|)).

    `fn` takes the values positionally and must compute in their dtype (it is called with float64
    tensors for the differences). Error: max|tape - fd| / max|fd| over every element. Default
    tolerance: 1e-6 for a float64 tape (central differences at h = 1e-5 carry ~1e-10 truncation
    and rounding error, the README's gradient row); 1e-4 for float32 (the tape's own rounding,
    a few float32 ulps times the depth of the function, against 2^-24 = 6e-8 per operation).
    Returns the error; raises AssertionError naming the worst element.
    """
    import tensorflow as tf

    from tfscope.core.nn.gradients import central_differences

    variables = list(variables)
    if not variables:
        raise AssertionError("variables: give at least one tf.Variable")
    dtype = variables[0].dtype.name
    tol = GRADIENT_TOLERANCE.get(dtype, GRADIENT_TOLERANCE["float32"]) if rtol is None else float(rtol)
    with tf.GradientTape() as tape:
        loss = fn(*variables)
    tape_grads = tape.gradient(loss, variables)
    missing = [v.name for v, g in zip(variables, tape_grads) if g is None]
    if missing:
        raise AssertionError(f"the tape has no gradient for {missing[0]}: fn does not use it")
    tape_np = [np.asarray(g, np.float64) for g in tape_grads]
    weights = [np.asarray(v.numpy(), np.float64) for v in variables]

    def loss_of(ws):
        return float(fn(*[tf.constant(w, tf.float64) for w in ws]))

    fd = central_differences(loss_of, weights, step)
    a = np.concatenate([g.ravel() for g in tape_np])
    b = np.concatenate([g.ravel() for g in fd])
    scale = max(float(np.max(np.abs(b))), 1e-30)
    err = float(np.max(np.abs(a - b))) / scale
    CHECKS.append({"kind": "gradients", "dtype": dtype, "step": step, "rtol": tol,
                   "error": err, "tolerance_use": err / tol if tol else math.inf, "passed": err <= tol})
    if not err <= tol:
        flat = int(np.argmax(np.abs(a - b)))
        sizes = np.cumsum([g.size for g in fd])
        k = int(np.searchsorted(sizes, flat, side="right"))
        offset = flat - (int(sizes[k - 1]) if k else 0)
        index = list(np.unravel_index(offset, fd[k].shape)) if fd[k].ndim else []
        raise AssertionError(
            f"tape gradient differs from float64 central differences (h = {step:g}): max|tape - fd| / max|fd| = "
            f"{err:.3g} > {tol:g}; worst at {variables[k].name} index {[int(i) for i in index]}: "
            f"tape {float(a[flat])!r}, differences {float(b[flat])!r}")
    return err


# ---------------------------------------------------------------------------------------------
# Optimisers


OPTIMIZER_TOLERANCE = {"float32": 1e-6, "float64": 1e-12}


def assert_optimizer_matches_keras(optimizer: Any, keras_optimizer: Any, *, shapes: Sequence[tuple] = ((3, 4), (4,)),
                                   steps: int = 100, dtype: str = "float32", seed: int = 0,
                                   rtol: float | None = None) -> float:
    """Assert that `optimizer` follows `keras_optimizer` (a keras.optimizers instance with the same
    hyperparameters) on one seeded gradient sequence, as tests/test_optimizers.py proves tfscope's own.

    `optimizer` is a Keras-style optimiser (`apply_gradients(zip(grads, vars))`), a tfscope one
    (`apply_gradients(grads, vars)`), or a callable `update(grads, variables)`. Gradients are N(0, 1)
    times a scale drawn from {1e-3, 1, 30} per step, so epsilon-like terms and large steps both
    matter. Error: max|ours - keras| / max|keras| over every variable after `steps` steps. Default
    tolerance 1e-6 in float32 (a few ulps of rounding accumulate over 100 steps), 1e-12 in float64;
    use learning rates exact in float32 for float64 runs (Keras keeps its rate in float32).
    """
    import keras
    import tensorflow as tf

    tol = OPTIMIZER_TOLERANCE.get(dtype, OPTIMIZER_TOLERANCE["float32"]) if rtol is None else float(rtol)
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=s) for s in shapes]
    mine = [tf.Variable(w, dtype=dtype, name=f"v{i}") for i, w in enumerate(init)]
    theirs = [keras.Variable(w, dtype=dtype) for w in init]
    if hasattr(optimizer, "build"):
        optimizer.build(mine)
    keras_optimizer.build(theirs)
    apply = _update_function(optimizer, mine)
    # Keras' step compiled, as its fit() runs it: the same arithmetic, less dispatch time
    keras_apply = tf.function(lambda g: keras_optimizer.apply_gradients(zip(g, theirs)), autograph=False)
    for _ in range(steps):
        g = [rng.normal(size=s) * rng.choice([1e-3, 1.0, 30.0]) for s in shapes]
        apply([tf.constant(x, dtype) for x in g])
        keras_apply([tf.constant(x, dtype) for x in g])
    a = np.concatenate([np.ravel(v.numpy()) for v in mine]).astype(np.float64)
    b = np.concatenate([np.ravel(np.asarray(v.numpy())) for v in theirs]).astype(np.float64)
    err = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
    CHECKS.append({"kind": "optimizer", "dtype": dtype, "steps": steps, "rtol": tol,
                   "error": err, "tolerance_use": err / tol if tol else math.inf, "passed": err <= tol})
    if not err <= tol:
        worst = int(np.argmax(np.abs(a - b)))
        raise AssertionError(f"optimizer differs from {type(keras_optimizer).__name__} after {steps} steps: "
                             f"max|ours - keras| / max|keras| = {err:.3g} > {tol:g}; worst element {worst}: "
                             f"ours {float(a[worst])!r}, keras {float(b[worst])!r}")
    return err


def _update_function(optimizer: Any, variables: list) -> Callable[[list], None]:
    """One call per step, whichever convention `optimizer` follows."""
    if not hasattr(optimizer, "apply_gradients"):
        return lambda grads: optimizer(grads, variables)
    import inspect

    params = [p for p in inspect.signature(optimizer.apply_gradients).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(params) >= 2:  # tfscope's (grads, variables)
        return lambda grads: optimizer.apply_gradients(grads, variables)
    return lambda grads: optimizer.apply_gradients(zip(grads, variables))


# ---------------------------------------------------------------------------------------------
# Export (the pytest plugin's tfscope_export)


@dataclass
class Exported:
    """A model exported by `export`: a complete tfscope export directory (`tfscope verify` reads it)."""

    directory: Path
    saved_model: Path
    onnx: Path
    report: Any  # the export's own verify Report (export/parity.py): report.passed, report.table()


def export(model: Any, directory: str | Path, opset: int = 17, **options: Any) -> Exported:
    """Export `model` into `directory`/export with tfscope's own writer (export/writer.py), verified
    as `tfscope export` verifies: a tfscope run directory by `export_run`; a .keras file or a
    SavedModel directory by `export_model` (`options`: shapes, ranges, batch_sizes, deep,
    reference, signature); an in-memory Keras model is first saved as `directory`/model.keras."""
    from tfscope.export.parity import ONNX_FILE, SAVED_MODEL
    from tfscope.export.writer import export_model, export_run

    directory = Path(directory)
    out = directory / "export"
    if isinstance(model, (str, Path)):
        path = Path(model)
        if (path / "config.json").is_file():
            report = export_run(path, out, opset=opset)
        elif path.is_dir():
            report = export_model(out, saved_model=path, opset=opset, **options)
        else:
            report = export_model(out, keras=path, opset=opset, **options)
    elif hasattr(model, "save") and hasattr(model, "get_weights"):
        directory.mkdir(parents=True, exist_ok=True)
        model.save(directory / "model.keras")
        report = export_model(out, keras=directory / "model.keras", opset=opset, **options)
    else:
        raise AssertionError(f"cannot export a {type(model).__name__}: give a Keras model, a .keras file, a "
                             "SavedModel directory or a tfscope run directory")
    return Exported(out, out / SAVED_MODEL, out / ONNX_FILE, report)

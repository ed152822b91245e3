"""The bound verdict of any model's export: every runtime's outputs against the float64 oracle of
the model's ONNX graph, within the rounding bound propagated through that graph (export/bounds.py,
export/oracle.py, export/verdict.py).

The graph the oracle and the bounds come from (the *reference graph*) is the converter's output:
model.onnx itself when its SHA-256 is the one the export recorded in export.json, else (the file
was edited, optimised or replaced after the export, or the export predates the record) a fresh
conversion of the export's own SavedModel signature. So a changed op or weight in the file cannot
change what the runtimes are held to; the file itself, evaluated in float64, is then judged
against the same bound and shows whether the edit changed the function beyond rounding.

Per output: a float32 output downstream only of ops with a bound rule is judged by the bound
(TensorFlow's runtimes by TF_SIDE times it, see TF_RUNTIMES) where the bound is informative, i.e.
smaller than the value at the median element (in deep random networks |W| compounds the carried
error layer by layer while cancellation shrinks the values, and such a bound says nothing); else,
and downstream of an op without a rule, by the fallback (k times TensorFlow eager's own error vs
float64, export/verdict.py), with the reason as the rule. Other dtypes (float64, integers) are
judged by the fixed rule at the default tolerance of their dtype (float64 has no wider oracle).
The deep check's local verdict, tensor pair by tensor pair, is `pair_checks` below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from tfscope.export.bounds import GraphBounds, propagate
from tfscope.export.compare import DEFAULT_TOLERANCE
from tfscope.export.localize import TF_SIDE
from tfscope.export.oracle import GraphOracle
from tfscope.export.verdict import Judgement, judge, pooled

Outputs = dict[str, np.ndarray]  # output name -> array
# TensorFlow's runtimes evaluate the graph before conversion: the ops tf2onnx fused one by one and
# the constants it folded at run time, so they are held to TF_SIDE (export/localize.py) times the
# ONNX graph's bound; the ONNX runtimes evaluate that graph itself and are held to the bound.
TF_RUNTIMES = ("eager", "graph", "xla", "savedmodel")


def digest(path: Path) -> str:
    """SHA-256 of a file, hex: how export.json records the model.onnx the converter wrote."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Reference:
    """The reference graph and where it came from."""

    proto: onnx.ModelProto
    origin: str  # "model.onnx as exported" or "a fresh conversion of the export's SavedModel (...)"
    file_is_reference: bool  # model.onnx is the reference (else it is judged against it)


def reference_graph(onnx_path: Path, recorded: str | None, convert) -> Reference:
    """model.onnx when its digest is `recorded`, else `convert()` (a fresh conversion, see the docstring)."""
    if recorded is not None and digest(onnx_path) == recorded:
        return Reference(onnx.load(str(onnx_path)), "model.onnx as exported (SHA-256 as recorded)", True)
    why = ("model.onnx differs from the file the export wrote (SHA-256)" if recorded is not None
           else "the export recorded no SHA-256 of model.onnx")
    return Reference(convert(), f"a fresh conversion of the export's SavedModel: {why}", False)


@dataclass
class GraphAssessment:
    """The bound verdict of every runtime of a model export (duck-types export/assess.Assessment
    for the Report: outputs, summaries, graph_checks, passed, first_failure)."""

    reference: str  # Reference.origin
    outputs: list[Judgement]  # per (runtime, input set, output), runtime order
    summaries: list[Judgement]  # per runtime label ("rt" or "rt [output]"), input sets pooled
    rules: dict[str, str]  # output -> 'bound', 'fallback (<op> <node>)' or 'fixed (...)'
    graph_checks: list[Judgement] = field(default_factory=list)  # model.onnx in float64, when not the reference
    deep_passed: bool = True  # the deep check (export/model_parity.py) found no tensor beyond its rule
    excused: dict[str, str] = field(default_factory=dict)  # runtime -> why it could not run the model
    file_note: str | None = None  # why model.onnx could not be evaluated in float64 itself, if so

    oracle_name = "the float64 oracle of the ONNX graph"
    title = "equivalence with the float64 oracle of the model's ONNX graph"
    scope = "for every output"
    file_line = "model.onnx evaluated in float64 vs the reference graph"

    @property
    def many_outputs(self) -> bool:
        return len(self.rules) > 1

    @property
    def passed(self) -> bool:
        return all(j.passed for j in self.summaries) and self.deep_passed

    @property
    def first_failure(self) -> Judgement | None:
        """The first failing output check, else the first runtime that could not run at all (rule '-')."""
        return next((j for j in [*self.outputs, *self.summaries] if not j.passed), None)

    @staticmethod
    def what(j: Judgement) -> str:
        return f"output {j.output!r}"

    def to_dict(self) -> dict:
        return {"oracle": "the reference ONNX graph cast to float64, run by onnx.reference.ReferenceEvaluator",
                "reference_graph": self.reference, "passed": self.passed, "rules": self.rules,
                "deep_passed": self.deep_passed, "excused": self.excused,
                "summaries": [j.to_dict() for j in self.summaries], "outputs": [j.to_dict() for j in self.outputs],
                "onnx_file_in_float64": [j.to_dict() for j in self.graph_checks], "onnx_file_note": self.file_note}


def _cast_feeds(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feeds in the graph inputs' element types (a float64 oracle of float32 inputs starts from the
    float32 values, cast exactly)."""
    from onnx import helper

    types = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in proto.graph.input}
    return {k: np.asarray(v).astype(types[k], copy=False) if k in types else np.asarray(v) for k, v in feeds.items()}


def graph_bounds(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray], oracle: GraphOracle | None = None
                 ) -> GraphBounds:
    """Oracle values and rounding bounds of every tensor of `proto` on `feeds` (export/bounds.propagate)."""
    return propagate(proto, _cast_feeds(proto, feeds), oracle)


def informative(bound: np.ndarray, value: np.ndarray) -> float:
    """The median over elements of bound / |value|: below 1, the bound says at least the value's sign
    and leading digits; at or above 1 (deep random networks, where |W| compounds the carried error
    layer by layer while cancellation shrinks the values), it says nothing about the value."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound == 0, 0.0, bound / np.abs(value))
    return float(np.median(ratio)) if ratio.size else 0.0


def judge_output(got: np.ndarray, eager: np.ndarray, gb: GraphBounds, name: str, widen: float = 1.0,
                 **labels) -> Judgement:
    """One runtime's output `name` against the oracle by the rule its dtype and graph give it: the
    bound (times `widen`) where every op upstream has a rule and the bound is informative, else the
    fallback."""
    dtype = str(np.asarray(eager).dtype)
    if dtype != "float32":
        tol = DEFAULT_TOLERANCE.get(dtype, DEFAULT_TOLERANCE["float32"])
        return judge(got, gb.values[name], eager=eager, atol=tol, rtol=tol, output=name, **labels)
    rule = gb.rules.get(name, "bound")
    bound = gb.bounds.get(name) if rule == "bound" else None
    if rule == "bound" and bound is None:  # an exact (integer-valued) output computed in float: no rounding
        bound = np.zeros(np.shape(gb.values[name]))
    if bound is not None:
        ratio = informative(bound, gb.values[name])
        if not ratio < 1:
            rule, bound = f"fallback (the bound is uninformative: median {ratio:.3g} x |value|)", None
        else:
            bound = widen * bound
    return judge(got, gb.values[name], bound, eager=eager, fallback=rule, output=name, **labels)


def assess_outputs(ref: Reference, sets: Mapping[str, Mapping[str, np.ndarray]],
                   results: Mapping[str, Mapping[str, Outputs]], eager: str = "eager",
                   file_proto: onnx.ModelProto | None = None) -> GraphAssessment:
    """Judge `results[runtime][input set][output]` (every runtime that ran, `eager` among them) on every
    input set against the reference graph's oracle. Each set's float64 values of every tensor are
    dropped once judged (a convnet's every tensor in float64 is large)."""
    from tfscope.export.oracle import NoFloat64Form

    oracle = GraphOracle(ref.proto)
    file_oracle, file_note = None, None
    if file_proto is not None and not ref.file_is_reference:
        try:
            file_oracle = GraphOracle(file_proto)
        except NoFloat64Form as e:  # the runtimes are still judged; only this cross-check is impossible
            file_note = f"model.onnx has no float64 form to judge by itself: {e}"
    names = [o.name for o in ref.proto.graph.output]
    many = len(names) > 1
    order = list(results)
    judged: list[Judgement] = []
    checks: list[Judgement] = []
    rules: dict[str, str] = {}
    for set_name, feeds in sets.items():
        gb = graph_bounds(ref.proto, feeds, oracle)
        for name in names:
            base = results[eager][set_name][name]
            for rt in order:
                label = f"{rt} [{name}]" if many else rt
                judged.append(judge_output(results[rt][set_name][name], base, gb, name,
                                           TF_SIDE if rt in TF_RUNTIMES else 1.0, runtime=label, input=set_name))
            if rules.get(name, "bound") == "bound":  # the rule of the eager judgement; any set's fallback shows
                rules[name] = judged[-len(order)].rule
        if file_oracle is not None:  # the file's own float64 values, judged by the reference's bound
            values = file_oracle.outputs(_cast_feeds(file_oracle.proto, feeds))
            checks += [judge_output(values[name], results[eager][set_name][name], gb, name,
                                    runtime="model.onnx in float64", input=set_name) for name in names]
    labels = list(dict.fromkeys(j.runtime for j in judged))
    judged.sort(key=lambda j: labels.index(j.runtime))
    summaries = [pooled([j for j in judged if j.runtime == label]) for label in labels]
    return GraphAssessment(ref.origin, judged, summaries, rules, checks, file_note=file_note)


def unrun_rows(rows: Mapping[str, tuple[str, bool]]) -> list[Judgement]:
    """Summary rows of runtimes that could not run the model: label -> (the reason, shown as the input
    column; whether that is excused: XLA's missing kernels and the reference evaluator's gaps are)."""
    nan = float("nan")
    return [Judgement(runtime=label, input=why, output="", rule="-", elements=0, shape_ok=True, max_error=nan,
                      max_rel_error=nan, bound_use=nan, median_bound_use=nan, allowed_at_worst=nan, worst_index=None,
                      nan=0, passed=ok, worst_input="-") for label, (why, ok) in rows.items()]


# ---------------------------------------------------------------------------------------------
# The deep check's local verdict, tensor pair by tensor pair


def constant_values(proto: onnx.ModelProto) -> set[str]:
    """Values computable from initializers alone (weights, their reshapes, folded shapes): exact data."""
    const = {t.name for t in proto.graph.initializer} | {""}
    for node in proto.graph.node:
        if all(i in const for i in node.input):
            const.update(node.output)
    return const


def cut_inputs(proto: onnx.ModelProto, value: str, node_name: str, const: set[str] | None = None
               ) -> list[str] | None:
    """The non-constant tensors that the computing node `node_name` and the layout glue between it and
    `value` read: where the local check of `value` cuts the graph. None when `value`'s producer chain
    does not reach that node."""
    const = constant_values(proto) if const is None else const
    producer = {o: n for n in proto.graph.node for o in n.output if o}
    cut: list[str] = []
    stack, seen = [value], set()
    reached = False
    while stack:
        t = stack.pop()
        if t in seen or t in const:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is None:  # a graph input
            cut.append(t)
            continue
        if node.name == node_name:
            reached = True
            cut += [i for i in node.input if i not in const and i not in cut]
            continue
        stack += [node.input[0]] if node.input else []
        cut += [i for i in node.input[1:] if i not in const and i not in cut]  # a shape computed from data
    return cut if reached else None


def pair_checks(proto: onnx.ModelProto, pairs, tf_values: Mapping[str, np.ndarray],
                onnx_values: Mapping[str, np.ndarray], runtime: str, input_name: str) -> dict[str, list[Judgement]]:
    """For each matched pair (export/tensor_map.Pair) whose node has a bound rule: the ONNX runtime's
    value within the local rounding bound of its node evaluated in float64 on the runtime's own inputs
    (the weights from `proto`, the reference graph), and TensorFlow's value within TF_SIDE times the
    bound of the same node seeded with the TF-vs-ONNX differences of those inputs (export/localize.py).
    Every figure is local: nothing carries error in from earlier layers, so a change at any depth shows
    against its own node's rounding. Pairs left out are judged by the scale-aware rule."""
    from tfscope.export.bounds import local

    const = constant_values(proto)
    by_onnx = {p.onnx_value: p for p in pairs}
    out: dict[str, list[Judgement]] = {}
    for p in pairs:
        cut = cut_inputs(proto, p.onnx_value, p.onnx_node, const)
        if cut is None or p.onnx_value not in onnx_values or p.tf_tensor not in tf_values \
                or any(i not in onnx_values for i in cut):
            continue
        observed = {i: np.asarray(onnx_values[i]) for i in cut}
        errors, tf_ok = {}, True
        for i in cut:
            if np.asarray(onnx_values[i]).dtype.kind != "f" or i in (g.name for g in proto.graph.input):
                continue  # exact data (shapes, indices) and the fed inputs: the same on both sides
            q = by_onnx.get(i)
            if q is None or q.tf_tensor not in tf_values:
                tf_ok = False
                break
            tf_in = q.tf_as_onnx(np.asarray(tf_values[q.tf_tensor]))
            if tf_in.shape != observed[i].shape:
                tf_ok = False
                break
            errors[i] = np.abs(tf_in.astype(np.float64) - observed[i].astype(np.float64))
        try:
            own = local(proto, observed, [p.onnx_value])
            seeded = local(proto, observed, [p.onnx_value], errors) if tf_ok and errors else own
        except Exception:  # noqa: BLE001  (a node the float64 evaluator cannot run alone: scale rule)
            continue
        v = p.onnx_value
        if own.rules.get(v) != "bound" or v not in own.bounds:
            continue
        oracle, bound = p.onnx_as_tf(own.values[v]), p.onnx_as_tf(own.bounds[v])
        ref, got = np.asarray(tf_values[p.tf_tensor]), p.onnx_as_tf(np.asarray(onnx_values[v]))
        if oracle.shape != got.shape:
            continue
        checks = [judge(got, oracle, bound, runtime=runtime, input=input_name, output=p.tf_tensor)]
        if tf_ok and seeded.rules.get(v) == "bound" and v in seeded.bounds and ref.shape == oracle.shape:
            checks.insert(0, judge(ref, oracle, TF_SIDE * p.onnx_as_tf(seeded.bounds[v]), runtime="TF",
                                   input=input_name, output=p.tf_tensor))
        out[p.tf_tensor] = checks
    return out

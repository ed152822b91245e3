"""The float64 oracle: the same network evaluated in float64, its float32 weights cast exactly.

Two routes. For a tfscope network, the network rebuilt in float64 (`RunSource.float64`, every
Variable cast exactly) and run by TensorFlow. For any ONNX graph (a tfscope export or a model
brought by its user), the graph with every float32 initializer, value type, Cast target and
constant cast to float64, run by `onnx.reference.ReferenceEvaluator` (a numpy interpreter, so
float64 is honoured by every op it implements). Where an op's schema admits no double (for
example DequantizeLinear's scale) the cast is impossible: `NoFloat64Form` names the node and op.

A float32 value cast to float64 is exact, so the oracle differs from the exact real-arithmetic
value of the network only by float64 rounding, 2^29 times smaller than float32's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tfscope.core.errors import TfscopeError

FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE


class NoFloat64Form(TfscopeError):
    """The model has no float64 form: an op admits no double, or the evaluator cannot run it."""


def _cast_tensor(t: onnx.TensorProto) -> None:
    if t.data_type == FLOAT:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))


def _cast_value_info(v: onnx.ValueInfoProto) -> None:
    tt = v.type.tensor_type
    if tt.elem_type == FLOAT:
        tt.elem_type = DOUBLE


def _cast_graph(g: onnx.GraphProto) -> None:
    for v in (*g.input, *g.output, *g.value_info):
        _cast_value_info(v)
    for t in g.initializer:
        _cast_tensor(t)
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                _cast_tensor(a.t)
            elif a.type == onnx.AttributeProto.GRAPH:
                _cast_graph(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _cast_graph(sub)
            elif a.type == onnx.AttributeProto.INT and a.name in ("to", "dtype") and a.i == FLOAT:
                a.i = DOUBLE
        if node.op_type == "Constant":  # value_float(s) would stay float32: give it a double tensor
            for a in list(node.attribute):
                if a.name in ("value_float", "value_floats"):
                    vals = np.array(a.f if a.name == "value_float" else list(a.floats), np.float32)
                    node.attribute.remove(a)
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(
                        vals.astype(np.float64).reshape(() if a.name == "value_float" else (-1,)))))


def _elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type shape inference (non-strict) can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001  (inference is advisory here; the evaluator has the last word)
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_float64_form(proto: onnx.ModelProto) -> None:
    """Refuse, naming the node, when a float32 tensor feeds or leaves an op whose schema has no double."""
    types, opset = _elem_types(proto), _opset(proto)
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise NoFloat64Form(f"node {node.name!r} ({node.domain}.{node.op_type}): custom-domain op, "
                                "no float64 form known")
        try:
            schema = onnx.defs.get_schema(node.op_type, opset)
        except onnx.defs.SchemaError:
            continue  # the checker reports unknown ops; the evaluator refuses them below
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        formals = [(p, node.input) for p in schema.inputs], [(p, node.output) for p in schema.outputs]
        for params in formals:
            for i, (param, names) in enumerate(params):
                name = names[i] if i < len(names) else ""
                types_ok = allowed.get(param.type_str, {param.type_str} if "(" in param.type_str else None)
                if (name and types.get(name) == FLOAT and types_ok is not None
                        and "tensor(double)" not in types_ok):
                    raise NoFloat64Form(
                        f"node {node.name!r} ({node.op_type}): its {param.name} ({name!r}) is float32 and "
                        f"the op admits no float64 (allowed: {', '.join(sorted(types_ok))}); "
                        "the model has no float64 oracle")


def cast_float64(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `proto` computing in float64 wherever it computed in float32 (weights cast exactly)."""
    check_float64_form(proto)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    _cast_graph(out.graph)
    return out


def float64_ops() -> list:
    """onnx.reference ops replaced so that float64 is honoured: onnx's Erf rounds its result to float32
    (`np.vectorize(math.erf, otypes=["f"])`), which would make every value downstream of an Erf (GELU)
    only float32-accurate."""
    from math import erf

    from onnx.reference.ops._op import OpRunUnaryNum

    class Erf(OpRunUnaryNum):
        def _run(self, x):
            return (np.vectorize(erf, otypes=[x.dtype])(x),)

    return [Erf]


class GraphOracle:
    """The float64 form of an ONNX graph; `values(feeds)` gives every tensor's float64 value."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        from onnx.reference import ReferenceEvaluator

        self.proto = proto
        self.proto64 = cast_float64(proto)
        try:
            self.evaluator = ReferenceEvaluator(self.proto64, new_ops=float64_ops())
        except Exception as e:  # noqa: BLE001  (an op without an implementation; the reason is reported)
            raise NoFloat64Form(f"onnx.reference cannot evaluate the float64 graph: {_first_line(e)}") from None

    def values(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every tensor (graph inputs, initializers, node outputs) in float64 where it was float32."""
        feeds64 = {k: (np.asarray(v).astype(np.float64) if np.asarray(v).dtype == np.float32 else np.asarray(v))
                   for k, v in feeds.items()}
        try:
            out = self.evaluator.run(None, feeds64, intermediate=True)
        except Exception as e:  # noqa: BLE001
            raise NoFloat64Form(f"onnx.reference failed on the float64 graph: {_first_line(e)}") from None
        return {k: np.asarray(v) for k, v in out.items() if k and v is not None}

    def outputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vals = self.values(feeds)
        return {o.name: vals[o.name] for o in self.proto.graph.output}


def run_float64(source, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The oracle through TensorFlow: `source.float64()` (a Source) called on the feeds cast exactly."""
    s64 = source.float64()
    if s64 is None:
        raise NoFloat64Form(f"{source.description}: {source.why_no_float64}")
    return s64.call({k: (np.asarray(v).astype(np.float64) if np.asarray(v).dtype == np.float32 else v)
                     for k, v in feeds.items()})


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]

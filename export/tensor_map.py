"""The explicit map between TensorFlow tensors and ONNX values, for per-operation localisation.

tf2onnx names the ONNX value it makes for a TF tensor after that tensor ('scope/op:0'), but a
name alone is not proof that both hold the same quantity: tf2onnx fuses ops and the fused node
keeps one member's name (Conv2D + BiasAdd + the Mul and Add of an inference BatchNormalization
become one Conv named after the Mul), and it moves 4-D convnet tensors to NCHW. A pair is
therefore kept only when all of these hold:

  1. the ONNX value has the TF tensor's name and is output k of a node named as the TF op, where
     the TF tensor is output k of that op (the node that makes a graph output, whose value
     tf2onnx renames to the output's name, is found by its node name);
  2. the ONNX op type computes what the TF op type computes (`SAME_OP`); a node that absorbed a
     bias (a Conv or Gemm with a third input whose TF op has two) is not the TF op alone;
  3. the shapes agree, given the value's layout: NCHW for the outputs of ONNX's convolution and
     pooling ops and for element-wise ops applied to an NCHW tensor, the TF layout otherwise.

Every other name is reported as unmatched with the reason, never compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# TF op type -> ONNX op types that compute the same tensor (tf2onnx 1.17's conversions).
SAME_OP: dict[str, set[str]] = {
    "MatMul": {"MatMul", "Gemm"}, "BatchMatMulV2": {"MatMul"}, "BatchMatMulV3": {"MatMul"},
    "BatchMatMul": {"MatMul"}, "Einsum": {"Einsum", "MatMul"},
    "Conv2D": {"Conv"}, "DepthwiseConv2dNative": {"Conv"}, "Conv1D": {"Conv"},
    "BiasAdd": {"Add"}, "AddV2": {"Add"}, "Add": {"Add"}, "Sub": {"Sub"}, "Mul": {"Mul"},
    "RealDiv": {"Div"}, "Div": {"Div"}, "Neg": {"Neg"}, "Maximum": {"Max"}, "Minimum": {"Min"},
    "Pow": {"Pow"}, "Sqrt": {"Sqrt"}, "Rsqrt": {"Reciprocal", "Div"}, "Square": {"Mul", "Pow"},
    "SquaredDifference": {"Mul"}, "Exp": {"Exp"}, "Log": {"Log"}, "Erf": {"Erf"}, "Abs": {"Abs"},
    "Relu": {"Relu"}, "Relu6": {"Clip", "Relu6"}, "Elu": {"Elu"}, "Selu": {"Selu"},
    "LeakyRelu": {"LeakyRelu"}, "Sigmoid": {"Sigmoid"}, "Tanh": {"Tanh"}, "Softplus": {"Softplus"},
    "Softmax": {"Softmax"}, "LogSoftmax": {"LogSoftmax"},
    "Mean": {"ReduceMean", "GlobalAveragePool"}, "Sum": {"ReduceSum"}, "Max": {"ReduceMax", "GlobalMaxPool"},
    "Min": {"ReduceMin"}, "Prod": {"ReduceProd"},
    "MaxPool": {"MaxPool"}, "AvgPool": {"AveragePool"},
    "FusedBatchNormV3": {"BatchNormalization"}, "FusedBatchNorm": {"BatchNormalization"},
    "Reshape": {"Reshape"}, "Transpose": {"Transpose"}, "ConcatV2": {"Concat"}, "Squeeze": {"Squeeze"},
    "ExpandDims": {"Unsqueeze"}, "GatherV2": {"Gather"}, "ResourceGather": {"Gather"}, "Pad": {"Pad"},
    "StridedSlice": {"Slice"}, "Slice": {"Slice"}, "Tile": {"Tile"}, "Cast": {"Cast"},
    "Identity": {"Identity"}, "Select": {"Where"}, "SelectV2": {"Where"},
}
# ONNX ops whose 4-D outputs are NCHW, and ops that keep their first input's layout.
NCHW_OPS = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
            "LRN", "InstanceNormalization"}
ELEMENTWISE = {"Relu", "Clip", "Add", "Sub", "Mul", "Div", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu",
               "HardSigmoid", "HardSwish", "Identity", "Cast", "Neg", "Abs", "Sqrt", "Exp", "Max", "Min",
               "Softplus", "Erf", "Pow", "Reciprocal"}
TO_NHWC = (0, 2, 3, 1)  # np.transpose of an NCHW array to NHWC
TO_NCHW = (0, 3, 1, 2)


@dataclass(frozen=True)
class Pair:
    """One TF tensor and the ONNX value that holds the same quantity."""

    tf_tensor: str  # 'scope/op:0'
    tf_op: str
    tf_type: str
    onnx_value: str
    onnx_node: str
    onnx_type: str
    nchw: bool  # the ONNX value is the TF tensor in NCHW layout
    pooled: bool = False  # the ONNX value is (N, C, 1, 1), the TF tensor (N, C): a global pool kept its dims

    def onnx_as_tf(self, value: np.ndarray) -> np.ndarray:
        """The ONNX value in the TF tensor's layout."""
        if self.pooled:
            return value.reshape(value.shape[:2])
        return np.transpose(value, TO_NHWC) if self.nchw else value

    def tf_as_onnx(self, value: np.ndarray) -> np.ndarray:
        """The TF tensor in the ONNX value's layout."""
        if self.pooled:
            return value.reshape(*value.shape[:2], 1, 1)
        return np.transpose(value, TO_NCHW) if self.nchw else value

    def to_dict(self) -> dict:
        return {"tf_tensor": self.tf_tensor, "tf_op": self.tf_op, "tf_type": self.tf_type,
                "onnx_value": self.onnx_value, "onnx_node": self.onnx_node, "onnx_type": self.onnx_type,
                "layout": "NCHW" if self.nchw else "same"}


@dataclass
class TensorMap:
    pairs: list[Pair]  # in the TF graph's topological order
    unmatched: dict[str, str]  # TF tensor -> why it has no ONNX counterpart
    tf_inputs: dict[str, list[str]]  # TF op -> its data inputs ('op:k'), for the scale of each op
    tf_types: dict[str, str]  # TF op -> its type

    def considered(self, tensors) -> list[str]:
        """The TF tensors a localisation can speak for: computed by an op other than Identity
        (frozen weights are read through Identity ops; tf.function adds them at every boundary)."""
        return [t for t in tensors if self.tf_types.get(t.rsplit(":", 1)[0]) not in (None, "Identity")]

    @property
    def onnx_values(self) -> list[str]:
        return [p.onnx_value for p in self.pairs]


def _tf_topological(graph_def) -> list:
    """GraphDef nodes in topological order (a frozen GraphDef is usually, not always, ordered)."""
    nodes = {n.name: n for n in graph_def.node}
    deps = {n.name: [i.lstrip("^").split(":")[0] for i in n.input] for n in graph_def.node}
    order, seen = [], set()
    for start in nodes:
        stack = [(start, False)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(nodes[name])
                continue
            if name in seen or name not in nodes:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((d, False) for d in reversed(deps[name]) if d not in seen)
    return order


def _tensor(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def onnx_layouts(proto) -> dict[str, bool]:
    """ONNX value -> True when it is a 4-D tensor in NCHW layout (see the module docstring)."""
    nchw: dict[str, bool] = {}
    for node in proto.graph.node:
        if node.op_type in NCHW_OPS:
            flag = True
        elif node.op_type in ELEMENTWISE:
            flag = any(nchw.get(i, False) for i in node.input[:2])
        elif node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
            flag = not nchw.get(node.input[0], False) and perm == list(TO_NCHW)
        else:
            flag = False
        for o in node.output:
            nchw[o] = flag
    return nchw


INSERTED = {"Transpose", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Cast"}  # layout glue tf2onnx adds


def build(graph_def, proto, tf_shapes: Mapping[str, tuple] | None = None,
          onnx_shapes: Mapping[str, tuple] | None = None) -> TensorMap:
    """The pairs of TF tensors and ONNX values that hold the same quantity (module docstring).
    Direct pairs share a name (rules 1-3). A TF tensor without one is paired through its consumer:
    when TF op T and ONNX node N are a pair, N's data input i holds T's data input i (a fused node
    named after one member, such as Conv+BatchNormalization, is found this way: the ReLU that
    reads it names its output). With shapes (from one evaluation of both sides) rule 3 is applied."""
    producers = {o: (node, k) for node in proto.graph.node for k, o in enumerate(node.output)}
    initializers = {i.name for i in proto.graph.initializer}
    layouts = onnx_layouts(proto)
    tf_names = {n.name for n in graph_def.node}
    onnx_by_name = {n.name: n for n in proto.graph.node}
    graph_outputs = {o.name for o in proto.graph.output}
    pairs: dict[str, Pair] = {}
    unmatched, tf_inputs, tf_types = {}, {}, {}
    order = [n for n in _tf_topological(graph_def)]
    skip = {"Const", "Placeholder", "NoOp"}

    def shape_problem(t: str, v: str) -> str | None:
        if tf_shapes is None or onnx_shapes is None:
            return None
        ts, os_ = tuple(tf_shapes.get(t, ())), tuple(onnx_shapes.get(v, ()))
        if layouts.get(v, False):
            if len(ts) == 2 and os_ == (*ts, 1, 1):
                return None
            if len(ts) != 4:
                return f"ONNX value is NCHW, TF tensor has rank {len(ts)}"
            ts = tuple(ts[i] for i in TO_NCHW)
        return None if os_ == ts else f"shape {list(os_)} in ONNX, {list(ts)} in TF"

    def computing_node(v: str):
        node = producers[v][0]
        while node.op_type in INSERTED and node.name not in tf_names and node.input and node.input[0] in producers:
            node = producers[node.input[0]][0]
        return node

    for node in order:
        data_inputs = [_tensor(i) for i in node.input if not i.startswith("^")]
        tf_inputs[node.name], tf_types[node.name] = data_inputs, node.op
        if node.op in skip or node.op == "Identity":  # weight reads and call boundaries: nothing computed
            continue
        t = f"{node.name}:0"  # the op's result; later outputs (FusedBatchNorm's statistics) are not compared
        v = t
        if t not in producers:
            # tf2onnx renames the value of the node that makes a graph output to the output's name
            renamed = onnx_by_name.get(node.name)
            if renamed is None or not renamed.output or renamed.output[0] not in graph_outputs:
                unmatched[t] = "no ONNX value of this name (fused, folded or renamed)"
                continue
            v = renamed.output[0]
        onode, ok = producers[v]
        why = None
        if onode.name != node.name or ok != 0:
            why = f"ONNX value is output {ok} of node {onode.name}"
        elif onode.op_type not in SAME_OP.get(node.op, set()):
            why = f"TF {node.op} became ONNX {onode.op_type} (fused or rewritten)"
        elif onode.op_type in ("Conv", "Gemm") and len([i for i in onode.input if i]) > len(data_inputs):
            why = f"ONNX {onode.op_type} absorbed a bias the TF {node.op} does not add"
        why = why or shape_problem(t, v)
        if why is not None:
            unmatched[t] = why
        else:
            pairs[t] = _pair(t, node.name, node.op, v, onode, layouts.get(v, False), tf_shapes)
    taken = {p.onnx_value for p in pairs.values()}
    for direct in list(pairs.values()):
        onode = onnx_by_name[direct.onnx_node]
        for t, v in zip(tf_inputs[direct.tf_op], onode.input):
            op = t.rsplit(":", 1)[0]
            if t in pairs or v in taken or v in initializers or v not in producers or not t.endswith(":0") \
                    or (v == t and t in unmatched):  # refused by name above: the consumer does not overrule
                continue
            if tf_types.get(op) in skip | {"Identity"} or shape_problem(t, v):
                continue
            cnode = computing_node(v)
            pairs[t] = _pair(t, op, tf_types[op], v, cnode, layouts.get(v, False), tf_shapes)
            taken.add(v)
            unmatched.pop(t, None)
    ranked = {n.name: i for i, n in enumerate(order)}
    ordered = sorted(pairs.values(), key=lambda p: ranked[p.tf_op])
    return TensorMap(ordered, unmatched, tf_inputs, tf_types)


def _pair(t: str, op: str, op_type: str, v: str, onode, nchw: bool, tf_shapes) -> Pair:
    pooled = nchw and tf_shapes is not None and len(tuple(tf_shapes.get(t, ()))) == 2
    return Pair(t, op, op_type, v, onode.name, onode.op_type, nchw, pooled)

"""Conversion of any Source to ONNX, and the checks that refuse an invalid conversion.

The graph converted is `source.frozen_graph()` (Variables folded into constants) through
`tf2onnx.convert.from_graph_def`, so every ONNX value that tf2onnx keeps from TensorFlow has the
name of the very tensor `Source.tensors()` evaluates: the TF side of localisation is the graph
that was converted. Graph inputs and outputs are renamed to the source's input and output names,
and a free first dimension is named `batch`.

A conversion is refused (ConversionError: one line naming the node, its op and what rejected it)
when tf2onnx cannot convert an op, when `onnx.checker` (full check) rejects the model, or when
onnxruntime cannot build a session from it. Nothing is written here; the caller writes the file.
"""

from __future__ import annotations

import logging
import re

from tfscope.core.errors import TfscopeError
from tfscope.core.sources.source import Source

BATCH = "batch"


class ConversionError(TfscopeError):
    """tf2onnx, onnx.checker or onnxruntime refused the converted model; names node, op and judge."""


def _first(text: str) -> str:
    lines = [x.strip() for x in str(text).strip().splitlines() if x.strip()]
    return (lines[0] if lines else "")[:200]


class _Unsupported(logging.Handler):
    """Collects tf2onnx's 'Tensorflow op [NAME: TYPE] is not supported' errors."""

    PATTERN = re.compile(r"Tensorflow op \[(?P<name>[^:\]]+): (?P<op>[^\]]+)\] is not supported")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = self.PATTERN.search(record.getMessage())
        if m:
            self.found.append((m["name"], m["op"]))


def _tf_node(proto, hint: str) -> tuple[str, str]:
    """(node name, op type) of the ONNX node an error message names, or ('?', '?')."""
    for node in proto.graph.node:
        if node.name and node.name in hint:
            return node.name, node.op_type
    for node in proto.graph.node:
        if any(o and o in hint for o in node.output):
            return node.name, node.op_type
    return "?", "?"


def to_onnx(source: Source, opset: int):
    """The source as a checked onnx.ModelProto with the source's input and output names."""
    import tf2onnx

    graph_def, inputs, outputs = source.frozen_graph()
    rename = {t: s.name for t, s in zip(inputs, source.inputs)}
    rename.update({t: name for name, t in outputs.items()})
    log = logging.getLogger("tf2onnx")
    log.setLevel(logging.ERROR)
    # tf2onnx names the nodes it inserts from a process-wide counter ('..._reshape__484'): started
    # afresh, the same graph converts to the same names in any process, so verify's fresh conversion
    # of an edited file (export/graph_verdict.py) names its nodes as the export did
    tf2onnx.utils.INTERNAL_NAME = 1
    catcher = _Unsupported()
    log.addHandler(catcher)
    try:
        proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=list(outputs.values()),
                                                  opset=opset, tensors_to_rename=rename)
    except Exception as e:  # noqa: BLE001  (tf2onnx raises bare Exceptions, ValueErrors, KeyErrors...)
        if catcher.found:
            name, op = catcher.found[0]
            raise ConversionError(f"tf2onnx cannot convert TF op {name} ({op}): no ONNX conversion at opset {opset}"
                                  ) from None
        raise ConversionError(f"tf2onnx failed to convert {source.description}: {_first(e)}") from None
    finally:
        log.removeHandler(catcher)
    if catcher.found:
        name, op = catcher.found[0]
        raise ConversionError(f"tf2onnx cannot convert TF op {name} ({op}): no ONNX conversion at opset {opset}")
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH
    have = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    want = (source.input_names, source.outputs)
    if sorted(have[0]) != sorted(want[0]) or sorted(have[1]) != sorted(want[1]):
        raise ConversionError(f"tf2onnx produced inputs {have[0]} and outputs {have[1]}; the model has "
                              f"inputs {want[0]} and outputs {want[1]}")
    check(proto)
    return proto


def check(proto) -> None:
    """onnx.checker (full check, with shape inference) and an onnxruntime session: either refusal
    is a ConversionError naming the node and op the message points at."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001  (ValidationError, InferenceError)
        name, op = _tf_node(proto, str(e))
        raise ConversionError(f"onnx.checker rejects node {name} ({op}): {_first(e)}") from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (onnxruntime raises its own Fail/InvalidGraph/NotImplemented types)
        name, op = _tf_node(proto, str(e))
        raise ConversionError(f"onnxruntime rejects node {name} ({op}): {_first(e)}") from None

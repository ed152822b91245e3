"""Every runtime the equivalence report runs, each as `run(x) -> z` and `stages(x) -> {stage: out}`.

The reference is the live network in eager mode. The others: the same network as a graph
(`tf.function`) and XLA-compiled (`jit_compile=True`); the reloaded SavedModel's signatures;
onnxruntime's CPU provider with graph optimisation off and fully on; and onnx's own
`ReferenceEvaluator`, an independent ONNX interpreter written in numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf

from tfscope.core.errors import RunDirError
from tfscope.core.nn.network import Regressor
from tfscope.export.serving import INPUT, LAYERS, OUTPUT, SERVING, UNSTANDARDIZE, live_stages, stage_names

EAGER = "eager"
RUNTIMES = ("graph", "xla", "savedmodel", "ort_noopt", "ort_all", "onnx_reference")
DESCRIPTIONS = {
    "eager": "live network, eager (the reference)",
    "graph": "live network, tf.function",
    "xla": "live network, tf.function(jit_compile=True)",
    "savedmodel": "tf.saved_model.load, serving_default",
    "ort_noopt": "onnxruntime CPU, graph optimisation off",
    "ort_all": "onnxruntime CPU, ORT_ENABLE_ALL",
    "onnx_reference": "onnx.reference.ReferenceEvaluator",
}

Arrays = dict[str, np.ndarray]


@dataclass
class Runtime:
    name: str
    run: Callable[[np.ndarray], np.ndarray]  # (batch, n_in) -> (batch, n_out)
    stages: Callable[[np.ndarray], Arrays]  # (batch, n_in) -> {stage name: (batch, width)}


def _np(d: dict) -> Arrays:
    return {k: np.asarray(v) for k, v in d.items()}


def live_runtimes(model: Regressor) -> dict[str, Runtime]:
    """Eager, graph and XLA forms of the live network (the two compiled ones built once, cached)."""
    dt = model.dtype
    # reduce_retracing: one trace with a symbolic batch serves every input set; XLA still
    # compiles once per concrete shape when called.
    opts = dict(autograph=False, reduce_retracing=True)
    graph_z = tf.function(model.__call__, **opts)
    graph_s = tf.function(lambda x: live_stages(model, x), **opts)
    xla_z = tf.function(model.__call__, jit_compile=True, **opts)
    xla_s = tf.function(lambda x: live_stages(model, x), jit_compile=True, **opts)

    def make(name, fz, fs):
        return Runtime(name, lambda x: fz(tf.constant(x, dt)).numpy(), lambda x: _np(fs(tf.constant(x, dt))))

    return {EAGER: make(EAGER, model, lambda x: live_stages(model, x)),
            "graph": make("graph", graph_z, graph_s), "xla": make("xla", xla_z, xla_s)}


def savedmodel_runtime(path: Path) -> Runtime:
    loaded = tf.saved_model.load(str(path))
    serve, layers = loaded.signatures[SERVING], loaded.signatures[LAYERS]
    return Runtime("savedmodel", lambda x: serve(**{INPUT: tf.constant(x)})[OUTPUT].numpy(),
                   lambda x: _np(layers(**{INPUT: tf.constant(x)})))


def onnx_stage_tensors(proto: onnx.ModelProto, stages: list[str]) -> dict[str, str]:
    """For each stage, the ONNX tensor holding its output: the first output of the last node whose
    name lies in the stage's name scope. A stage the converter folded away has no entry, except
    the last, which is the graph output by definition."""
    found: dict[str, str] = {}
    for node in proto.graph.node:  # nodes are in topological order
        scope = node.name.split("/", 1)[0]
        if scope in stages and node.output:
            found[scope] = node.output[0]
    found.setdefault(UNSTANDARDIZE, OUTPUT)
    return {s: found[s] for s in stages if s in found}


def with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `proto` that also outputs the named intermediate tensors."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    elem = proto.graph.input[0].type.tensor_type.elem_type
    have = {o.name for o in out.graph.output}
    for n in names:
        if n not in have:
            out.graph.output.append(onnx.helper.make_tensor_value_info(n, elem, None))
            have.add(n)
    return out


def ort_runtime(proto: onnx.ModelProto, stages: list[str], optimise: bool, threads: int = 0) -> Runtime:
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise else ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    def session(p: onnx.ModelProto):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        return ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])

    main = session(proto)
    tensors = onnx_stage_tensors(proto, stages)
    debug: list = []  # the session with intermediate outputs, built on first use

    def run_stages(x: np.ndarray) -> Arrays:
        if not debug:
            debug.append(session(with_outputs(proto, list(tensors.values()))))
        names = list(tensors.values())
        values = debug[0].run(names, {INPUT: x})
        return {stage: v for stage, v in zip(tensors, values)}

    return Runtime("ort_all" if optimise else "ort_noopt", lambda x: main.run([OUTPUT], {INPUT: x})[0], run_stages)


def reference_runtime(proto: onnx.ModelProto, stages: list[str]) -> Runtime:
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(proto)
    tensors = onnx_stage_tensors(proto, stages)

    def run_stages(x: np.ndarray) -> Arrays:
        values = ev.run(None, {INPUT: x}, intermediate=True)
        return {stage: np.asarray(values[t]) for stage, t in tensors.items()}

    return Runtime("onnx_reference", lambda x: np.asarray(ev.run([OUTPUT], {INPUT: x})[0]), run_stages)


def loading(path: Path, what: str, load: Callable):
    """`load()`, or RunDirError naming `path` when it fails: parsers of broken files raise many types
    (protobuf's DecodeError, OSError, onnxruntime's own), all meaning the same thing here."""
    try:
        return load()
    except Exception as e:  # noqa: BLE001  (see the docstring)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RunDirError(f"{path}: unreadable {what} ({first[:160]})") from None


def all_runtimes(model: Regressor, saved_model: Path, onnx_path: Path) -> dict[str, Runtime]:
    """The reference (eager) first, then every runtime in RUNTIMES order. A file that does not
    load (cut short, or not what its name says) is a RunDirError naming it."""
    stages = stage_names(model)
    out = live_runtimes(model)
    out["savedmodel"] = loading(saved_model, "SavedModel", lambda: savedmodel_runtime(saved_model))
    proto = loading(onnx_path, "ONNX model", lambda: onnx.load(str(onnx_path)))
    out["ort_noopt"] = loading(onnx_path, "ONNX model", lambda: ort_runtime(proto, stages, optimise=False))
    out["ort_all"] = ort_runtime(proto, stages, optimise=True)
    out["onnx_reference"] = reference_runtime(proto, stages)
    return {k: out[k] for k in (EAGER, *RUNTIMES)}

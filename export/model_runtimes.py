"""Every runtime of an export made from a Source (a Keras file or a SavedModel), each as
`feeds -> {output: array}`, plus the intermediate values of the ONNX runtimes for localisation.

The reference is the source model called eagerly. Then: the source as a `tf.function` and
XLA-compiled (a model XLA cannot compile gets a runtime whose `error` names the op); the export's
reloaded SavedModel (`serving_default`); onnxruntime with graph optimisation off and
ORT_ENABLE_ALL; onnx's ReferenceEvaluator (an independent numpy interpreter).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tfscope.core.sources.source import Source

Feeds = dict[str, np.ndarray]
Arrays = dict[str, np.ndarray]
DESCRIPTIONS = {
    "eager": "source model, eager (the reference)",
    "graph": "source model, tf.function",
    "xla": "source model, tf.function(jit_compile=True)",
    "savedmodel": "tf.saved_model.load of the export, serving_default",
    "ort_noopt": "onnxruntime CPU, graph optimisation off",
    "ort_all": "onnxruntime CPU, ORT_ENABLE_ALL",
    "onnx_reference": "onnx.reference.ReferenceEvaluator",
}


@dataclass
class ModelRuntime:
    name: str
    run: Callable[[Feeds], Arrays]
    intermediates: Callable[[Feeds, Sequence[str]], Arrays] | None = None  # ONNX values by name
    error: str | None = None  # set when the runtime cannot run this model at all (XLA: the op)


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def xla_op(e: BaseException) -> str:
    """The op XLA could not compile, from its error message ('... op X of type Y ...'), else the message."""
    text = str(e)
    for pattern in (r"Detected unsupported operations[^:]*: (\S+)", r"No registered '(\w+)' OpKernel for XLA",
                    r"op '?(\w+)'? .*?not .*?compil", r"unsupported op:? '?(\w+)"):
        m = re.search(pattern, text)
        if m:
            return m.group(1).rstrip(",:")
    return _first(e)


def source_runtimes(source: Source) -> dict[str, ModelRuntime]:
    """eager, graph and XLA forms of the source model; XLA's error (if any) found on first use."""
    out = {"eager": ModelRuntime("eager", source.call),
           "graph": ModelRuntime("graph", lambda f: source.run_function(f, jit_compile=False))}
    xla = ModelRuntime("xla", lambda f: source.run_function(f, jit_compile=True))
    out["xla"] = xla
    return out


def probe_xla(runtime: ModelRuntime, feeds: Feeds) -> None:
    """Run XLA once; a model it cannot compile keeps the op in `error` and is not run again."""
    try:
        runtime.run(feeds)
    except Exception as e:  # noqa: BLE001  (InvalidArgumentError, UnimplementedError, NotFoundError...)
        runtime.error = f"not compilable: {xla_op(e)}"


def _session(proto, optimise: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def with_outputs(proto, names: Sequence[str], dtypes: dict[str, np.dtype] | None = None):
    """A copy of `proto` that also outputs the named values (element type from `dtypes`, else float)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    for n in names:
        if n not in have:
            dt = (dtypes or {}).get(n, np.dtype(np.float32))
            out.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(dt),
                                                                       None))
            have.add(n)
    return out


def ort_runtime(proto, outputs: Sequence[str], optimise: bool) -> ModelRuntime:
    """onnxruntime CPU; `intermediates` builds a second session with the named values as outputs
    (at the same optimisation level, so the values are those this runtime computes)."""
    main = _session(proto, optimise)
    names = list(outputs)

    def intermediates(feeds: Feeds, values: Sequence[str], dtypes: dict | None = None) -> Arrays:
        debug = _session(with_outputs(proto, values, dtypes), optimise)
        got = debug.run(list(values), dict(feeds))
        return dict(zip(values, got))

    return ModelRuntime("ort_all" if optimise else "ort_noopt",
                        lambda feeds: dict(zip(names, main.run(names, dict(feeds)))), intermediates)


def reference_runtime(proto, outputs: Sequence[str]) -> ModelRuntime:
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(proto)
    names = list(outputs)

    def intermediates(feeds: Feeds, values: Sequence[str], dtypes: dict | None = None) -> Arrays:
        every = ev.run(None, dict(feeds), intermediate=True)
        return {v: np.asarray(every[v]) for v in values if v in every}

    return ModelRuntime("onnx_reference",
                        lambda feeds: {k: np.asarray(v) for k, v in zip(names, ev.run(names, dict(feeds)))},
                        intermediates)

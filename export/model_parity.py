"""verify for an export of any model (a Keras file or a SavedModel signature): every runtime of
export/model_runtimes.py against the source model called eagerly, every named output of every
input set, then the deep check and the localisation.

Deep check (on by default): every TF tensor of the converted graph that the tensor map
(export/tensor_map.py) pairs with an ONNX value is evaluated on both sides (the TF graph, i.e. the
SavedModel's frozen function, against onnxruntime with optimisation off) on the first input set
and judged by the scale-aware rule of export/localize.py. A tensor beyond that rule fails the
report even when the outputs agree. When an output fails on an ONNX runtime, the same comparison
is made with that runtime's own intermediate values on the failing input set.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from tfscope.core.errors import RunDirError
from tfscope.core.sources.source import Source, load_keras, load_saved_model
from tfscope.export.compare import DEFAULT_TOLERANCE, Comparison, combine, compare
from tfscope.export.inputs import INPUTS, load_feed_sets
from tfscope.export.localize import TensorLocalisation, localise_tensors
from tfscope.export.model_runtimes import (
    DESCRIPTIONS,
    ModelRuntime,
    ort_runtime,
    probe_xla,
    reference_runtime,
    source_runtimes,
)
from tfscope.export.preflight import MARKER
from tfscope.export.runtimes import loading

SAVED_MODEL, ONNX_FILE, PARITY = "saved_model", "model.onnx", "parity.json"
SOURCE_DIR, KERAS_FILE = "source", "model.keras"
ORDER = ("graph", "xla", "savedmodel", "ort_noopt", "ort_all", "onnx_reference")
ONNX_RUNTIMES = ("ort_noopt", "ort_all", "onnx_reference")
# Runtimes whose failure to run a model says nothing about the export: XLA lacks kernels for some
# ops, the reference evaluator some ops' edge cases. Their row names the reason and does not fail.
EXCUSED = ("xla", "onnx_reference")


def read_meta(d: Path) -> dict | None:
    """export.json of a model export (one with a 'source'), or None for a tfscope run's export."""
    try:
        meta = json.loads((d / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("source"), dict) else None


def export_source(d: Path, meta: dict) -> Source:
    """The source model an export was made from, as carried in the export itself."""
    src = meta["source"]
    if src["kind"] == "keras":
        return load_keras(d / SOURCE_DIR / KERAS_FILE)
    return load_saved_model(d / SAVED_MODEL, src.get("signature", "serving_default"))


def converted_graph(d: Path, meta: dict) -> Source:
    """The SavedModel signature the ONNX file was converted from (the TF side of localisation)."""
    return load_saved_model(d / SAVED_MODEL, meta["source"].get("signature", "serving_default"))


def _nan_row(runtime: str, input_name: str, output: str, like: Comparison) -> Comparison:
    nan = math.nan
    return dataclasses.replace(like, runtime=runtime, input=input_name, output=output, max_abs=nan, mean_abs=nan,
                               median_abs=nan, max_rel=nan, min_atol=nan, min_rtol=nan, failed_elements=0,
                               first_failed_row=None, passed=True)


def deep_check(graph: Source, proto, runtime: ModelRuntime, feeds: dict, set_name: str,
               dtype: str) -> TensorLocalisation:
    """Every matched tensor of the TF graph against `runtime`'s ONNX values on `feeds`."""
    from tfscope.export import tensor_map

    graph_def, _, _ = graph.frozen_graph()
    tf_values = graph.tensors(feeds)  # every floating tensor an op computes
    candidates = tensor_map.build(graph_def, proto)
    wanted = [p.onnx_value for p in candidates.pairs if p.tf_tensor in tf_values]
    dtypes = {p.onnx_value: tf_values[p.tf_tensor].dtype for p in candidates.pairs if p.tf_tensor in tf_values}
    onnx_values = runtime.intermediates(feeds, wanted, dtypes) if wanted else {}
    tmap = tensor_map.build(graph_def, proto, {k: v.shape for k, v in tf_values.items()},
                            {k: np.shape(v) for k, v in onnx_values.items()})
    return localise_tensors(tmap, tf_values, onnx_values, runtime.name, set_name, dtype,
                            len(tmap.considered(tf_values)))


def _deep_row(loc: TensorLocalisation, like: Comparison) -> Comparison:
    """One table row for a deep check: the figures of its first failing (else worst) tensor."""
    if not loc.checks:
        return dataclasses.replace(_nan_row(f"deep {loc.runtime}", loc.input, "0 tensors matched", like))
    worst = loc.first or max(loc.checks, key=lambda c: c.comparison.max_abs / c.scale)
    return dataclasses.replace(worst.comparison, runtime=f"deep {loc.runtime}", input=loc.input,
                               output=f"{loc.matched} tensors", passed=loc.passed)


def verify_model(d: Path, meta: dict, atol: float | None, rtol: float | None, deep: bool = True,
                 reference: bool = True, source: Source | None = None):
    """The Report of a model export (see the module docstring); parity.json is the caller's."""
    import onnx

    from tfscope.export.parity import Report

    for part in (SAVED_MODEL, ONNX_FILE, INPUTS) + ((f"{SOURCE_DIR}/{KERAS_FILE}",)
                                                   if meta["source"]["kind"] == "keras" else ()):
        if not (d / part).exists():
            raise RunDirError(f"{d}: not a complete export directory (no {part})")
    try:
        sets = load_feed_sets(d / INPUTS)
    except (OSError, ValueError) as e:
        raise RunDirError(f"{d / INPUTS}: unreadable ({e})") from None
    source = source or export_source(d, meta)
    outputs = list(source.outputs)
    runtimes = source_runtimes(source)
    graph = converted_graph(d, meta)  # a load of its own: the reloaded SavedModel, and the TF side of the map
    runtimes["savedmodel"] = ModelRuntime("savedmodel", graph.call)
    proto = loading(d / ONNX_FILE, "ONNX model", lambda: onnx.load(str(d / ONNX_FILE)))
    runtimes["ort_noopt"] = loading(d / ONNX_FILE, "ONNX model", lambda: ort_runtime(proto, outputs, False))
    runtimes["ort_all"] = ort_runtime(proto, outputs, True)
    if reference:
        runtimes["onnx_reference"] = reference_runtime(proto, outputs)
    first_set = next(iter(sets.values()))
    probe_xla(runtimes["xla"], first_set)
    refs = {name: runtimes["eager"].run(feeds) for name, feeds in sets.items()}
    out_dtype = str(next(iter(refs.values()))[outputs[0]].dtype)
    dtype = out_dtype if out_dtype in DEFAULT_TOLERANCE else "float32"
    atol = DEFAULT_TOLERANCE[dtype] if atol is None else float(atol)
    rtol = DEFAULT_TOLERANCE[dtype] if rtol is None else float(rtol)
    comparisons, summaries = [], []
    for rt in ORDER:
        if rt not in runtimes:
            continue
        runtime = runtimes[rt]
        got = None
        if runtime.error is None:
            try:
                got = {name: runtime.run(feeds) for name, feeds in sets.items()}
            except Exception as e:  # noqa: BLE001  (a runtime that cannot run the model is a row, not a crash)
                runtime.error = f"cannot run: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"
        for out in outputs:
            label = rt if len(outputs) == 1 else f"{rt} [{out}]"
            if got is None:
                like = compare(refs[next(iter(sets))][out], refs[next(iter(sets))][out], atol, rtol, rt, "", out)
                row = _nan_row(label, runtime.error or "", out, like)
                row.passed = rt in EXCUSED  # XLA's missing kernels and the reference evaluator's gaps
                comparisons.append(row)
                summaries.append(row)
                continue
            parts = [compare(refs[s][out], got[s][out], atol, rtol, rt, s, out) for s in sets]
            comparisons += parts
            summary = combine(parts, [refs[s][out] for s in sets], [got[s][out] for s in sets])
            summaries.append(dataclasses.replace(summary, runtime=label))
    inputs = {name: list(np.shape(next(iter(feeds.values())))) for name, feeds in sets.items()}
    report = Report(str(d), dtype, atol, rtol, inputs, comparisons, summaries)
    first = report.first_failure
    loc = None
    if deep:
        set_name = next(iter(sets))
        loc = deep_check(graph, proto, runtimes["ort_noopt"], sets[set_name], set_name, dtype)
        row = _deep_row(loc, comparisons[0])
        report.comparisons.append(row)
        report.summaries.append(row)
    if first is not None and first.runtime in ONNX_RUNTIMES and first.runtime in runtimes:
        if loc is None or loc.passed or first.runtime != "ort_noopt" or first.input != loc.input:
            loc = deep_check(graph, proto, runtimes[first.runtime], sets[first.input], first.input, dtype)
    elif first is not None:
        loc = TensorLocalisation(first.runtime, first.input, note=(
            f"{first.runtime} is a TensorFlow runtime; localisation compares the TF graph with an ONNX runtime, "
            "so no operation is named"))
        loc.first_diverging = None
    if loc is not None and (not loc.passed or first is not None):
        report.localisation = loc
    report.deep = loc  # type: ignore[attr-defined]  (kept for --detail and parity.json)
    return report


def report_dict(report, meta: dict) -> dict:
    """parity.json of a model export: the Report's own fields, this flow's runtime descriptions,
    the source, and every tensor of the deep check."""
    out = report.to_dict()
    out["reference"] = "eager"
    out["runtimes"] = {k: DESCRIPTIONS[k] for k in ("eager", *ORDER)}
    out["source"] = meta["source"]
    deep = getattr(report, "deep", None)
    out["deep"] = deep.to_dict() if deep is not None else None
    return out

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
               dtype: str, reference=None) -> TensorLocalisation:
    """Every matched tensor of the TF graph against `runtime`'s ONNX values on `feeds`, judged by its
    node's local rounding bound in `reference` (the reference ONNX graph, export/graph_verdict.py)
    where it has one, else by the scale-aware rule (export/localize.py)."""
    import onnx

    from tfscope.export import tensor_map

    graph_def, _, _ = graph.frozen_graph()
    tf_values = graph.tensors(feeds)  # every floating tensor an op computes
    candidates = tensor_map.build(graph_def, proto)
    wanted = [p.onnx_value for p in candidates.pairs if p.tf_tensor in tf_values]
    dtypes = {p.onnx_value: tf_values[p.tf_tensor].dtype for p in candidates.pairs if p.tf_tensor in tf_values}
    judge_on = reference if reference is not None and dtype == "float32" else None
    if judge_on is not None:  # the inputs of each matched node too, for its local check
        from tfscope.export.graph_verdict import constant_values, cut_inputs
        from tfscope.export.oracle import _elem_types

        const, types = constant_values(judge_on), _elem_types(proto)
        for p in candidates.pairs:
            for i in cut_inputs(judge_on, p.onnx_value, p.onnx_node, const) or []:
                if i not in dtypes and i in types and i not in (g.name for g in proto.graph.input):
                    wanted.append(i)
                    dtypes[i] = onnx.helper.tensor_dtype_to_np_dtype(types[i])
    onnx_values = runtime.intermediates(feeds, list(dict.fromkeys(wanted)), dtypes) if wanted else {}
    onnx_values.update({k: np.asarray(v) for k, v in feeds.items()})  # graph inputs, as fed
    tmap = tensor_map.build(graph_def, proto, {k: v.shape for k, v in tf_values.items()},
                            {k: np.shape(v) for k, v in onnx_values.items()})
    judged = None
    if judge_on is not None:
        from tfscope.export.graph_verdict import pair_checks

        judged = pair_checks(judge_on, tmap.pairs, tf_values, onnx_values, runtime.name, set_name)
    return localise_tensors(tmap, tf_values, onnx_values, runtime.name, set_name, dtype,
                            len(tmap.considered(tf_values)), judged)


def _deep_row(loc: TensorLocalisation, like: Comparison) -> Comparison:
    """One table row for a deep check: the figures of its first failing (else worst) tensor."""
    if not loc.checks:
        return dataclasses.replace(_nan_row(f"deep {loc.runtime}", loc.input, "0 tensors matched", like))
    worst = loc.first or max(loc.checks, key=lambda c: c.use)
    return dataclasses.replace(worst.comparison, runtime=f"deep {loc.runtime}", input=loc.input,
                               output=f"{loc.matched} tensors", passed=loc.passed)


def recorded_digest(d: Path) -> str | None:
    """The SHA-256 of model.onnx that the export recorded in export.json, if any."""
    try:
        meta = json.loads((d / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = meta.get("onnx_sha256") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def _reference(d: Path, meta: dict, graph: Source):
    """The reference ONNX graph of export/graph_verdict.py: the file as exported, or a fresh conversion."""
    from tfscope.export.convert import to_onnx
    from tfscope.export.graph_verdict import reference_graph

    try:
        opset = int(json.loads((d / MARKER).read_text(encoding="utf-8")).get("opset", 17))
    except (OSError, ValueError, TypeError, AttributeError):
        opset = 17
    return reference_graph(d / ONNX_FILE, recorded_digest(d), lambda: to_onnx(graph, opset))


def _run_all(runtimes: dict[str, ModelRuntime], sets: dict) -> dict[str, dict]:
    """Every runtime on every input set: {runtime: {set: {output: array}}}; a runtime that cannot run
    the model keeps the reason in `error` and is left out."""
    results = {}
    for rt in ("eager", *ORDER):
        runtime = runtimes.get(rt)
        if runtime is None or runtime.error is not None:
            continue
        try:
            results[rt] = {name: runtime.run(feeds) for name, feeds in sets.items()}
        except Exception as e:  # noqa: BLE001  (a runtime that cannot run the model is a row, not a crash)
            if rt == "eager":
                raise
            runtime.error = f"cannot run: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"
    return results


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
    bound_rule = atol is None and rtol is None  # explicit tolerances ask for the fixed rule
    ref_graph = None
    if bound_rule:  # a model with no float64 form is refused before any runtime runs
        from tfscope.export.oracle import GraphOracle, NoFloat64Form

        ref_graph = _reference(d, meta, graph)
        try:
            GraphOracle(ref_graph.proto)
        except NoFloat64Form as e:
            raise NoFloat64Form(f"{d}: {e}; --atol/--rtol judge it by the fixed rule instead") from None
    runtimes["ort_noopt"] = loading(d / ONNX_FILE, "ONNX model", lambda: ort_runtime(proto, outputs, False))
    runtimes["ort_all"] = ort_runtime(proto, outputs, True)
    if reference:
        runtimes["onnx_reference"] = reference_runtime(proto, outputs)
    first_set = next(iter(sets))
    probe_xla(runtimes["xla"], sets[first_set])
    results = _run_all(runtimes, sets)
    refs = results["eager"]
    out_dtype = str(refs[first_set][outputs[0]].dtype)
    dtype = out_dtype if out_dtype in DEFAULT_TOLERANCE else "float32"
    atol = DEFAULT_TOLERANCE[dtype] if atol is None else float(atol)
    rtol = DEFAULT_TOLERANCE[dtype] if rtol is None else float(rtol)
    comparisons, summaries = [], []
    for rt in ORDER:
        if rt not in runtimes:
            continue
        for out in outputs:
            label = rt if len(outputs) == 1 else f"{rt} [{out}]"
            if rt not in results:
                like = compare(refs[first_set][out], refs[first_set][out], atol, rtol, rt, "", out)
                row = _nan_row(label, runtimes[rt].error or "", out, like)
                row.passed = rt in EXCUSED  # XLA's missing kernels and the reference evaluator's gaps
                comparisons.append(row)
                summaries.append(row)
                continue
            parts = [compare(refs[s][out], results[rt][s][out], atol, rtol, rt, s, out) for s in sets]
            comparisons += parts
            summary = combine(parts, [refs[s][out] for s in sets], [results[rt][s][out] for s in sets])
            summaries.append(dataclasses.replace(summary, runtime=label))
    inputs = {name: list(np.shape(next(iter(feeds.values())))) for name, feeds in sets.items()}
    report = Report(str(d), dtype, atol, rtol, inputs, comparisons, summaries)
    if bound_rule:
        from tfscope.export.graph_verdict import assess_outputs, unrun_rows

        report.assessment = assess_outputs(ref_graph, sets, results, file_proto=proto)
        report.rule = "bound"
        unrun = [rt for rt in ORDER if rt in runtimes and rt not in results]
        report.assessment.summaries += unrun_rows({
            (rt if len(outputs) == 1 else f"{rt} [{out}]"): (runtimes[rt].error or "", rt in EXCUSED)
            for rt in unrun for out in outputs})
        report.assessment.excused = {rt: runtimes[rt].error or "" for rt in unrun}
        first = report.assessment.first_failure
    else:
        first = report.first_failure
    if first is not None and first.input not in sets:
        first = None  # a runtime that could not run at all: nothing to localise
    first_rt = None if first is None else first.runtime.split(" [")[0]
    loc = None
    if deep:
        loc = deep_check(graph, proto, runtimes["ort_noopt"], sets[first_set], first_set, dtype,
                         ref_graph.proto if ref_graph else None)
        row = _deep_row(loc, comparisons[0])
        report.comparisons.append(row)
        report.summaries.append(row)
        if report.assessment is not None:
            report.assessment.deep_passed = loc.passed
    if first is not None and first_rt in ONNX_RUNTIMES and first_rt in results:
        if loc is None or loc.passed or first_rt != "ort_noopt" or first.input != loc.input:
            loc = deep_check(graph, proto, runtimes[first_rt], sets[first.input], first.input, dtype,
                             ref_graph.proto if ref_graph else None)
    elif first is not None:  # a TensorFlow runtime: the TF graph against the ONNX graph may name the op
        if (loc is None or first.input != loc.input) and "ort_noopt" in results:
            loc = deep_check(graph, proto, runtimes["ort_noopt"], sets[first.input], first.input, dtype,
                             ref_graph.proto if ref_graph else None)
        if loc is None or loc.passed:
            loc = TensorLocalisation(first_rt, first.input, note=(
                f"{first_rt} fails, but every TF tensor matched to the ONNX graph agrees with it; no operation "
                "is named"))
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

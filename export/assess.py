"""The bound verdict of a float32 tfscope export, runtime by runtime and stage by stage.

For each input set, the float64 oracle is the network rebuilt in float64 (`RunSource.float64`,
weights and standardisation cast exactly). Two checks per runtime, both proofs:
  output  its z against the oracle's, within the rounding bound propagated through the network's
          own graph (`network_graph`, export/bounds.py `propagate`): what any float32 evaluation
          may differ by;
  stages  each stage's output (standardised input, each Dense layer, raw output) against the
          float64 stage applied to *the runtime's own* previous stage output, within that stage's
          bound from exact inputs (`bounds.local`): what this stage's own rounding may add. This
          carries no error in from earlier stages, so it is tight enough to see a change of 1e-3
          in one layer's weights that the whole-network bound of a deep, wide network absorbs,
          and its first failure is the localisation: the first stage rounding cannot explain.
A runtime passes when every check of every input set does. The export's model.onnx evaluated
exactly (float64) is recorded against the same bound too: a conversion that changed the function
shows there without any float32 runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from tfscope.export.bounds import local, propagate
from tfscope.export.oracle import GraphOracle
from tfscope.export.runtimes import EAGER, RUNTIMES, Runtime
from tfscope.export.serving import INPUT, OUTPUT, stage_names
from tfscope.export.verdict import Judgement, judge, pooled


@dataclass
class Assessment:
    outputs: list[Judgement]  # per (runtime, input), eager first: z vs the float64 network
    stages: dict[str, list[Judgement]]  # "runtime/input" -> each stage's local check, in network order
    summaries: list[Judgement] = field(default_factory=list)  # per runtime: outputs and stages pooled
    missing: dict[str, list[str]] = field(default_factory=dict)  # runtime -> stages it does not expose
    graph_checks: list[Judgement] = field(default_factory=list)  # model.onnx run exactly (float64) vs the network

    @property
    def passed(self) -> bool:
        return all(j.passed for j in self.summaries)

    @property
    def first_failure(self) -> Judgement | None:
        """The first failing output check, else the first failing stage check (runtime order)."""
        for j in self.outputs:
            if not j.passed:
                return j
        return next((j for js in self.stages.values() for j in js if not j.passed), None)

    oracle_name = "the float64 network"
    title = "equivalence with the network in float64"
    scope = "for the output and every stage"
    file_line = "model.onnx evaluated in float64 vs the network"
    many_outputs = False

    @staticmethod
    def what(j: Judgement) -> str:
        return "its z" if j.output == OUTPUT else f"stage {j.output}"

    def first_stage(self, runtime: str, input: str) -> Judgement | None:
        """The first stage of (runtime, input) whose error exceeds what its rounding explains."""
        return next((j for j in self.stages.get(f"{runtime}/{input}", []) if not j.passed), None)

    def to_dict(self) -> dict:
        return {"oracle": "the network rebuilt in float64 (weights cast exactly)",
                "passed": self.passed, "summaries": [j.to_dict() for j in self.summaries],
                "outputs": [j.to_dict() for j in self.outputs],
                "stages": {k: [j.to_dict() for j in js] for k, js in self.stages.items()},
                "missing": self.missing,
                "onnx_graph_in_float64": [j.to_dict() for j in self.graph_checks]}


def network_graph(model) -> onnx.ModelProto:
    """The network itself as an ONNX graph (its Variables as initializers, in the ops tf2onnx makes of
    it: the standardisation's division as a multiplication by the folded reciprocal, which carries
    its float32 rounding as an error seed, so both forms are covered). The bounds are computed on
    this graph, not on the export's ONNX file: the file is one of the things under test, and a
    changed op or weight in it must not change what the runtimes are held to. Stage outputs are
    the tensors named after the stages (the last is z)."""
    from onnx import TensorProto, helper, numpy_helper

    from tfscope.export.bounds import FOLDED

    n = model.norm
    names = stage_names(model)
    recip = f"{FOLDED}standardize/truediv_recip"
    inits = {"x_mean": n.x_mean.numpy(), recip: (1 / n.x_std.numpy().astype(np.float64)),
             "z_std": n.z_std.numpy(), "z_mean": n.z_mean.numpy()}
    nodes = [helper.make_node("Sub", [INPUT, "x_mean"], ["centred"]),
             helper.make_node("Mul", ["centred", recip], [names[0]])]
    h = names[0]
    ops = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
    for i, layer in enumerate(model.mlp.layers):
        out = names[i + 1]
        inits[f"{out}/w"], inits[f"{out}/b"] = layer.w.numpy(), layer.b.numpy()
        pre = out if layer.activation == "linear" else f"{out}/pre"
        nodes += [helper.make_node("MatMul", [h, f"{out}/w"], [f"{out}/matmul"]),
                  helper.make_node("Add", [f"{out}/matmul", f"{out}/b"], [pre])]
        if layer.activation != "linear":
            nodes.append(helper.make_node(ops[layer.activation], [pre], [out]))
        h = out
    nodes += [helper.make_node("Mul", [h, "z_std"], ["scaled"]), helper.make_node("Add", ["scaled", "z_mean"],
                                                                                   [OUTPUT])]
    x = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, model.mlp.sizes[0]])
    g = helper.make_graph(nodes, "network", [x], [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def not_stagewise(model) -> str | None:
    """None when this module's stage-wise verdict (built on the Dense layers of a Regressor MLP) judges
    `model`; else why the verdict goes through the model's ONNX graph instead, output by output, as
    for any model (export/graph_verdict.py)."""
    from tfscope.core.nn.network import Classifier

    if isinstance(model, Classifier):
        return "a classifier (logits and probabilities): judged output by output through its ONNX graph"
    if model.mlp.spec is not None:
        return f"the --net {model.mlp.spec!r} layers: judged output by output through its ONNX graph"
    return None


def check_export_graph(path: Path) -> None:
    """Refuse (NoFloat64Form, one line) an export whose ONNX graph has no float64 form, before any
    runtime runs; an unreadable file is left for the runtimes to report."""
    from tfscope.export.oracle import check_float64_form

    try:
        proto = onnx.load(str(path))
    except Exception:  # noqa: BLE001  (all_runtimes names an unreadable file)
        return
    check_float64_form(proto)


def _float64_stages(model64) -> list:
    """Each stage of the float64 network as a function of the previous stage's output."""
    m = model64
    return [m.norm.x_in, *[layer.__call__ for layer in m.mlp.layers], m.norm.z_out]


def _digest(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).view(np.uint8)).hexdigest() + str(a.shape)


def assess(model, proto: onnx.ModelProto | str | Path, sets: dict[str, np.ndarray],
           outputs: dict[str, dict[str, np.ndarray]], runtimes: dict[str, Runtime]) -> Assessment:
    """The bound verdict of every runtime in `outputs` (`outputs[runtime][input set]` = its z, eager
    included) on every input set; `runtimes` gives their stage outputs."""
    import tensorflow as tf

    from tfscope.core.sources.source import RunSource

    if not isinstance(proto, onnx.ModelProto):
        proto = onnx.load(str(proto))
    model64 = RunSource(model).float64().model
    fns = _float64_stages(model64)
    names = stage_names(model)
    export_graph = GraphOracle(proto)  # the export's ONNX file in float64: a cross-check, recorded
    proto = network_graph(model)
    tensors = {s: s for s in names[:-1]} | {names[-1]: OUTPUT}
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    out_js: list[Judgement] = []
    graph_js: list[Judgement] = []
    stage_js: dict[str, list[Judgement]] = {}
    missing: dict[str, list[str]] = {}
    order = [rt for rt in (EAGER, *RUNTIMES) if rt in outputs]
    graph = GraphOracle(proto)
    for input_name, x in sets.items():
        z64 = model64(tf.constant(x.astype(np.float64))).numpy()
        bound = propagate(proto, {INPUT: x}, graph).bounds[OUTPUT]
        out_js += [judge(outputs[rt][input_name], z64, bound, runtime=rt, input=input_name, output=OUTPUT)
                   for rt in order]
        onnx_z = export_graph.outputs({INPUT: x})
        graph_js.append(judge(next(iter(onnx_z.values())), z64, bound, runtime="model.onnx in float64",
                              input=input_name, output=OUTPUT))
    # stages: all input sets in one batch per runtime (rows are independent; one XLA compilation),
    # judged set by set
    x_all = np.concatenate(list(sets.values()))  # (rows of every set, n_in)
    ends = np.cumsum([len(x) for x in sets.values()])
    spans = {name: (int(e - len(sets[name])), int(e)) for name, e in zip(sets, ends)}
    for rt in order:
        got = runtimes[rt].stages(x_all)
        missing[rt] = [s for s in names if s not in got or s not in tensors]
        prev_name, prev_tensor, prev = INPUT, INPUT, x_all
        checks = []
        for k, stage in enumerate(names):
            if stage in missing[rt]:
                continue
            first = names.index(prev_name) + 1 if prev_name != INPUT else 0
            key = (stage, prev_tensor, _digest(prev))
            if key not in cache:
                h = tf.constant(prev.astype(np.float64))
                for fn in fns[first:k + 1]:
                    h = fn(h)
                lb = local(proto, {prev_tensor: prev}, [tensors[stage]])
                cache[key] = (h.numpy(), lb.bounds[tensors[stage]])
            checks.append((stage, got[stage], *cache[key]))
            prev_name, prev_tensor, prev = stage, tensors[stage], got[stage]
        for input_name, (a, b) in spans.items():
            stage_js[f"{rt}/{input_name}"] = [judge(g[a:b], o[a:b], bd[a:b], runtime=rt, input=input_name, output=st)
                                              for st, g, o, bd in checks]
    out_js.sort(key=lambda j: order.index(j.runtime))  # runtime by runtime, input sets in order
    summaries = []
    for rt in order:
        parts = [j for j in out_js if j.runtime == rt] + [j for k, js in stage_js.items()
                                                          if k.split("/", 1)[0] == rt for j in js]
        outs = [j for j in out_js if j.runtime == rt]
        s = pooled(parts)
        # the error column speaks of the network's output; bound use covers outputs and stages
        summaries.append(dataclasses.replace(s, max_error=max(j.max_error for j in outs),
                                             max_rel_error=max(j.max_rel_error for j in outs)))
    return Assessment(out_js, stage_js, summaries, {k: v for k, v in missing.items() if v}, graph_js)


def attach_localisation(a: Assessment, loc, decides: bool) -> None:
    """Give `loc` its stages' bound checks; when the bound decides, the first diverging stage is the
    first whose error exceeds what its own rounding explains."""
    loc.judgements = a.stages.get(f"{loc.runtime}/{loc.input}", [])
    if decides:
        first = a.first_stage(loc.runtime, loc.input)
        loc.first_diverging = None if first is None else first.output

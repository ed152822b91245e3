"""Bring your own model: every corpus model (tests/corpus.py) exports and passes verify at the
defaults (batch sizes cut to 1 and 3 for time), the ONNX file has the model's own names, a planted
1% change of one mid-network initializer is caught and localised to the op that consumes it, and
an unconvertible graph is refused before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import KERAS, module_saved_model
from onnx import numpy_helper

pytestmark = pytest.mark.slow(seconds=100)  # the file's test time under -n 2; see conftest

BATCHES = (1, 3)  # two batch sizes prove the free batch dimension; one set suffices for the rest
ONE_BATCH = (2,)


@pytest.fixture(scope="session")
def corpus_exports(tmp_path_factory) -> dict:
    """name -> (export dir, report, source path): each corpus model converted once."""
    from tfscope.export.writer import export_model

    d = tmp_path_factory.mktemp("corpus")
    out = {}
    for name, build in KERAS.items():
        path, kw = build(d)
        sizes = BATCHES if name in ("dense", "two_heads") else ONE_BATCH
        out[name] = (d / f"ex_{name}", export_model(d / f"ex_{name}", keras=path, batch_sizes=sizes, **kw), path)
    path, _ = module_saved_model(d)
    for sig in ("serving_default", "scaled"):
        ex = d / f"ex_module_{sig}"
        out[f"module_{sig}"] = (ex, export_model(ex, saved_model=path, signature=sig, batch_sizes=ONE_BATCH), path)
    return out


def test_every_corpus_model_exports_and_passes_verify(corpus_exports):
    from tfscope.core.sources.source import load_saved_model

    for name, (ex, report, _) in corpus_exports.items():
        assert report.passed, f"{name}: {report.failure_line()}"
        assert report.deep is not None and report.deep.matched > 0, name
        runtimes = {c.runtime.split(" [")[0] for c in report.summaries}
        assert {"graph", "xla", "savedmodel", "ort_noopt", "ort_all", "onnx_reference"} <= runtimes, name
        proto = onnx.load(str(ex / "model.onnx"))
        src = load_saved_model(ex / "saved_model", "scaled" if name.endswith("scaled") else "serving_default")
        assert sorted(i.name for i in proto.graph.input) == sorted(src.input_names), name
        assert sorted(o.name for o in proto.graph.output) == sorted(src.outputs), name
        assert (ex / "parity.json").is_file() and (ex / "inputs.npz").is_file()


def test_names_come_from_the_model(corpus_exports):
    """Inputs keep their Input layers' names, dict outputs their keys, a Sequential its last layer."""
    from tfscope.core.sources.source import load_saved_model

    two = load_saved_model(corpus_exports["two_heads"][0] / "saved_model")
    assert sorted(two.input_names) == ["flags", "numbers"] and sorted(two.outputs) == ["probs", "score"]
    dense = load_saved_model(corpus_exports["dense"][0] / "saved_model")
    assert dense.input_names == ["features"] and dense.outputs == ["scores"]
    scaled = load_saved_model(corpus_exports["module_scaled"][0] / "saved_model", "scaled")
    assert scaled.input_names == ["factor", "x"] and scaled.outputs == ["out", "total"]


def test_onnx_dense_equals_a_numpy_forward_pass(corpus_exports):
    """Oracle: the Dense model's ONNX output against numpy in float64 from the Keras weights;
    float32 rounding of two 8-term dot products is far below 1e-5 at these magnitudes."""
    import keras
    import onnxruntime as ort

    ex, _, path = corpus_exports["dense"]
    w1, b1, w2, b2 = [w.astype(np.float64) for w in keras.saving.load_model(path).get_weights()]
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    want = np.maximum(x.astype(np.float64) @ w1 + b1, 0) @ w2 + b2
    got = ort.InferenceSession(str(ex / "model.onnx")).run(["scores"], {"features": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def _plant(ex: Path, out: Path, op_types: tuple[str, ...]) -> str:
    """Copy the export and scale by 1.01 the weight initializer of the middle node of `op_types`;
    returns that node's name."""
    shutil.copytree(ex, out)
    proto = onnx.load(str(out / "model.onnx"))
    inits = {i.name: i for i in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in inits]
    node = nodes[len(nodes) // 2]
    init = inits[node.input[1]]
    a = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((a * np.float32(1.01)).astype(a.dtype), init.name))
    onnx.save(proto, str(out / "model.onnx"))
    return node.name


@pytest.mark.parametrize("name,ops", [("dense", ("MatMul", "Gemm")), ("convnet", ("Conv",)),
                                      ("mobilenet", ("Conv",))])
def test_a_planted_initializer_change_is_localised_to_its_consumer(corpus_exports, tmp_path, name, ops):
    from tfscope.export.parity import verify

    bad = tmp_path / "planted"
    consumer = _plant(corpus_exports[name][0], bad, ops)
    report = verify(bad, reference=False)
    assert not report.passed
    loc = report.localisation
    assert loc is not None and loc.first is not None, report.failure_line()
    assert loc.first.pair.onnx_node == consumer, loc.describe()
    assert loc.last_agreeing is None or loc.last_agreeing.comparison.passed
    assert f"of {loc.tf_tensors} TF tensors matched" in loc.describe()
    # the file no longer has the digest the export recorded: the bounds come from a fresh conversion,
    # so the edit is judged, not trusted; TensorFlow's runtimes compute the model and pass
    a = report.assessment
    assert "fresh conversion" in a.reference and not a.passed
    assert all(j.passed for j in a.summaries if j.runtime in ("eager", "graph", "xla", "savedmodel"))
    # the planted node's own local check: the ONNX side far beyond its node's rounding bound
    assert loc.first.rule.startswith("bound") and loc.first.use > 10, loc.describe()


def test_a_planted_change_in_the_dense_file_fails_onnx_runtimes_by_the_bound(corpus_exports, tmp_path):
    """A 1% weight change that reaches the output: every ONNX runtime beyond its rounding bound, the
    file in float64 beyond it too (it is not the model), the TF runtimes within theirs."""
    from tfscope.export.parity import verify

    bad = tmp_path / "planted"
    _plant(corpus_exports["dense"][0], bad, ("MatMul", "Gemm"))
    a = verify(bad, reference=True).assessment
    verdict = {j.runtime: j for j in a.summaries}
    assert all(verdict[rt].passed and verdict[rt].rule == "bound" for rt in ("eager", "graph", "xla", "savedmodel"))
    assert all(not verdict[rt].passed and verdict[rt].bound_use > 10 for rt in ("ort_noopt", "ort_all",
                                                                               "onnx_reference"))
    assert a.graph_checks and not all(j.passed for j in a.graph_checks)


def test_a_converter_that_changed_the_function_is_caught_on_the_tensorflow_side(corpus_exports, tmp_path):
    """As if tf2onnx itself had written the changed weight (the digest recorded for the changed file):
    the file is then the reference, the ONNX runtimes agree with it, and TensorFlow does not: eager
    fails against the ONNX graph's float64 oracle and the deep check names the op, TF side failing."""
    import json

    from tfscope.export.graph_verdict import digest
    from tfscope.export.parity import verify

    bad = tmp_path / "converted_wrong"
    consumer = _plant(corpus_exports["dense"][0], bad, ("MatMul", "Gemm"))
    meta = json.loads((bad / "export.json").read_text())
    meta["onnx_sha256"] = digest(bad / "model.onnx")
    (bad / "export.json").write_text(json.dumps(meta))
    report = verify(bad, reference=False)
    a = report.assessment
    assert a.reference.startswith("model.onnx as exported")
    verdict = {j.runtime: j for j in a.summaries}
    assert not verdict["eager"].passed and verdict["ort_noopt"].passed
    first = report.localisation.first
    assert first.pair.onnx_node == consumer
    tf_side = next(j for j in first.judgements if j.runtime == "TF")
    assert not tf_side.passed and all(j.passed for j in first.judgements if j.runtime != "TF")


def test_a_graph_with_no_float64_form_is_refused_unless_tolerances_are_given(corpus_exports, tmp_path):
    """A weight behind a DequantizeLinear (its scale admits no double): written so by the converter
    (digest recorded), verify refuses in one line naming the node, exit 2, parity.json untouched, and
    --atol/--rtol verify it by the fixed rule; edited in after the export, the fresh conversion is the
    reference and only the file's own float64 cross-check is impossible, which the report says."""
    import json

    from conftest import tfscope
    from onnx import helper

    from tfscope.export.graph_verdict import digest
    from tfscope.export.parity import verify

    bad = tmp_path / "dequantized"
    shutil.copytree(corpus_exports["dense"][0], bad)
    proto = onnx.load(str(bad / "model.onnx"))
    node = next(n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm"))
    init = next(i for i in proto.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init)
    scale = np.float32(np.abs(w).max() / 127)
    proto.graph.initializer.remove(init)
    proto.graph.initializer.extend([numpy_helper.from_array(np.round(w / scale).astype(np.int8), "w_q"),
                                    numpy_helper.from_array(np.array(scale, np.float32), "w_scale")])
    proto.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w_q", "w_scale"], [init.name], name="w/dq"))
    onnx.save(proto, str(bad / "model.onnx"))
    edited = verify(bad, write=False, deep=False, reference=False)
    assert "model.onnx has no float64 form to judge by itself" in edited.table()
    meta = json.loads((bad / "export.json").read_text())
    meta["onnx_sha256"] = digest(bad / "model.onnx")
    (bad / "export.json").write_text(json.dumps(meta))
    before = (bad / "parity.json").read_bytes()
    r = tfscope("verify", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "node 'w/dq' (DequantizeLinear)" in r.stderr and "--atol/--rtol" in r.stderr, r.stderr
    assert (bad / "parity.json").read_bytes() == before
    fixed = verify(bad, atol=0.1, rtol=0.1, write=False, deep=False, reference=False)
    assert fixed.passed and fixed.rule == "fixed"


def test_the_verdict_says_when_a_bound_is_uninformative_and_judges_deep_tensors_locally(corpus_exports):
    """Random-init MobileNetV2: the whole-network bound at the softmax says nothing (|W| compounds the
    carried error while the activations shrink), so the output is judged by the fallback, saying
    why; every matched tensor inside is judged by its own node's rounding bound, well within it."""
    report = corpus_exports["mobilenet"][1]
    rule = report.assessment.rules["predictions"]
    assert rule.startswith("fallback (the bound is uninformative"), rule
    deep = report.deep
    assert deep.bounded >= 100 and deep.passed
    assert max(c.use for c in deep.checks if c.rule.startswith("bound")) <= 1.0


def test_the_onnx_oracle_agrees_with_the_keras_model_in_float64(corpus_exports):
    """Oracle of the oracle: the Keras model rebuilt in float64 (TensorFlow's kernels, the ops before
    conversion) lies within TF_SIDE x the rounding bound of the ONNX graph's float64 oracle wherever
    that bound is informative: the converter kept the function, up to the float32 rounding of the
    constants it folded. Where Keras cannot rebuild a model in float64, the test says which."""
    from tfscope.core.sources.source import load_keras
    from tfscope.export.graph_verdict import TF_SIDE, graph_bounds, informative
    from tfscope.export.inputs import load_feed_sets
    from tfscope.export.verdict import judge

    compared = []
    for name in KERAS:
        ex, _, path = corpus_exports[name]
        s64 = load_keras(path).float64()
        if s64 is None:
            continue
        proto = onnx.load(str(ex / "model.onnx"))
        for feeds in load_feed_sets(ex / "inputs.npz").values():
            gb = graph_bounds(proto, feeds)
            got = s64.call({k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()})
            for out, value in got.items():
                if gb.rules[out] == "bound" and informative(gb.bounds[out], gb.values[out]) < 1:
                    j = judge(value, gb.values[out], TF_SIDE * gb.bounds[out])
                    assert j.passed, (name, out, j)
                    compared.append(name)
    assert {"dense", "convnet", "tokens", "recurrent", "attention", "two_heads"} <= set(compared), compared


def test_an_unconvertible_graph_is_refused_and_nothing_is_written(tmp_path):
    """A while loop over a TensorArray: tf2onnx leaves TensorListReserve, onnx.checker rejects it."""
    import tensorflow as tf

    from tfscope.export.convert import ConversionError
    from tfscope.export.writer import export_model

    class Loop(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            ta = tf.TensorArray(tf.float32, size=3)
            for i in tf.range(3):
                ta = ta.write(i, x[:, i] * 2.0)
            return {"y": tf.transpose(ta.stack())}

    m = Loop()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.serve})
    with pytest.raises(ConversionError, match=r"(rejects node|cannot convert).*\(") as e:
        export_model(tmp_path / "out", saved_model=tmp_path / "sm", batch_sizes=(1,))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_an_op_tf2onnx_has_no_conversion_for_is_named_and_nothing_is_written(tmp_path):
    """tf.math.lgamma: tf2onnx 1.17 has no handler for Lgamma, logs it and leaves the node in the
    graph; the export names the op instead of writing an ONNX file no runtime can load."""
    import tensorflow as tf

    from tfscope.export.convert import ConversionError
    from tfscope.export.writer import export_model

    class Gamma(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.math.lgamma(x * x + 1.0)}

    m = Gamma()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.serve})
    with pytest.raises(ConversionError, match=r"^tf2onnx cannot convert TF op \S*Lgamma \(Lgamma\): "
                                              r"no ONNX conversion at opset 17$"):
        export_model(tmp_path / "out", saved_model=tmp_path / "sm", batch_sizes=(1,))
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_the_tensor_map_pairs_fused_nodes_through_their_consumer(corpus_exports):
    """tf2onnx fuses Conv2D + BiasAdd + the BatchNorm's Mul/Add into one Conv named after the Mul:
    the name pair (TF Mul = ONNX Conv) is refused, the Conv's value is paired with the BatchNorm's
    final AddV2 through the ReLU that reads it, and NCHW values are compared in TF's layout."""
    from tfscope.export import tensor_map

    report = corpus_exports["convnet"][1]
    pairs = [c.pair for c in report.deep.checks]
    by_type = {(p.tf_type, p.onnx_type) for p in pairs}
    assert ("AddV2", "Conv") in by_type, by_type  # the fused Conv+BN, found through its consumer
    assert all(p.onnx_type in tensor_map.SAME_OP[p.tf_type] or p.onnx_value != p.tf_tensor for p in pairs)
    assert any(p.nchw for p in pairs) and any(p.pooled for p in pairs)
    # the BatchNorm's own Mul has no ONNX counterpart (folded into the Conv) and says why
    assert any(t.endswith("batchnorm/mul_1:0") for t in report.deep.unmatched), report.deep.unmatched
    assert all(why for why in report.deep.unmatched.values())
    for check in report.deep.checks:  # every pair holds the same quantity on a correct export
        assert check.comparison.passed and check.comparison.shape_ok, check.pair


def test_an_op_xla_cannot_compile_is_named():
    import tensorflow as tf

    from tfscope.export.model_runtimes import ModelRuntime, probe_xla

    f = tf.function(lambda x: tf.strings.length(tf.strings.as_string(x)), jit_compile=True)
    rt = ModelRuntime("xla", lambda feeds: {"n": f(tf.constant(feeds["x"])).numpy()})
    probe_xla(rt, {"x": np.ones(2, np.float32)})
    assert rt.error == "not compilable: AsString"


def test_cli_verify_exits_1_on_a_planted_change_and_details_every_tensor(corpus_exports, tmp_path):
    from conftest import tfscope

    from tfscope.export.localize import short

    bad = tmp_path / "planted"
    consumer = _plant(corpus_exports["dense"][0], bad, ("MatMul", "Gemm"))
    r = tfscope("verify", str(bad), "--detail", "--no-reference")
    assert r.returncode == 1, r.stderr
    assert "tensor by tensor" in r.stdout and f"ONNX node {short(consumer)} (MatMul)" in r.stdout, r.stdout
    assert "TF tensors matched" in r.stdout


def test_a_fresh_conversion_names_its_nodes_as_the_export_did(corpus_exports):
    """tf2onnx names inserted nodes from a process-wide counter; convert.to_onnx starts it afresh, so
    verify's fresh conversion of an edited file pairs node for node with the file the export wrote
    (after other conversions in this process, as in the corpus fixture)."""
    from tfscope.core.sources.source import load_saved_model
    from tfscope.export.convert import to_onnx

    ex = corpus_exports["convnet"][0]
    again = to_onnx(load_saved_model(ex / "saved_model"), 17)
    written = onnx.load(str(ex / "model.onnx"))
    assert [n.name for n in again.graph.node] == [n.name for n in written.graph.node]
    assert any("__" in n.name for n in written.graph.node)  # it has counter-named nodes to get right

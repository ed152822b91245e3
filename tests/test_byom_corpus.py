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

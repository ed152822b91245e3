"""Convolution, pooling and flatten layers: the --net grammar, each layer's hand-written backward pass
against the tape and central differences on hypothesis-drawn shapes, and a convnet through every
mode, checkpoint/resume, the serving module (SavedModel and ONNX) and the profiler."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from tfscope.core.config import TrainConfig  # noqa: E402
from tfscope.core.data import images  # noqa: E402
from tfscope.core.errors import ConfigError  # noqa: E402
from tfscope.core.nn import gradients, layers, netspec  # noqa: E402
from tfscope.core.nn.network import Sequential  # noqa: E402


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# -- the grammar -------------------------------------------------------------------------------------

def test_spec_grammar_and_shapes():
    spec = "conv:8x3,pool:2,conv:16x3:s2:valid:tanh,avgpool:2:s1:same,flatten,dense:32:relu,dense"
    parsed = netspec.parse(spec)
    assert [p.kind for p in parsed] == ["conv", "maxpool", "conv", "avgpool", "flatten", "dense", "dense"]
    assert (parsed[0].size, parsed[0].kernel, parsed[0].stride, parsed[0].padding) == (8, 3, 1, "same")
    assert (parsed[2].stride, parsed[2].padding, parsed[2].activation) == (2, "valid", "tanh")
    assert (parsed[3].size, parsed[3].stride, parsed[3].padding) == (2, 1, "same")
    # 12x12 -same conv-> 12x12x8 -pool 2-> 6x6x8 -valid 3, stride 2-> 2x2x16 -avg same, s1-> 2x2x16 -> 64 -> 32 -> 10
    assert netspec.shapes(parsed, (12, 12, 1), 10) == [(12, 12, 8), (6, 6, 8), (2, 2, 16), (2, 2, 16), (64,), (32,),
                                                     (10,)]
    # TensorFlow's own output sizes agree with the rule (valid and same, strides 1-3)
    for size, k, s, pad in [(7, 3, 2, "valid"), (7, 3, 2, "same"), (5, 2, 3, "same"), (8, 3, 3, "valid")]:
        out = tf.nn.conv2d(tf.zeros([1, size, size, 1]), tf.zeros([k, k, 1, 1]), s, pad.upper()).shape[1]
        assert netspec.conv_out(size, k, s, pad) == out


@pytest.mark.parametrize("spec,message", [
    ("conv:8,dense", "^net: layer 1 'conv:8': conv needs FILTERSxKERNEL, e.g. conv:8x3$"),
    ("conv:8x3,pool,dense", "^net: layer 2 'pool': pool needs a window size"),
    ("conv:0x3,flatten,dense", "^net: layer 1 'conv:0x3': filters must be >= 1, got 0$"),
    ("conv:8x3:s2:wide,flatten,dense", "^net: layer 1 'conv:8x3:s2:wide': unknown option 'wide'"),
    ("dense,dense", "^net: layer 1 'dense': a dense layer without a width is the output layer"),
    ("conv:8x3,flatten,dense:16", "^net: layer 3 'dense:16': the last layer must be a bare `dense`"),
    ("conv:8x3,flatten,,dense", "^net: layer 3 '': empty layer"),
    ("lstm:8,dense", "^net: layer 1 'lstm:8': unknown layer"),
    ("dense:4:swish,dense", "^net: layer 1 'dense:4:swish': dense takes a width and an activation"),
])
def test_bad_spec_is_one_line_naming_the_token(spec, message):
    with pytest.raises(ConfigError, match=message):
        netspec.parse(spec)


@pytest.mark.parametrize("spec,shape,message", [
    ("conv:4x3:valid,conv:4x3:valid,conv:4x3:valid,flatten,dense", (6, 6, 1),
     "^net: layer 3 'conv:4x3:valid': on a 2x2 input gives a 0x0 output \\(below 1\\)"),
    ("pool:2,pool:2,pool:2,pool:2,flatten,dense", (8, 8, 1), "^net: layer 4 'pool:2': on a 1x1 input gives a 0x0"),
    ("conv:4x3,dense", (8, 8, 1), "^net: layer 2 'dense': needs a flat input; its input is \\(N, 8, 8, 4\\)"),
    ("conv:4x3,flatten,dense", (5,), "^net: layer 1 'conv:4x3': needs images \\(N, H, W, C\\); its input is "
                                     "\\(N, 5\\)"),
])
def test_spec_that_cannot_take_its_input_names_the_layer(spec, shape, message):
    with pytest.raises(ConfigError, match=message):
        netspec.check(spec, shape)


# -- the chain rule ----------------------------------------------------------------------------------

@st.composite
def convnets(draw):
    """A small random convnet spec and input shape that fit together."""
    h, w = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    c = draw(st.integers(1, 3))
    act = draw(st.sampled_from(["tanh", "relu", "sigmoid", "linear"]))
    f, k, s = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    pad = draw(st.sampled_from(["same", "valid"]))
    pool = draw(st.sampled_from(["pool", "avgpool"]))
    pk, ps, ppad = draw(st.integers(2, 3)), draw(st.integers(1, 3)), draw(st.sampled_from(["same", "valid"]))
    tokens = [f"conv:{f}x{k}:s{s}:{pad}:{act}", f"{pool}:{pk}:s{ps}:{ppad}"]
    if draw(st.booleans()):
        tokens.append(f"conv:{draw(st.integers(1, 2))}x{draw(st.integers(1, 2))}:tanh")
    spec = ",".join([*tokens, "flatten", f"dense:{draw(st.integers(1, 3))}:tanh", "dense"])
    try:
        netspec.check(spec, (h, w, c))
    except ConfigError:
        assume(False)
    return spec, (h, w, c), draw(st.integers(0, 2**31)), draw(st.integers(1, 4))


def _net_and_data(spec, shape, seed, rows, dtype):
    rng = np.random.default_rng(seed)
    net = Sequential(spec, shape, 2, "tanh", seed % 1000, dtype)
    for v in net.weights:  # nonzero biases so their gradients are exercised in full
        v.assign(v + tf.constant(rng.normal(0, 0.1, v.shape), dtype))
    x = rng.normal(0, 1, (rows, *shape))
    z = rng.normal(0, 1, (rows, 2))
    return net, x, z


@given(case=convnets())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_chain_rule_matches_tape_in_float64_and_float32(case):
    # float64: the two routes are the same sums in other orders: 1e-12. float32: 1e-5 allows the
    # reassociation of sums of up to a few hundred terms at u = 6e-8.
    spec, shape, seed, rows = case
    for dtype, tol in ((tf.float64, 1e-12), (tf.float32, 1e-5)):
        net, x, z = _net_and_data(spec, shape, seed, rows, dtype)
        xs, zs = tf.constant(x, dtype), tf.constant(z, dtype)
        lt, tape = gradients.tape_gradients(net, "mse", xs, zs)
        lc, chain = gradients.chain_rule_gradients(net, "mse", xs, zs)
        assert rel(lc, lt) <= tol
        for v, t, c in zip(net.weights, tape, chain):
            assert c.shape == v.shape
            assert rel(c, t) <= tol, (spec, v.name)


@given(case=convnets())
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_tape_matches_central_differences(case):
    # float64 central differences, h = 1e-5: truncation O(h^2) and rounding O(eps / h) both ~1e-10
    # relative, far inside 1e-6 (a max-pool whose window holds a near-tie could flip within h; the
    # drawn inputs are continuous, so ties have probability 0).
    spec, shape, seed, rows = case
    net, x, z = _net_and_data(spec, shape, seed, rows, tf.float64)
    _, tape = gradients.tape_gradients(net, "mse", tf.constant(x), tf.constant(z))
    fd = gradients.finite_difference_gradients(net, "mse", x, z)
    for t, f in zip(tape, fd):
        assert rel(f, t) <= 1e-6, spec


@pytest.mark.parametrize("pool", [layers.MaxPool2D, layers.AvgPool2D])
@pytest.mark.parametrize("size,stride,padding", [(2, 2, "valid"), (3, 2, "same"), (2, 1, "same"), (3, 3, "valid")])
def test_pool_backward_is_the_vjp(pool, size, stride, padding):
    # Each pool's written-out backward (argmax mask / spread, then the patch adjoint) against the
    # tape's MaxPoolGrad / AvgPoolGrad, in float64: pure additions of the same values, 1e-12.
    rng = np.random.default_rng(size * 10 + stride)
    layer = pool(size, stride, padding)
    x = tf.constant(rng.normal(0, 1, (2, 7, 6, 3)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
    g = tf.constant(rng.normal(0, 1, out.shape))
    ref = tape.gradient(out, x, output_gradients=g)
    _, cache = layer.forward(x)
    mine, _ = layer.backward(cache, g)
    assert rel(mine, ref) <= 1e-12


def test_max_pool_gives_a_tie_to_one_cell():
    # A window of equal values passes its gradient to exactly one of them (as TensorFlow's does).
    x = tf.ones([1, 2, 2, 1], tf.float64)
    mine, _ = layers.MaxPool2D(2).backward(x, tf.constant([[[[5.0]]]], tf.float64))
    assert sorted(mine.numpy().ravel().tolist()) == [0.0, 0.0, 0.0, 5.0]


# -- a convnet through the whole engine --------------------------------------------------------------

SPEC = "conv:3x3,pool:2,conv:4x2:valid,avgpool:2:same,flatten,dense:5,dense"


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)  # (24,)
    x = rng.normal(0, 1, (24, 6, 6, 1)) + y[:, None, None, None] * np.linspace(-1, 1, 6)[None, :, None, None]
    path = tmp_path_factory.mktemp("conv") / "tiny.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def _config(path, **kw) -> TrainConfig:
    base = dict(data=str(path), task="classify", loss="cross_entropy", net=SPEC, activation="relu",
                batch_size=8, steps=12, learning_rate=0.01, target_loss=0.0, checkpoint_every=6)
    return TrainConfig(**{**base, **kw})


def test_every_mode_runs_one_trajectory(tiny_images):
    from tfscope.core.train.trainer import Trainer

    data = images.load_npz(tiny_images, task="classify")
    finals = {}
    for mode in ("eager", "graph", "xla", "fused"):
        t = Trainer(_config(tiny_images, mode=mode), data)
        chunk = t.run_chunk(6)
        assert len(chunk.losses) == 6 and np.isfinite(chunk.losses).all()
        finals[mode] = np.concatenate([v.numpy().ravel() for v in t.model.weights])
    # 6 float32 steps: the modes differ by XLA's fusion and reassociation only: 1e-6 relative. Unlike the
    # MLP, xla and fused are not bit-identical here: the fused loop compiled whole (core/xla_flags.py)
    # emits the convolutions differently from the one-step program (seen: 1-ulp differences).
    for mode in ("graph", "xla", "fused"):
        assert rel(finals[mode], finals["eager"]) <= 1e-6, mode
    assert rel(finals["fused"], finals["xla"]) <= 1e-6


def test_chain_rule_trains_a_convnet_like_the_tape(tiny_images):
    from tfscope.core.train.trainer import Trainer

    data = images.load_npz(tiny_images, "float64", "classify")
    runs = []
    for grad in ("tape", "chain"):
        t = Trainer(_config(tiny_images, mode="graph", grad=grad, dtype="float64"), data)
        t.run_chunk(12)
        runs.append(np.concatenate([v.numpy().ravel() for v in t.model.weights]))
    assert rel(runs[1], runs[0]) <= 1e-12  # float64: the two gradient routes agree to rounding


def test_resume_equals_one_run_and_export_profile_work(tiny_images, tmp_path):
    from tfscope.core.train.run import load_run, train

    # graph mode: resuming is the same in every mode (the step counter and batch order live in the
    # checkpoint); the fused loop of a convnet costs ~5 s to compile, paid by the tests above and the digits
    whole = train(_config(tiny_images, mode="graph"), tmp_path / "whole")
    train(_config(tiny_images, steps=6, mode="graph"), tmp_path / "part")
    resumed = train(_config(tiny_images, mode="graph"), tmp_path / "part", resume=True)
    for a, b in zip(whole.trainer.model.variables, resumed.trainer.model.variables):
        assert np.array_equal(a.numpy(), b.numpy()), a.name  # bit for bit
    restored = load_run(tmp_path / "whole")
    x = images.load_npz(tiny_images, task="classify").x
    assert np.array_equal(restored.model.predict(x), whole.trainer.model.predict(x))

    # The serving module: SavedModel and ONNX carry logits and probabilities of the convnet.
    import onnxruntime as ort
    import tf2onnx

    from tfscope.export.serving import LOGITS, PROBABILITIES, SERVING, ExportModule, output_names

    model = restored.model
    module = ExportModule(model)
    assert output_names(model) == [LOGITS, PROBABILITIES]
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={SERVING: module.serve})
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures[SERVING](x=tf.constant(x))
    logits = model(tf.constant(x)).numpy()
    assert np.array_equal(served[LOGITS].numpy(), logits)  # the same graph, reloaded: identical
    assert np.array_equal(served[PROBABILITIES].numpy(), model.probabilities(tf.constant(x)).numpy())
    proto, _ = tf2onnx.convert.from_function(module.serve, input_signature=module.serve.input_signature, opset=17)
    assert [o.name for o in proto.graph.output] == [LOGITS, PROBABILITIES]
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # float32 sums of at most 3*3*3*4 + 20 terms reordered by onnxruntime: well inside 1e-5 of the logits' scale
    assert rel(got[0], logits) <= 1e-5 and rel(got[1], served[PROBABILITIES].numpy()) <= 1e-5

    # The whole export and equivalence report of that SavedModel (every runtime against eager and the
    # rounding bounds), through the generic model export: `tfscope export RUN_DIR` still expects one output z.
    from tfscope.export.writer import export_model

    report = export_model(tmp_path / "export", saved_model=tmp_path / "sm", batch_sizes=[1, 7], deep=False)
    assert report.passed, report.table()

    from tfscope.profiling import capture

    report = capture.profile_run(tmp_path / "whole", tmp_path / "profile", mode="graph", calls=2,
                                 warn=lambda m: None)
    assert list((tmp_path / "profile").rglob("*.xplane.pb")) and report


def test_image_layers_flatten_like_numpy():
    x = tf.constant(np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5))
    flat = layers.Flatten()(x)
    assert np.array_equal(flat.numpy(), x.numpy().reshape(2, -1))  # NHWC row-major, as Keras' Flatten
    back, _ = layers.Flatten().backward(x.shape, flat)
    assert np.array_equal(back.numpy(), x.numpy())


def test_conv_glorot_limits_follow_keras():
    import keras

    w = layers.glorot_conv(np.random.default_rng(0), 3, 4, 8)
    limit = np.sqrt(6 / (9 * 4 + 9 * 8))
    ref = keras.initializers.GlorotUniform(seed=0)((3, 3, 4, 8)).numpy()
    assert np.abs(w).max() <= limit and np.abs(ref).max() <= limit and np.abs(w).max() > 0.9 * limit

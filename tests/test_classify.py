"""Classification: the cross-entropy losses against Keras, their hand-written gradients against the
tape, labels, the stratified split, metrics, and `tfscope train --task classify` / `predict` end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import tfscope
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfscope.core.data import labels, split, tables  # noqa: E402
from tfscope.core.errors import DataError  # noqa: E402
from tfscope.core.nn import gradients, losses  # noqa: E402
from tfscope.core.nn.network import MLP  # noqa: E402

# Both sides compute the same stable formula in the same precision; they may order a sum
# differently, so they agree to a few ulps of the loss: 1e-6 (f32) / 1e-12 (f64) relative.
TOL = {tf.float32: 1e-6, tf.float64: 1e-12}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _logits(rng, rows, classes, scale, dtype):
    logits = rng.normal(0, scale, (rows, classes))
    logits[0, :] = 100.0 * np.sign(rng.normal(size=classes))  # extreme logits, both signs
    logits[-1, 0] = -100.0
    return tf.constant(logits, dtype)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@given(rows=st.integers(2, 40), classes=st.integers(2, 12), scale=st.sampled_from([0.1, 3.0, 60.0]),
       seed=st.integers(0, 2**31))
@settings(max_examples=15, deadline=None)
def test_softmax_ce_matches_keras(dtype, rows, classes, scale, seed):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, rows, classes, scale, dtype)
    y = rng.integers(0, classes, (rows, 1)).astype(dtype.as_numpy_dtype)
    ours = losses.softmax_ce(logits, tf.constant(y))
    # the functional form keeps the inputs' dtype (the Loss object casts to Keras' floatx, float32)
    ref = np.mean(keras.losses.sparse_categorical_crossentropy(y[:, 0].astype(np.int64), logits, from_logits=True))
    assert np.isfinite(float(ours))
    assert rel(ours, ref) <= TOL[dtype]
    assert rel(losses.cross_entropy(logits, tf.constant(y)), ref) <= TOL[dtype]  # > 1 logit: softmax


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@given(rows=st.integers(2, 40), scale=st.sampled_from([0.1, 3.0, 60.0]), seed=st.integers(0, 2**31))
@settings(max_examples=15, deadline=None)
def test_binary_ce_matches_keras(dtype, rows, scale, seed):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, rows, 1, scale, dtype)
    y = rng.integers(0, 2, (rows, 1)).astype(dtype.as_numpy_dtype)
    ref = np.mean(keras.losses.binary_crossentropy(tf.constant(y), logits, from_logits=True))
    assert rel(losses.binary_ce(logits, tf.constant(y)), ref) <= TOL[dtype]
    assert rel(losses.cross_entropy(logits, tf.constant(y)), ref) <= TOL[dtype]  # one logit: binary


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_extreme_logits_are_exact_where_the_answer_is_known(dtype):
    # logit +100 on the right class: loss = log(1 + e^-100) ~ 3.7e-44 (0 in f32); on the wrong one: ~100.
    right = losses.softmax_ce(tf.constant([[100.0, -100.0]], dtype), tf.constant([[0.0]], dtype))
    wrong = losses.softmax_ce(tf.constant([[100.0, -100.0]], dtype), tf.constant([[1.0]], dtype))
    assert float(right) <= 1e-40 and abs(float(wrong) - 200.0) <= 200.0 * TOL[dtype]
    b = losses.binary_ce(tf.constant([[-100.0], [100.0]], dtype), tf.constant([[1.0], [1.0]], dtype))
    assert abs(float(b) - 50.0) <= 50.0 * TOL[dtype]  # (100 + 0) / 2
    p = losses.probabilities(tf.constant([[-100.0], [100.0], [0.0]], dtype)).numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=0, atol=TOL[dtype])
    tail = losses.probabilities(tf.constant([[30.0]], dtype)).numpy()  # 1 - sigmoid(30) rounds to 0 in f32
    assert abs(tail[0, 0] / 9.357622968840175e-14 - 1) <= 1e-5  # sigmoid(-30) keeps it
    ref = keras.activations.softmax(tf.constant([[100.0, -100.0, 3.0], [1.0, 2.0, 3.0]], dtype)).numpy()
    ours = losses.softmax(tf.constant([[100.0, -100.0, 3.0], [1.0, 2.0, 3.0]], dtype)).numpy()
    assert rel(ours, ref) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("name,classes", [("softmax_ce", 5), ("binary_ce", 1), ("cross_entropy", 3),
                                          ("cross_entropy", 1)])
def test_loss_gradient_matches_tape(dtype, name, classes):
    # The hand-written dL/dlogits ((softmax - onehot) / m, (sigmoid - y) / m) vs the tape on the same
    # formula: equal to rounding; 1e-5 (f32) allows the few-ulp differences of exp and the division.
    rng = np.random.default_rng(3)
    logits = tf.constant(rng.normal(0, 5, (33, classes)) * np.where(rng.random((33, classes)) < 0.1, 20, 1), dtype)
    y = tf.constant(rng.integers(0, max(classes, 2), (33, 1)), dtype)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = losses.get(name)(logits, y)
    ref = tape.gradient(value, logits)
    assert rel(losses.gradient(name)(logits, y), ref) <= {tf.float32: 1e-5, tf.float64: 1e-12}[dtype]


@pytest.mark.parametrize("classes", [2, 4])
def test_chain_rule_through_a_classifier_matches_tape_and_differences(classes):
    # float64: tape vs chain rule at 1e-12, tape vs central differences at 1e-6 (truncation O(h^2) ~ 1e-10).
    rng = np.random.default_rng(classes)
    width = 1 if classes == 2 else classes
    mlp = MLP([3, 5, width], "tanh", seed=classes, dtype=tf.float64)
    x = rng.normal(0, 1, (17, 3))
    y = rng.integers(0, classes, (17, 1)).astype(np.float64)
    _, tape = gradients.tape_gradients(mlp, "cross_entropy", tf.constant(x), tf.constant(y))
    _, chain = gradients.chain_rule_gradients(mlp, "cross_entropy", tf.constant(x), tf.constant(y))
    fd = gradients.finite_difference_gradients(mlp, "cross_entropy", x, y)
    for t, c, f in zip(tape, chain, fd):
        assert rel(c, t) <= 1e-12
        assert rel(f, t) <= 1e-6


def test_labels_names_sorted_integers_numeric():
    idx, classes = labels.from_cells(["virginica", "setosa", "versicolor", "setosa"], ["w"] * 4)
    assert classes == ("setosa", "versicolor", "virginica") and idx.tolist() == [2, 0, 1, 0]
    idx, classes = labels.from_cells(["10", "2", "2", "-1"], ["w"] * 4)
    assert classes == ("-1", "2", "10") and idx.tolist() == [2, 1, 1, 0]
    idx, classes = labels.from_array(np.array([3.0, 1.0, 3.0]), "f.npz")
    assert classes == ("1", "3") and idx.tolist() == [1, 0, 1]


@pytest.mark.parametrize("text,message", [
    ("a,c\n1,x\n2,x\n3,x\n", "^t.csv: column 'c' holds one class \\('x'\\); classification needs at least 2$"),
    ("a,c\n1,0\n2,1.5\n3,0\n", "^t.csv: row 3, column 'c': 1.5 is not a class label"),
    ("a,c\n1,p\n2,q\n3,r\n", "^t.csv: column 'c' has 3 classes in 3 rows; classification needs more rows"),
    ("a,c\n1,p\n2,\n3,r\n", "^t.csv: row 3, column 'c': empty class label$"),
])
def test_bad_labels_are_one_line_naming_the_culprit(text, message):
    with pytest.raises(DataError, match=message):
        tables.parse_csv(text, "t.csv", task="classify")


def test_stratified_split_is_seeded_and_keeps_every_class():
    z = np.repeat(np.arange(3), [50, 30, 20]).astype(np.float32)[:, None]  # (100, 1)
    data = tables.Dataset(np.arange(100, dtype=np.float32)[:, None], z, ("a",), ("c",), "s", ("p", "q", "r"))
    train, val = split.split(data, 0.2, seed=7)
    again = split.held_out(data, 0.2, seed=7)
    assert np.array_equal(np.sort(val.x[:, 0]).astype(int), again)
    assert sorted(np.concatenate([train.x[:, 0], val.x[:, 0]]).astype(int).tolist()) == list(range(100))
    assert [int((val.z == k).sum()) for k in range(3)] == [10, 6, 4]  # 20% of each class
    assert not np.array_equal(split.held_out(data, 0.2, seed=8), again)


def test_metrics_against_a_hand_count():
    true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    pred = [0, 1, 0, 1, 1, 2, 0, 2, 2, 1]
    m = losses.classification_metrics(np.array(pred), np.array(true), 4)
    assert m["confusion"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 1, 3, 0], [0, 0, 0, 0]]
    assert m["accuracy"] == 0.7
    assert m["precision"][:3] == [2 / 3, 2 / 4, 3 / 3] and m["precision"][3] is None  # never predicted
    assert m["recall"][:3] == [2 / 3, 2 / 2, 3 / 5] and m["recall"][3] is None  # never present


def _blobs(path, names, rows=24, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["a,b,kind"]
    for k, name in enumerate(names):
        for _ in range(rows):
            lines.append(f"{3 * k + rng.normal():.4f},{(-2) ** k + rng.normal():.4f},{name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train

    root = tmp_path_factory.mktemp("classify")
    _blobs(root / "flowers.csv", ["virginica", "setosa", "versicolor"])
    cfg = TrainConfig(data=str(root / "flowers.csv"), task="classify", loss="cross_entropy", hidden=[6],
                      activation="tanh", steps=400, val_fraction=0.25)
    return root, train(cfg, root / "run")


def test_classify_run_records_classes_metrics_and_confusion(iris_run, capsys):
    from tfscope.commands.train import print_summary

    root, result = iris_run
    run = root / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["setosa", "versicolor", "virginica"] and config["task"] == "classify"
    assert config["loss"] == "cross_entropy"
    m = json.loads((run / "metrics.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    assert m["train_rows"] == 54 and m["val_rows"] == 18  # 25% of each class of 24 held out
    assert m["val_accuracy"] >= 0.9 and m["train_accuracy"] >= 0.9
    c = np.array(m["confusion"]["matrix"])
    assert m["confusion"]["rows"] == "val" and c.sum() == 18 and c.sum(1).tolist() == [6, 6, 6]
    assert abs(np.trace(c) / 18 - m["val_accuracy"]) < 1e-12
    assert set(m["val_recall"]) == {"setosa", "versicolor", "virginica"}
    assert (run / "confusion.png").stat().st_size > 1000
    print_summary(result)
    assert f"held-out {m['val_accuracy']:.2%} of 18 rows" in capsys.readouterr().out


def test_predict_prints_the_label_and_its_probability(iris_run):
    from tfscope.core.train.run import load_run

    root, _ = iris_run
    r = tfscope("predict", str(root / "run"), "6,4", "0,1")
    assert r.returncode == 0, r.stderr
    model = load_run(root / "run").model
    k, p = model.predict_classes(np.array([[6.0, 4.0], [0.0, 1.0]]))
    lines = r.stdout.strip().splitlines()
    for line, ki, pi in zip(lines, k, p):
        assert line == f"{line.split(' -> ')[0]} -> {model.classes[ki]} (p = {pi:.6f})"
    # _blobs puts its k-th name at (3k, (-2)^k): versicolor (third) at (6, 4), virginica (first) at (0, 1)
    assert lines[0].startswith("6,4 -> versicolor") and lines[1].startswith("0,1 -> virginica")


def test_logistic_regression_is_one_logit(tmp_path):
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train

    _blobs(tmp_path / "two.csv", ["no", "yes"], rows=20)
    cfg = TrainConfig(data=str(tmp_path / "two.csv"), task="classify", loss="cross_entropy", hidden=[], steps=300)
    result = train(cfg, tmp_path / "run")
    model = result.trainer.model
    assert model.mlp.sizes == [2, 1] and model.classes == ("no", "yes")
    x = np.array([[0.0, 1.0], [3.0, -2.0]])
    logit = model(tf.constant(x, tf.float32)).numpy()[:, 0]
    p = model.probabilities(tf.constant(x, tf.float32)).numpy()
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=1e-6)
    assert result.metrics["train_accuracy"] >= 0.95


def test_classifier_is_never_output_standardised(tmp_path):
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.trainer import Trainer

    _blobs(tmp_path / "f.csv", ["p", "q", "r"])
    data = tables.load(str(tmp_path / "f.csv"), task="classify")
    t = Trainer(TrainConfig(task="classify", loss="cross_entropy", hidden=[4]), data)
    assert t.model.norm.z_mean.numpy().tolist() == [0.0] and t.model.norm.z_std.numpy().tolist() == [1.0]
    assert np.array_equal(t.z.numpy(), data.z)  # the training targets are the class indices themselves
    assert t.model.norm.x_std.numpy().tolist() != [1.0, 1.0]  # x is standardised as usual

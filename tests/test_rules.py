"""The lecture's learning rules (core/optim/rules.py), each against an independent route to the same number:
numpy least squares, a gradient-descent step on half-MSE, a numpy per-row loop, Novikoff's bound,
numpy's eigendecomposition; and the same trajectory in every mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tfscope

from tfscope.cli import main
from tfscope.core.config import TrainConfig, resume_mismatch
from tfscope.core.data import tables as data
from tfscope.core.errors import ConfigError, DataError
from tfscope.core.optim import rules
from tfscope.core.train.run import read_history, train
from tfscope.core.train.trainer import DIVERGED, TARGET, Trainer

MODES = ("eager", "graph", "xla", "fused")


def trainer(**kw) -> Trainer:
    kw.setdefault("hidden", [])
    config = TrainConfig(**kw)
    return Trainer(config, data.load(config.data, dtype=config.dtype))


def weights(t: Trainer) -> list[np.ndarray]:
    return [v.numpy().astype(np.float64) for v in t.model.weights]


def write_csv(path, x: np.ndarray, z: np.ndarray) -> str:
    names = [f"x{i}" for i in range(x.shape[1])]
    rows = "".join(",".join(repr(float(v)) for v in (*r, t)) + "\n" for r, t in zip(x, z))
    path.write_text(",".join([*names, "z"]) + "\n" + rows)
    return str(path)


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """200 points in [-3, 3]^2 labelled by the known separator x0 + 2 x1 - 4 = 0, keeping only those at
    distance >= 0.03 from it (so the margin is known to be positive); classes {0, 1}."""
    rng = np.random.default_rng(1)
    u = np.array([1.0, 2.0, -4.0])  # (w0, w1, b) of the known separator
    x = rng.uniform(-3, 3, size=(800, 2))
    x = x[np.abs(x @ u[:2] + u[2]) / np.linalg.norm(u[:2]) >= 0.03][:200]
    path = write_csv(tmp_path_factory.mktemp("sep") / "sep.csv", x, (x @ u[:2] + u[2] > 0).astype(float))
    return path, u


@pytest.fixture(scope="module")
def xor(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("xor") / "xor.csv", np.array([[0, 0], [0, 1], [1, 0], [1, 1.0]]),
                     np.array([0, 1, 1, 0.0]))


@pytest.fixture(scope="module")
def correlated(tmp_path_factory):
    """200 rows of 4 features sharing one latent factor, on very different scales and offsets:
    a clear first principal component (eigenvalues of the standardised covariance ~ 2.9, 0.65, 0.24, 0.17)."""
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(200, 1))
    x = latent @ np.array([[1.0, 0.8, -0.6, 0.3]]) + 0.4 * rng.normal(size=(200, 4))
    x = (x + np.array([5.0, -1.0, 2.0, 0.0])) * np.array([1.0, 10.0, 0.1, 3.0])
    return write_csv(tmp_path_factory.mktemp("pca") / "pca.csv", x, rng.normal(size=200))


def standardised_covariance(path: str) -> np.ndarray:
    """C = Xs^T Xs / m of the standardised features, in numpy float64 (independent of the Standardizer)."""
    x = np.loadtxt(path, delimiter=",", skiprows=1)[:, :-1]
    xs = (x - x.mean(0)) / x.std(0)
    return xs.T @ xs / len(xs)


# --- delta rule / LMS ------------------------------------------------------------------------------------------

def test_delta_rule_reaches_the_least_squares_solution(tmp_path):
    """Batch delta rule on the lecture data (float32, standardised, fused) -> the raw-unit affine map equals
    numpy's least squares, which is (2, 3, 2) because the data are exact; 1e-3 leaves float32 room."""
    result = train(TrainConfig(rule="delta", hidden=[], steps=3000), tmp_path / "run")
    w, b = result.trainer.model.affine_map()
    coef = data.least_squares(data.builtin("float64"))
    np.testing.assert_allclose([*w[:, 0], b[0]], coef, atol=1e-3)
    np.testing.assert_allclose(coef, [2, 3, 2], atol=1e-9)
    assert result.metrics["stopped_because"] == TARGET and result.metrics["rule"] == "delta"


def test_lms_reaches_the_least_squares_solution():
    """Per-row LMS on exact data: every row's update has the same fixed point, so it converges too."""
    t = trainer(rule="lms", dtype="float64", target_loss=1e-20)
    t.run_chunk(500)
    w, b = t.model.affine_map()
    np.testing.assert_allclose([*w[:, 0], b[0]], [2, 3, 2], atol=1e-6)


@pytest.mark.parametrize("batch_size", [0, 7])
def test_one_batch_delta_step_is_one_gradient_step_on_half_mse(batch_size):
    """The lecture's 1/(2m) question: eta * mean (t - y) x is exactly the gradient step on half-MSE
    (not on MSE, whose gradient has a factor 2). Float64, one step from the same seed: rounding only, 1e-12."""
    kw = dict(dtype="float64", batch_size=batch_size, learning_rate=0.1, mode="eager")
    delta = trainer(rule="delta", **kw)
    gd = trainer(rule="backprop", optimizer="sgd", loss="half_mse", **kw)
    start = weights(delta)
    for _ in range(3):  # three steps: with batch 7 each sees a different batch
        delta.train_step()
        gd.train_step()
    for a, b in zip(weights(delta), weights(gd)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert np.max(np.abs(weights(delta)[0] - start[0])) > 1e-2  # w moved: the comparison is not vacuous
    assert delta.step == gd.step == 3


def test_lms_epoch_is_a_per_row_loop_and_not_a_gradient_step():
    """One full-batch LMS step = the Widrow-Hoff loop over the rows in order (numpy, 1e-12 float64); it
    differs from one gradient step on half-MSE by far more than rounding (each row sees the last row's weights)."""
    lms = trainer(rule="lms", dtype="float64", learning_rate=0.1)
    w = lms.model.mlp.layers[0].w.numpy()[:, 0].copy()
    b = float(lms.model.mlp.layers[0].b.numpy()[0])
    x, z = lms.x.numpy(), lms.z.numpy()[:, 0]
    gd_w = w + 0.1 * x.T @ (z - x @ w - b) / len(x)
    for xi, ti in zip(x, z):
        err = ti - xi @ w - b
        w, b = w + 0.1 * err * xi, b + 0.1 * err
    lms.compiled("xla")()
    np.testing.assert_allclose(lms.model.mlp.layers[0].w.numpy()[:, 0], w, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lms.model.mlp.layers[0].b.numpy()[0], b, rtol=0, atol=1e-12)
    assert np.max(np.abs(w - gd_w)) > 1e-2


# --- perceptron ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("standardize", [False, True])
def test_perceptron_stops_within_novikoffs_bound(separable, standardize):
    """From w = 0, b = 0 the total number of mistakes is <= (R/gamma)^2, with R = max |(x, 1)| and gamma
    the margin of the known separator u in the same (training) units: a valid, looser bound than the
    max-margin one. Standardising maps u to (w * s, w . m + b), which keeps every sign."""
    path, u = separable
    t = trainer(data=path, rule="perceptron", standardize=standardize, dtype="float64", steps_per_call=2000)
    for v in t.model.weights:
        v.assign(tf.zeros_like(v))
    chunk = t.run_chunk(2000)
    x = t.x.numpy()
    mean, std = t.model.norm.x_mean.numpy(), t.model.norm.x_std.numpy()
    u_train = np.array([*(u[:2] * std), u[:2] @ mean + u[2]])
    xa = np.hstack([x, np.ones((len(x), 1))])  # (rows, 3): the bias as a constant input
    labels = np.where(np.loadtxt(path, delimiter=",", skiprows=1)[:, -1] > 0.5, 1.0, -1.0)
    gamma = np.min(labels * (xa @ u_train)) / np.linalg.norm(u_train)
    bound = (np.max(np.linalg.norm(xa, axis=1)) / gamma) ** 2
    assert gamma > 0
    assert chunk.stopped == TARGET and chunk.losses[-1] == 0
    assert 0 < chunk.losses.sum() <= bound
    w, b = t.model.mlp.layers[0].w.numpy()[:, 0], t.model.mlp.layers[0].b.numpy()[0]
    np.testing.assert_array_equal(np.where(x @ w + b > 0, 1.0, -1.0), labels)  # numpy agrees: all rows right


def test_perceptron_on_xor_is_reported_as_not_converging(xor, tmp_path):
    result = train(TrainConfig(data=xor, rule="perceptron", hidden=[], steps=300), tmp_path / "xor")
    _, mistakes = read_history(tmp_path / "xor")
    assert len(mistakes) == 300 and mistakes.min() >= 1  # no pass over XOR is ever free of mistakes
    assert result.metrics["stopped_because"] == "steps" and result.metrics["train_mistakes"] >= 1


def test_perceptron_needs_two_classes():
    with pytest.raises(DataError, match="target: the perceptron rule needs .* two distinct values"):
        trainer(rule="perceptron")


# --- Hebbian and Oja -------------------------------------------------------------------------------------------

def test_oja_finds_the_first_principal_component(correlated):
    """Oja's rule (batch-averaged, float64) -> numpy's top eigenvector of the standardised covariance,
    up to sign, within 1e-3; its recorded reconstruction error -> trace(C) - lambda_max (1e-6)."""
    t = trainer(data=correlated, rule="oja", dtype="float64", target_loss=0)
    chunk = t.run_chunk(2000)
    evals, evecs = np.linalg.eigh(standardised_covariance(correlated))
    w = t.model.mlp.layers[0].w.numpy()[:, 0]
    top = evecs[:, -1] * np.sign(evecs[:, -1] @ w)
    np.testing.assert_allclose(w, top, atol=1e-3)
    np.testing.assert_allclose(chunk.losses[-1], np.trace(standardised_covariance(correlated)) - evals[-1],
                               rtol=1e-6)


def test_hebbian_norm_grows_without_bound(correlated, tmp_path):
    """Plain Hebb: w <- (I + eta C) w, so ||w|| grows by a factor -> 1 + eta * lambda_max (numpy, 1e-9 in
    float64 after 300 steps, the other directions having died out) and never stops growing; in float32
    the run ends when ||w|| overflows, as diverged. Oja on the same data keeps ||w|| -> 1."""
    t = trainer(data=correlated, rule="hebbian", dtype="float64", target_loss=0, learning_rate=0.05)
    norms = t.run_chunk(301).losses
    lam = np.linalg.eigvalsh(standardised_covariance(correlated))[-1]
    assert np.all(np.diff(norms) > 0)
    np.testing.assert_allclose(norms[-1] / norms[-2], 1 + 0.05 * lam, rtol=1e-9)
    result = train(TrainConfig(data=correlated, rule="hebbian", hidden=[], steps=5000), tmp_path / "hebb")
    _, history = read_history(tmp_path / "hebb")
    assert result.metrics["stopped_because"] == DIVERGED and not np.isfinite(history[-1])
    assert np.all(np.diff(history[:-1]) > 0) and history[-2] > 1e18
    oja = trainer(data=correlated, rule="oja", dtype="float64", target_loss=0)
    oja.run_chunk(2000)
    assert abs(np.linalg.norm(oja.model.mlp.layers[0].w.numpy()) - 1) < 1e-6


# --- every mode, the CLI, the config ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule,csv", [("delta", None), ("lms", None), ("perceptron", "xor"), ("hebbian", None),
                                      ("oja", None)])
def test_same_trajectory_in_every_mode(rule, csv, request):
    """Eager, graph, xla and fused runs of 8 full-batch steps give the same values and weights (float32;
    1e-6 relative allows XLA's different fusion and summation order)."""
    path = request.getfixturevalue(csv) if csv else None
    runs = {}
    for mode in MODES:
        t = trainer(data=path, rule=rule, mode=mode, target_loss=0)
        runs[mode] = (t.run_chunk(8).losses, weights(t), t.step)
    ref_losses, ref_weights, _ = runs["eager"]
    assert len(ref_losses) == 8
    for mode, (losses, ws, step) in runs.items():
        assert step == 8, mode
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, atol=1e-6, err_msg=mode)
        for a, b in zip(ws, ref_weights):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=mode)


def test_rule_run_resumes_where_it_stopped(tmp_path):
    """A checkpoint (layer Variables + optimiser iterations) is a rule's whole state: 40 + 40 steps == 80."""
    cfg = dict(rule="lms", hidden=[], target_loss=0, checkpoint_every=40, batch_size=5, mode="graph")
    train(TrainConfig(steps=40, **cfg), tmp_path / "a")
    resumed = train(TrainConfig(steps=80, **cfg), tmp_path / "a", resume=True)
    straight = train(TrainConfig(steps=80, **cfg), tmp_path / "b")
    for a, b in zip(weights(resumed.trainer), weights(straight.trainer)):
        np.testing.assert_array_equal(a, b)


def test_cli_trains_with_a_rule(tmp_path):
    out = tmp_path / "delta"
    proc = tfscope("train", "--rule", "delta", "--hidden", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "history.csv", "metrics.json", "loss.png", "checkpoints"):
        assert (out / name).exists(), name
    assert json.loads((out / "config.json").read_text())["rule"] == "delta"
    m = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose([*m["affine_map"]["W"], m["affine_map"]["b"]], [2, 3, 2], atol=1e-3)
    assert "affine map: z = 2" in proc.stdout
    assert "rule:       delta; history.csv's loss column is the configured loss" in proc.stdout


def test_cli_refuses_a_rule_on_a_deep_network(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--rule", "perceptron", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "tfscope: error: hidden: the perceptron rule trains a single Dense layer; use hidden [] (--hidden none), "
        "got [2]"]
    assert not (tmp_path / "x").exists()


def test_config_rule_field():
    with pytest.raises(ConfigError, match="^rule: unknown rule 'widrow'"):
        TrainConfig(rule="widrow", hidden=[]).validate()
    with pytest.raises(ConfigError, match="^hidden: the oja rule"):
        TrainConfig(rule="oja").validate()
    old = {k: v for k, v in json.loads(TrainConfig().to_json()).items() if k != "rule"}
    assert TrainConfig.from_dict(old).rule == "backprop"  # a run written before the field existed
    assert resume_mismatch(TrainConfig(hidden=[]), TrainConfig(hidden=[], rule="delta")).startswith("rule")
    with pytest.raises(ConfigError, match="^rule: the lms rule runs on one device; use strategy none"):
        rules.check_rule("lms", [], "mirrored")

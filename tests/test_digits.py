"""The built-in 8x8 digits: the shipped file, and a small convnet (>= 97%) and an MLP (>= 95%) on a
seeded, stratified 20% held-out split, trained in fused mode (tests/conftest.py shares the two runs)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
from conftest import DIGITS_CONVNET, DIGITS_MLP

from tfscope.core.data import images, split, tables


def test_digits_are_the_uci_set_with_their_licence():
    x, y = images.digits_arrays()
    assert x.shape == (1797, 8, 8, 1) and y.shape == (1797,)
    assert x.min() == 0 and x.max() == 16  # pixel counts of 4x4 blocks of a 32x32 bitmap
    # the class sizes of the UCI test set (optdigits.tes), as scikit-learn's load_digits gives them
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    licence = resources.files("tfscope.core.data").joinpath("builtin", "digits.LICENSE.txt").read_text()
    assert "CC BY 4.0" in licence and "Alpaydin" in licence
    d = tables.load("digits", task="classify")
    assert d.classes == tuple(str(i) for i in range(10)) and np.array_equal(d.z[:, 0], y)


def test_held_out_split_is_stratified_and_the_same_on_reload():
    d = tables.load("digits", task="classify")
    train, val = split.split(d, 0.2, seed=0)
    assert (train.rows, val.rows) == (1438, 359)
    share = np.bincount(val.z[:, 0].astype(int)) / np.bincount(d.z[:, 0].astype(int))
    assert np.all(np.abs(share - 0.2) < 0.004)  # round(0.2 n) of each class
    assert np.array_equal(split.held_out(d, 0.2, 0), split.held_out(d, 0.2, 0))


def _check(run, floor):
    m = run.metrics
    assert m["mode"] == "fused" and m["val_rows"] == 359
    assert m["val_accuracy"] >= floor, m["val_accuracy"]
    # The recorded accuracy against an independent count: the newest checkpoint rebuilt from disk,
    # its argmax over the held-out rows compared with the labels.
    from tfscope.core.train.run import load_run

    t = load_run(run.run_dir)
    logits = t.model.predict(t.validation.x)  # (359, 10)
    right = int((logits.argmax(1) == t.validation.z[:, 0]).sum())
    assert right / 359 == m["val_accuracy"]
    assert np.trace(np.array(m["confusion"]["matrix"])) == right
    saved = json.loads((run.run_dir / "metrics.json").read_text())
    assert saved["val_accuracy"] == m["val_accuracy"] and (run.run_dir / "confusion.png").is_file()
    return m


def test_convnet_reaches_97_percent_held_out(digits_convnet):
    m = _check(digits_convnet, 0.97)
    assert m["steps"] == DIGITS_CONVNET["steps"]
    assert [type(layer).__name__ for layer in digits_convnet.trainer.model.mlp.layers] == [
        "Conv2D", "MaxPool2D", "Flatten", "Dense"]


def test_mlp_reaches_95_percent_held_out(digits_mlp):
    m = _check(digits_mlp, 0.95)
    assert m["steps"] == DIGITS_MLP["steps"]
    assert [type(layer).__name__ for layer in digits_mlp.trainer.model.mlp.layers] == ["Flatten", "Dense", "Dense"]

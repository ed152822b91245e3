"""Bad input to `tfscope export --keras/--saved-model`: each is one line naming the culprit, status 2
from the command line, and nothing at EXPORT_DIR."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tfscope
from corpus import dense, module_saved_model, tokens

from tfscope.core.errors import TfscopeError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("byom_bad")
    keras_path, _ = dense(d)
    token_path, _ = tokens(d)
    sm, _ = module_saved_model(d)
    (d / "notes.keras").write_text("not a model\n")
    data = keras_path.read_bytes()
    (d / "cut.keras").write_bytes(data[: len(data) // 2])
    (d / "empty_dir").mkdir()
    return {"keras": keras_path, "tokens": token_path, "sm": sm, "dir": d}


def _refused(out, match: str, **kw):
    from tfscope.export.writer import export_model

    with pytest.raises(TfscopeError, match=match) as e:
        export_model(out, batch_sizes=(1,), **kw)
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_bad_model_files_are_refused(models, tmp_path):
    d = models["dir"]
    _refused(tmp_path / "a", "no such file", keras=d / "missing.keras")
    _refused(tmp_path / "b", "not a SavedModel directory", saved_model=d / "empty_dir")
    _refused(tmp_path / "c", r"notes.keras: not a loadable Keras model", keras=d / "notes.keras")
    _refused(tmp_path / "d", r"cut.keras: not a loadable Keras model", keras=d / "cut.keras")
    _refused(tmp_path / "e", r"--signature nope: .*it has: scaled, serving_default", saved_model=models["sm"],
             signature="nope")


def test_bad_shapes_ranges_and_npz_are_refused(models, tmp_path):
    k = models["keras"]
    _refused(tmp_path / "a", r"--shape image: no input named 'image'; the model's inputs are features", keras=k,
             shapes={"image": (1, 6)})
    _refused(tmp_path / "b", r"--shape features: dimension 1 is 6 in the signature, 5 given", keras=k,
             shapes={"features": (2, 5)})
    _refused(tmp_path / "c", r"--range size: no input named 'size'", keras=k, ranges={"size": (0, 1)})
    _refused(tmp_path / "d", r"input tokens: integer input .* needs --range tokens=LO:HI", keras=models["tokens"])
    np.savez(tmp_path / "other.npz", other=np.zeros((2, 6), np.float32))
    _refused(tmp_path / "e", r"other.npz: no array named 'features'", keras=k, npz=tmp_path / "other.npz")
    np.savez(tmp_path / "ints.npz", features=np.zeros((2, 6), np.int64))
    _refused(tmp_path / "f", r"ints.npz: array 'features' is int64", keras=k, npz=tmp_path / "ints.npz")
    np.savez(tmp_path / "wide.npz", features=np.zeros((2, 7), np.float32))
    _refused(tmp_path / "g", r"wide.npz: array 'features' has shape 2x7", keras=k, npz=tmp_path / "wide.npz")


def test_cli_refuses_in_one_line_with_status_2(models, tmp_path):
    out = tmp_path / "out"
    r = tfscope("export", "--keras", str(models["keras"]), "--out", str(out), "--range", "features=3:1")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--range 'features=3:1': LO must be below HI" in lines[0], r.stderr
    assert not out.exists()

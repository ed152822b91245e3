"""The pytest plugin as a user meets it, through pytest's own pytester: a user's test file with a
passing and a failing parity check, run in this process (the plugin loads from its pytest11 entry
point, no -p flag); the failure message, the summary line and the --tfscope-report file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import numpy as np
from tfscope.testing import assert_equivalent

MODEL = {model!r}
W0, B0, W1, B1 = (np.load({weights!r})[k] for k in ("w0", "b0", "w1", "b1"))


def forward(x, planted=0.0):
    h = np.maximum(x @ W0 + B0, np.float32(0))  # (batch, 4)
    z = (h @ W1 + B1).astype(np.float32)  # (batch, 2)
    z[-1, 0] += np.float32(planted)
    return z


def test_model_equals_its_numpy_form(tfscope_inputs):
    assert_equivalent(MODEL, forward, tfscope_inputs(MODEL, batch_sizes=[4]))


def test_a_planted_error(tfscope_inputs):
    assert_equivalent(MODEL, lambda x: forward(x, 1e-2), tfscope_inputs(MODEL, batch_sizes=[4]))
'''


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(4, activation="relu")(x)), name="users")
    d = tmp_path_factory.mktemp("user_model")
    model.save(d / "model.keras")
    w0, b0, w1, b1 = model.get_weights()
    np.savez(d / "weights.npz", w0=w0, b0=b0, w1=w1, b1=b1)
    return d / "model.keras", d / "weights.npz"


def test_a_users_suite_with_one_passing_and_one_failing_check(pytester, user_model):
    model, weights = user_model
    pytester.makepyfile(test_user=USER_TESTS.format(model=str(model), weights=str(weights)))
    result = pytester.runpytest_inprocess("--tfscope-report", "parity.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    # the failure reads like a diagnosis: the table, then the element
    assert "function <lambda> differs from Keras model" in out
    assert "candidate vs ref" in out and "batch_4" in out
    assert "first diverging element: input set 'batch_4', output " in out and "row 3, index [0]" in out
    result.stdout.fnmatch_lines(["tfscope: 2 parity check(s) (2 equivalent): 1 passed, 1 failed; "
                                 "worst tolerance use * (test_user.py::test_a_planted_error)"])

    report = json.loads((pytester.path / "parity.json").read_text())
    assert (report["checks"], report["passed"], report["failed"]) == (2, 1, 1)
    ok, bad = report["records"]
    assert ok["test"] == "test_user.py::test_model_equals_its_numpy_form" and ok["passed"] is True
    assert bad["test"] == "test_user.py::test_a_planted_error" and bad["passed"] is False
    # the numbers are the comparison's: 1e-2 planted on one element of z (|z| < 10 here, so the
    # float32 sum z + 1e-2 moves it by 1e-2 within 2^-20): max abs error 1e-2 to 1e-6
    assert abs(bad["comparisons"][0]["max_abs"] - 1e-2) < 1e-6
    assert bad["first_divergence"]["row"] == 3 and bad["first_divergence"]["index"] == [0]
    assert abs(bad["first_divergence"]["candidate"] - bad["first_divergence"]["reference"] - 1e-2) < 1e-6
    assert report["worst_tolerance_use"] == bad["tolerance_use"] > 1 > ok["tolerance_use"]


def test_a_session_without_checks_says_nothing_and_writes_an_empty_report(pytester):
    pytester.makepyfile(test_plain="def test_nothing():\n    assert True\n")
    result = pytester.runpytest_inprocess("--tfscope-report", "r.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "parity check" not in result.stdout.str()
    assert json.loads((pytester.path / "r.json").read_text())["checks"] == 0


def readme_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Parity checks in your own tests", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_runs_as_a_users_test_file(pytester):
    code = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10  # the ten-line example
    pytester.makepyfile(test_readme=code)
    result = pytester.runpytest_subprocess("--tfscope-report", "parity.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tfscope: 2 parity check(s) (2 equivalent): 2 passed, 0 failed; worst bound use *"])
    records = json.loads((pytester.path / "parity.json").read_text())["records"]
    # the ONNX check is decided by the rounding bound, the SavedModel one by the tolerances given
    assert [r["rule"] for r in records] == ["bound", "polygraphy"]
    assert 0 < records[0]["bound_use"] < 1 and records[1]["atol"] == 1e-6

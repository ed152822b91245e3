"""The comparison rules (export/compare.py) against hand-worked cases and a direct re-statement."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfscope.export.compare import compare


def test_hand_worked_case():
    ref = np.array([[1.0], [100.0], [0.0]])
    got = np.array([[1.1], [100.5], [0.0]])
    c = compare(ref, got, atol=0.2, rtol=1e-3)
    # row 0: abs 0.1 <= atol, passes; row 1: abs 0.5 > 0.2 and rel 0.005 > 1e-3, fails.
    assert not c.passed and c.failed_elements == 1 and c.first_failed_row == 1
    assert math.isclose(c.max_abs, 0.5, rel_tol=1e-9) and math.isclose(c.max_rel, 0.1, rel_tol=1e-9)
    assert math.isclose(c.mean_abs, 0.2, rel_tol=1e-9) and math.isclose(c.median_abs, 0.1, rel_tol=1e-9)
    assert compare(ref, got, atol=0.2, rtol=0.006).passed  # now row 1 passes on rtol


def test_nan_always_fails_and_equal_infinities_match():
    ref = np.array([1.0, np.inf, np.nan])
    assert not compare(ref, ref.copy(), atol=1e9, rtol=1e9).passed  # NaN, even in both
    c = compare(ref[:2], ref[:2].copy(), atol=0, rtol=0)
    assert c.passed and c.max_abs == 0 and c.inf_ref == 1 and c.inf_got == 1
    c = compare(np.array([1.0, np.inf]), np.array([1.0, -np.inf]), atol=1e9, rtol=1e9)
    assert not c.passed


def test_shape_and_dtype_are_checked_apart_from_values():
    ref = np.zeros((4, 1), np.float32)
    c = compare(ref, np.zeros((4,), np.float32), 1, 1)
    assert not c.passed and not c.shape_ok and c.dtype_ok
    c = compare(ref, np.zeros((4, 1), np.float64), 1, 1)
    assert not c.passed and c.shape_ok and not c.dtype_ok and c.max_abs == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e-2, 1e-2)), min_size=1, max_size=30),
       st.floats(0, 1e-2), st.floats(0, 1e-2))
def test_rule_matches_direct_statement_and_min_tolerances_are_tight(pairs, atol, rtol):
    ref = np.array([p[0] for p in pairs])
    got = ref * (1 + np.array([p[1] for p in pairs]))
    c = compare(ref, got, atol, rtol)
    abs_err = np.abs(got - ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = np.where(abs_err == 0, 0.0, abs_err / np.abs(ref))
    assert c.passed == bool(np.all((abs_err <= atol) | (rel_err <= rtol)))
    # the reported minimum atol passes alone, and anything clearly below it does not
    assert compare(ref, got, c.min_atol, 0).passed
    assert compare(ref, got, 0, c.min_rtol).passed
    if c.min_atol > 0:
        assert not compare(ref, got, c.min_atol * 0.999, 0).passed
    if c.min_rtol > 0:
        assert not compare(ref, got, 0, c.min_rtol * 0.999).passed

"""The seeded row order: a permutation, and the same numbers eager, in a graph and under XLA."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfscope.core.train import shuffle


def test_permutation_is_the_same_eager_graph_and_xla():
    epoch = tf.Variable(0, dtype=tf.int64)  # a runtime value, as in the training step
    for rows in (2, 19, 1000):
        fn = lambda: shuffle.permutation(rows, 5, epoch)  # noqa: B023
        graph, xla = tf.function(fn), tf.function(fn, jit_compile=True)
        for e in (0, 1, 7, 2**40):
            epoch.assign(e)
            eager = fn().numpy()
            assert sorted(eager.tolist()) == list(range(rows))  # a permutation
            np.testing.assert_array_equal(graph().numpy(), eager)
            np.testing.assert_array_equal(xla().numpy(), eager)


def test_orders_spread_over_positions():
    """Over 400 epochs of 19 rows each row lands in each position ~21 times (Binomial(400, 1/19),
    sd 4.5); a broken hash (identity, a rotation) puts whole rows at 0 or 400."""
    counts = np.zeros((19, 19))
    for e in range(400):
        counts[np.arange(19), shuffle.permutation(19, 0, tf.constant(e, tf.int64)).numpy()] += 1
    assert counts.min() >= 3 and counts.max() <= 45
    a = shuffle.permutation(19, 1, tf.constant(0, tf.int64)).numpy()
    b = shuffle.permutation(19, 2, tf.constant(0, tf.int64)).numpy()
    assert not np.array_equal(a, b)

"""The seeded row orders: bijections, the same integers eager, in a graph and under XLA, and a plain
Python reference; the Feistel order's statistics against a uniform permutation's."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfscope.core.train import shuffle

M32 = 0xFFFFFFFF
# Row counts of every kind: 1 row (0 bits), odd and even bit counts, powers of two (no cycle-walking) and
# one past them (2^k barely above n: the most walking).
ROWS = (1, 2, 3, 5, 7, 19, 64, 100, 1000, 4096, 4097)


def mix32_ref(x: int) -> int:
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & M32
    return (x >> 16) ^ x


def feistel_ref(n: int, seed: int, epoch: int) -> list[int]:
    """The Feistel order of n rows in plain Python integers, written from its definition."""
    key = mix32_ref(mix32_ref(seed & M32) ^ (epoch & M32))
    keys = [mix32_ref(((key + r * 0x9E3779B9) & M32) ^ (epoch >> 32)) for r in range(shuffle.ROUNDS)]
    bits = (n - 1).bit_length()
    hb, lb = bits // 2, bits - bits // 2

    def p(x: int) -> int:
        high, low = x >> lb, x & ((1 << lb) - 1)
        for r, k in enumerate(keys):
            if r % 2 == 0:
                low ^= mix32_ref(high ^ k) & ((1 << lb) - 1)
            else:
                high ^= mix32_ref(low ^ k) & ((1 << hb) - 1)
        return (high << lb) | low

    out = []
    for j in range(n):
        v = p(j)
        while v >= n:
            v = p(v)
        out.append(v)
    return out


def feistel_order(n: int, seed: int = 0, epoch: int = 0) -> np.ndarray:
    return shuffle.rows_at(tf.range(n, dtype=tf.int64), n, seed, tf.constant(epoch, tf.int64)).numpy()


@pytest.mark.parametrize("rows", ROWS)
def test_feistel_order_is_a_bijection_equal_to_the_reference_eager_graph_and_xla(rows):
    """Every row once, and the very integers of the plain-Python reference, in all three ways of running,
    for epochs past 2^32 (the high word keys the order too) and a negative seed."""
    epoch = tf.Variable(0, dtype=tf.int64)  # a runtime value, as in the training step
    seed = tf.Variable(0, dtype=tf.int64)
    fn = lambda: shuffle.rows_at(tf.range(rows, dtype=tf.int64), rows, seed, epoch)  # noqa: E731
    graph, xla = tf.function(fn, autograph=False), tf.function(fn, jit_compile=True, autograph=False)
    for s, e in ((0, 0), (0, 1), (5, 7), (-3, 2), (5, 2**32 + 7), (5, 2**40)):
        seed.assign(s)
        epoch.assign(e)
        eager = fn().numpy()
        assert sorted(eager.tolist()) == list(range(rows))
        assert eager.tolist() == feistel_ref(rows, s, e)
        np.testing.assert_array_equal(graph().numpy(), eager)
        np.testing.assert_array_equal(xla().numpy(), eager)
    if rows > 2:
        epoch.assign(7)
        low = fn().numpy()
        epoch.assign(2**32 + 7)
        assert not np.array_equal(fn().numpy(), low)


def test_every_row_once_per_epoch_in_the_batches_and_the_remainder_varies():
    """100 rows at batch 7: an epoch's 14 batches hold 98 distinct rows; the 2 dropped differ by epoch. The
    batches, compiled under XLA, are those of the eager order."""
    xla = tf.function(lambda s: shuffle.batch_rows(s, 100, 7, 3), jit_compile=True, autograph=False)
    dropped = set()
    for epoch in range(6):
        batches = [shuffle.batch_rows(tf.constant(epoch * 14 + i, tf.int64), 100, 7, 3).numpy() for i in range(14)]
        seen = np.concatenate(batches)
        assert len(set(seen.tolist())) == 98 and seen.min() >= 0 and seen.max() < 100
        np.testing.assert_array_equal(seen, feistel_order(100, 3, epoch)[:98])
        for i in (0, 13):
            np.testing.assert_array_equal(xla(tf.constant(epoch * 14 + i, tf.int64)).numpy(), batches[i])
        dropped.add(frozenset(set(range(100)) - set(seen.tolist())))
    assert len(dropped) >= 5


@pytest.mark.parametrize("rows", [4096, 4097])
def test_feistel_orders_look_uniform(rows):
    """Over 50 orders (5 seeds x 10 epochs), against a uniform random permutation of n rows:
    - the mean absolute displacement |P(j) - j| / n is 1/3 (sd 0.0037 per order at n = 4,096): every order
      within 0.02 of it, their mean within 0.005;
    - consecutive positions land on consecutive rows (|P(j+1) - P(j)| = 1) 2 (n-1)/n ~ 2 times per order
      (about Poisson): the mean over 50 orders within [1, 3] (sd 0.2);
    - the correlation of P(j) with j: sd 1/sqrt(n) = 0.016, every order within 0.08.
    The identity fails all three; a rotation j + c mod n, all three; an affine map j * a + c mod n with a
    large odd a passes the first and third and fails the second (0 consecutive pairs)."""
    disp, adjacent = [], []
    j = np.arange(rows)
    for seed in range(5):
        for epoch in range(10):
            p = feistel_order(rows, seed, epoch).astype(np.int64)
            disp.append(np.mean(np.abs(p - j)) / rows)
            adjacent.append(np.sum(np.abs(np.diff(p)) == 1))
            assert abs(np.corrcoef(p, j)[0, 1]) <= 0.08
    assert max(abs(d - 1 / 3) for d in disp) <= 0.02, disp
    assert abs(np.mean(disp) - 1 / 3) <= 0.005
    assert 1 <= np.mean(adjacent) <= 3, adjacent


def test_feistel_orders_spread_over_positions_and_differ_by_seed_and_epoch():
    """Over 400 epochs of 19 rows each row lands in each position ~21 times (Binomial(400, 1/19), sd 4.5);
    a broken key (one order for all epochs) puts whole rows at 0 or 400. Two orders of 100 rows from
    different seeds or epochs share a row at a position ~1 time in 100 (uniform: 1 per order)."""
    counts = np.zeros((19, 19))
    for e in range(400):
        counts[np.arange(19), feistel_order(19, 0, e)] += 1
    assert counts.min() >= 3 and counts.max() <= 45
    orders = [feistel_order(100, s, e) for s in range(4) for e in range(4)]
    for a in range(len(orders)):
        for b in range(a):
            assert np.sum(orders[a] == orders[b]) <= 8


def test_the_feistel_network_alone_is_a_bijection_of_its_power_of_two():
    """Before cycle-walking: [0, 2^k) onto itself for every k up to 16 (odd k split 1 bit unevenly)."""
    keys = shuffle.round_keys(9, tf.constant(4, tf.int64))
    for bits in range(17):
        x = tf.range(2**bits, dtype=tf.int64)
        assert sorted(shuffle.feistel(tf.cast(x, tf.uint32), bits, keys).numpy().tolist()) == list(range(2**bits))


# --- the sort order: the runs recorded before the `shuffle` field ---------------------------------------

# shuffle.permutation as the code that trained those runs computed it: (rows, seed, epoch) -> order.
RECORDED_SORT_ORDERS = {
    (19, 0, 0): [0, 3, 9, 8, 14, 15, 2, 12, 10, 11, 17, 7, 4, 13, 5, 1, 6, 16, 18],
    (19, 3, 1): [2, 6, 14, 13, 10, 5, 0, 3, 11, 1, 12, 9, 15, 18, 8, 4, 17, 16, 7],
    (23, 11, 5): [5, 20, 0, 2, 6, 14, 10, 16, 21, 18, 19, 15, 12, 4, 11, 1, 22, 7, 13, 9, 3, 17, 8],
}


def test_sort_order_is_the_recorded_one_and_the_same_eager_graph_and_xla():
    for (rows, seed, e), want in RECORDED_SORT_ORDERS.items():
        assert shuffle.permutation(rows, seed, tf.constant(e, tf.int64)).numpy().tolist() == want
    epoch = tf.Variable(0, dtype=tf.int64)
    for rows in (2, 19, 1000):
        fn = lambda: shuffle.permutation(rows, 5, epoch)  # noqa: B023, E731
        graph, xla = tf.function(fn), tf.function(fn, jit_compile=True)
        for e in (0, 1, 7, 2**40):
            epoch.assign(e)
            eager = fn().numpy()
            assert sorted(eager.tolist()) == list(range(rows))
            np.testing.assert_array_equal(graph().numpy(), eager)
            np.testing.assert_array_equal(xla().numpy(), eager)

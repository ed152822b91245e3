"""The seeded row order of each epoch, the same integers in eager, graph and XLA.

`tf.random.stateless_uniform` draws different numbers under `jit_compile` than outside it (with
`alg="philox"` too), which would give the xla and fused modes other batches than eager and
graph. Integer hashing has no such freedom. The mixer is a 32-bit integer hash (two rounds of
xor-shift-multiply), exact in int64 (masked to 32 bits; the constants are below 2^31 so no product
overflows) and in uint32 (whose products wrap modulo 2^32 in TensorFlow and XLA alike: the same numbers).

Two orders, named by a run's `shuffle` field (core/config.py):

- `feistel` (new runs): a keyed bijection of [0, rows) per epoch, evaluated only at the positions a
  step needs: O(batch * ROUNDS) integer ops per step, no sort, nothing held between steps.
- `sort` (runs recorded before the field existed): all rows ordered by their hash, one sort per epoch;
  kept so that those runs resume bit for bit.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow import bitwise

_MASK = 0xFFFFFFFF
_MULTIPLIER = 0x45D9F3B
_GOLDEN = 0x9E3779B9
# Rounds of the Feistel network. Four left visible structure (measured over 200 orders of 4,096 rows:
# consecutive positions on consecutive rows 2.6 times an order, a uniform permutation's 2.0); six give
# 1.9, and the spread of the displacement |P(j) - j| a uniform permutation's (sd 0.0033 n, four 0.0045 n).
ROUNDS = 6


def mix32(x: tf.Tensor) -> tf.Tensor:
    """Hash int64 or uint32 values to 32-bit ones (elementwise), in the dtype given."""
    if x.dtype == tf.uint32:
        for _ in range(2):
            x = bitwise.bitwise_xor(bitwise.right_shift(x, tf.constant(16, tf.uint32)), x) * tf.constant(
                _MULTIPLIER, tf.uint32)
        return bitwise.bitwise_xor(bitwise.right_shift(x, tf.constant(16, tf.uint32)), x)
    mask = tf.constant(_MASK, tf.int64)
    x = bitwise.bitwise_and(x, mask)
    for _ in range(2):
        x = bitwise.bitwise_and(bitwise.bitwise_xor(bitwise.right_shift(x, 16), x) * _MULTIPLIER, mask)
    return bitwise.bitwise_xor(bitwise.right_shift(x, 16), x)


def permutation(n: int, seed: int | tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
    """The `sort` order: a permutation of range(n) drawn from (seed, epoch); int32 indices of shape (n,).

    The rows in order of (key, index), which is what a stable argsort of the keys gives, computed as
    one sort of key * n + index (distinct values below 2^63 for n < 2^31): one sorted operand instead of
    an argsort's two, the same permutation, and 1.5x faster under XLA."""
    epoch_key = mix32(bitwise.bitwise_xor(mix32(tf.cast(seed, tf.int64)), tf.cast(epoch, tf.int64)))
    index = tf.range(n, dtype=tf.int64)
    keys = mix32(epoch_key + index * _GOLDEN)  # (n,), each < 2^32
    return tf.cast(tf.sort(keys * n + index) % n, tf.int32)


def round_keys(seed: int | tf.Tensor, epoch: tf.Tensor) -> list[tf.Tensor]:
    """The Feistel network's ROUNDS keys for (seed, epoch), uint32 scalars: a hash of the seed and the
    epoch's low word, offset per round, xored with the epoch's high word and hashed again. Computed as
    one vector of ROUNDS: in graph mode each op is a kernel call (a step's rows take 178 graph ops so,
    298 one key at a time)."""
    epoch = tf.cast(epoch, tf.int64)
    low = tf.cast(bitwise.bitwise_and(epoch, tf.constant(_MASK, tf.int64)), tf.uint32)
    high = tf.cast(bitwise.right_shift(epoch, 32), tf.uint32)
    key = mix32(bitwise.bitwise_xor(tf.cast(mix32(tf.cast(seed, tf.int64)), tf.uint32), low))
    offsets = tf.constant([r * _GOLDEN & _MASK for r in range(ROUNDS)], tf.uint32)  # (ROUNDS,)
    return tf.unstack(mix32(bitwise.bitwise_xor(key + offsets, high)))


def feistel(x: tf.Tensor, bits: int, keys: list[tf.Tensor]) -> tf.Tensor:
    """A keyed bijection of [0, 2^bits) (elementwise on uint32 `x`): `x` split into a high half of
    bits // 2 and a low half of the rest; each round xors one half with a hash of the other and the
    round key, the halves taking turns, so an odd bit count needs no padding and every round is invertible."""
    high_bits = bits // 2
    low_bits = bits - high_bits
    low_mask = tf.constant((1 << low_bits) - 1, tf.uint32)
    high_mask = tf.constant((1 << high_bits) - 1, tf.uint32)
    shift = tf.constant(low_bits, tf.uint32)
    high, low = bitwise.right_shift(x, shift), bitwise.bitwise_and(x, low_mask)
    for r, key in enumerate(keys):
        if r % 2 == 0:
            low = bitwise.bitwise_xor(low, bitwise.bitwise_and(mix32(bitwise.bitwise_xor(high, key)), low_mask))
        else:
            high = bitwise.bitwise_xor(high, bitwise.bitwise_and(mix32(bitwise.bitwise_xor(low, key)), high_mask))
    return bitwise.bitwise_or(bitwise.left_shift(high, shift), low)


def rows_at(positions: tf.Tensor, n: int, seed: int | tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
    """The `feistel` order: the rows at `positions` (integers in [0, n)) of epoch `epoch`'s order of n rows;
    int64, the shape of `positions`.

    The Feistel network permutes [0, 2^k) for the least 2^k >= n; a value it maps to n or above is mapped
    again (cycle-walking) until it falls below n, which makes a bijection of [0, n). Each value needs
    fewer than 2 maps on average (2^k < 2n); the loop stops when no value needs one more, and its bound,
    2^k - n + 1, is the most any value can need (a cycle visits each of the 2^k - n values >= n once)."""
    if not 1 <= n < 2**31:
        raise ValueError(f"rows: the Feistel order takes 1 to 2^31 - 1 rows, got {n}")
    bits = (n - 1).bit_length()
    keys = round_keys(seed, epoch)
    v = feistel(tf.cast(positions, tf.uint32), bits, keys)
    if cycle_walks(n):
        limit = tf.constant(n, tf.uint32)

        def walk(v: tf.Tensor) -> tuple[tf.Tensor]:
            return (tf.where(v >= limit, feistel(v, bits, keys), v),)

        (v,) = tf.while_loop(lambda v: tf.reduce_any(v >= limit), walk, (v,), maximum_iterations=2**bits - n + 1)
    return tf.cast(v, tf.int64)


def cycle_walks(n: int) -> bool:
    """Whether the Feistel order of n rows maps values again (a While loop): n is not a power of two."""
    return n & (n - 1) != 0


def positions(step: tf.Tensor, batch_size: int, nb: int) -> tf.Tensor:
    """The positions in its epoch's order of global step `step`'s rows: slice `step % nb` of batch_size,
    nb batches an epoch (the remainder of each epoch is dropped). (batch_size,) int64."""
    return (tf.cast(step, tf.int64) % nb) * batch_size + tf.range(batch_size, dtype=tf.int64)


def batch_rows(step: tf.Tensor, n: int, batch_size: int, seed: int | tf.Tensor) -> tf.Tensor:
    """The rows of global step `step` in the `feistel` order of n rows. (batch_size,) int64."""
    nb = n // batch_size
    return rows_at(positions(step, batch_size, nb), n, seed, tf.cast(step, tf.int64) // nb)

"""The machine's two roofs, measured in the process that profiles, just before the capture.

  peak       GFLOP/s of the faster of two compute-bound XLA-compiled float32 kernels: an (n, n) @ (n, n)
             matmul (intensity 2n^3 / 12n^2 = n/6 FLOP per byte: 171 at the default n = 1024) and
             a 3x3 convolution, 8x16x16x128 -> 512 channels, 'same' padding (2.4 GFLOP, 326 FLOP per
             byte): far above any ridge point of a CPU. Both, because XLA:CPU's convolutions ran
             1.7-1.9x faster than its matmuls of the same size on one 2-core machine (148 vs 82
             GFLOP/s side by side), so a matmul-only roof sat below what MobileNetV2's convolutions
             reached
  bandwidth  GB/s of XLA-compiled elementwise passes x = x * a + b over a float32 buffer beyond the
             last-level cache (8x the L3; at least 32 MiB; at most 1 GiB unless that is under 2x
             the L3): bytes = read x + write x. PASSES passes run in one while loop over a Variable
             updated in place: a call that returns a fresh output pays first-touch page faults on it
             (1.5 vs 3.8 GB/s measured on one machine; 17 vs 24 GB/s and 4x the time on another); a
             copy into the loop's buffer, if XLA makes one, is not counted (a lower bound within
             1 / PASSES). The cap: a virtual machine may report its host's whole L3 (480 MiB on
             one), where 8x took 38 s to allocate and stream

Each is the median of several timed runs after a warm-up (one call that compiles, then WARM_SECONDS
of calls: the first compute-bound kernels of a process ran at 60-65% of the rate of later ones on
one machine, 88 vs 141 GFLOP/s for the same convolution); the spread is kept.
XLA:CPU runs both on the same intra-op thread pool as the profiled model; `threads` is its size.
Roofs move with the machine's load: compare a model only with roofs from its own process.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import tfscope.core  # noqa: F401  (sets XLA's options, which its first compilation reads: the roofs may be it)

MATMUL_N = 1024
CONV_INPUT, CONV_KERNEL = (8, 16, 16, 128), (3, 3, 128, 512)  # (batch, height, width, in), (kh, kw, in, out)
MIN_BUFFER_BYTES = 32 * 2**20
MAX_BUFFER_BYTES = 2**30
LLC_FACTOR = 8
RUNS = 5
WARM_SECONDS = 0.5  # untimed calls first: a process's first kernels ran at 60% of the rate of later ones here
PASSES = 4


@dataclass
class Roofs:
    peak_gflops: float  # median GFLOP/s of the faster kernel (peak_kernel)
    peak_spread: tuple[float, float]  # (min, max) over its runs
    matmul_n: int
    bandwidth_gbs: float  # median GB/s of the elementwise pass
    bandwidth_spread: tuple[float, float]
    stream_bytes: int  # bytes moved per pass (read + write)
    llc_bytes: int  # the last-level cache the buffer is sized from (0 if unknown)
    runs: int
    threads: int  # XLA:CPU's intra-op threads (the pool both roofs and the model run on)
    peak_kernel: str = "matmul"  # the kernel that set the peak: matmul or convolution
    matmul_gflops: float = 0.0  # median GFLOP/s of each kernel
    conv_gflops: float = 0.0

    @property
    def ridge(self) -> float:
        """FLOP per byte where the roofs meet: above it an instruction can be compute bound."""
        return self.peak_gflops / self.bandwidth_gbs

    def attainable(self, intensity: float) -> float:
        """GFLOP/s the roofline allows at `intensity` FLOP per byte."""
        return min(self.peak_gflops, self.bandwidth_gbs * intensity)

    def to_dict(self) -> dict:
        return {**asdict(self), "ridge_flop_per_byte": self.ridge}

    @classmethod
    def from_dict(cls, d: dict) -> Roofs:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields["peak_spread"], fields["bandwidth_spread"] = tuple(d["peak_spread"]), tuple(d["bandwidth_spread"])
        return cls(**fields)


def llc_bytes() -> int:
    """Size of the largest CPU cache sysfs reports (the last level), or 0 when unknown."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes, default=0)


def threads() -> int:
    """XLA:CPU's intra-op pool: TensorFlow's setting, or one thread per usable core when it is 0."""
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return tf.config.threading.get_intra_op_parallelism_threads() or cores


def _median_rate(call, amount: float, runs: int) -> tuple[float, tuple[float, float]]:
    """Median (and min, max) of `amount` / seconds / 1e9 over `runs` timed calls, after one call
    that compiles and WARM_SECONDS of untimed ones."""
    call()  # compiles and touches the buffers
    start = time.perf_counter()
    while time.perf_counter() - start < WARM_SECONDS:
        call()
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        rates.append(amount / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates), (min(rates), max(rates))


def measure_peak(n: int = MATMUL_N, runs: int = RUNS, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Median GFLOP/s (and min, max) of an XLA (n, n) @ (n, n) float32 product: 2 n^3 FLOPs."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    a = tf.constant(rng.standard_normal((n, n)), tf.float32)  # (n, n)
    b = tf.constant(rng.standard_normal((n, n)), tf.float32)  # (n, n)
    product = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=True)

    def call() -> None:
        float(product(a, b)[0, 0])  # waits for the product without copying n^2 values out

    return _median_rate(call, 2.0 * n**3, runs)


def stream_buffer_bytes(llc: int | None = None) -> int:
    """Bytes of the bandwidth pass's buffer: LLC_FACTOR x the last-level cache, at least
    MIN_BUFFER_BYTES, at most MAX_BUFFER_BYTES unless that is under twice the cache."""
    llc = llc_bytes() if llc is None else llc
    return max(MIN_BUFFER_BYTES, min(LLC_FACTOR * llc, max(MAX_BUFFER_BYTES, 2 * llc)))


def measure_conv_peak(runs: int = RUNS, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Median GFLOP/s (and min, max) of an XLA 3x3 'same' convolution CONV_INPUT * CONV_KERNEL:
    2 x output elements x kernel volume x in-channels FLOPs (profiling/flops.py's rule)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal(CONV_INPUT), tf.float32)  # (batch, height, width, in)
    k = tf.constant(rng.standard_normal(CONV_KERNEL), tf.float32)  # (kh, kw, in, out)
    conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"), jit_compile=True)
    kh, kw, cin, cout = CONV_KERNEL

    def call() -> None:
        float(conv(x, k)[0, 0, 0, 0])

    return _median_rate(call, 2.0 * math.prod(CONV_INPUT[:3]) * cout * kh * kw * cin, runs)


def measure_bandwidth(nbytes: int | None = None, runs: int = RUNS) -> tuple[float, tuple[float, float], int]:
    """Median GB/s (and min, max) of PASSES in-place passes x = x * a + b, each moving `nbytes`
    (default: twice `stream_buffer_bytes()`, read and written); returns the bytes per pass too."""
    import tensorflow as tf

    n = (nbytes or 2 * stream_buffer_bytes()) // 8  # float32 elements: 4 bytes read + 4 written each
    x = tf.Variable(tf.random.stateless_uniform((n,), seed=(1, 2)))  # (n,)
    scale = tf.constant(1.0001)
    shift = tf.constant(0.5)

    @tf.function(jit_compile=True)
    def stream(a, b):
        x.assign(tf.while_loop(lambda i, y: i < PASSES, lambda i, y: (i + 1, y * a + b),
                               (tf.constant(0), x.read_value()))[1])
        return x[0]

    def call() -> None:
        float(stream(scale, shift))

    rate, spread = _median_rate(call, 8.0 * n * PASSES, runs)
    return rate, spread, 8 * n


def measure(matmul_n: int = MATMUL_N, stream_bytes: int | None = None, runs: int = RUNS) -> Roofs:
    """Both roofs, measured now in this process."""
    matmul, matmul_spread = measure_peak(matmul_n, runs)
    conv, conv_spread = measure_conv_peak(runs)
    kernel, peak, peak_spread = max(("matmul", matmul, matmul_spread), ("convolution", conv, conv_spread),
                                    key=lambda k: k[1])
    bw, bw_spread, moved = measure_bandwidth(stream_bytes, runs)
    return Roofs(peak, peak_spread, matmul_n, bw, bw_spread, moved, llc_bytes(), runs, threads(), kernel, matmul,
                 conv)

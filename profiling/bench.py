"""The timing harness every benchmark shares: warm-up calls excluded, then a fixed number of timed
repeats of a fixed window of work, reported as the median per unit of work with the spread.

A window is whatever one call of `fn` does (one step, 100 steps, one fused call of 100,000
steps); `per` says how many units (steps, calls) it holds, so every figure is per unit. The
median resists the odd slow repeat on a shared machine; the min and max show how noisy it was.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

JSON_FILE, PNG_FILE = "bench.json", "bench.png"  # what `tfscope bench` writes into --out


@dataclass
class Timing:
    """Seconds per unit of work over `repeats` timed windows (warm-up excluded)."""

    median: float  # seconds per unit, median over the repeats
    low: float  # fastest repeat, seconds per unit
    high: float  # slowest repeat, seconds per unit
    repeats: int  # timed windows
    per: float  # units of work in one window
    samples: list[float] = field(default_factory=list)  # seconds per unit of each repeat, in order

    @property
    def spread_pct(self) -> float:
        """(slowest - fastest) / median, in percent: how far apart the repeats were."""
        return 100.0 * (self.high - self.low) / self.median if self.median > 0 else math.inf

    def to_dict(self, scale: float = 1.0) -> dict:
        """The timing in `scale` units per unit of work (e.g. scale 1e6 for microseconds)."""
        d = asdict(self)
        for k in ("median", "low", "high"):
            d[k] = d[k] * scale
        d["samples"] = [s * scale for s in self.samples]
        d["spread_pct"] = self.spread_pct
        return d


def summarize(samples: list[float], per: float) -> Timing:
    """A Timing from per-unit samples."""
    if not samples:
        raise ValueError("no samples")
    return Timing(statistics.median(samples), min(samples), max(samples), len(samples), per, list(samples))


def measure(fn: Callable[[], object], per: float = 1, warmup: int = 1, repeats: int = 5,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeats` times timed; each call does `per` units."""
    if per <= 0 or repeats < 1 or warmup < 0:
        raise ValueError(f"per must be > 0, repeats >= 1, warmup >= 0 (got {per}, {repeats}, {warmup})")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        samples.append((clock() - t0) / per)
    return summarize(samples, per)


def ratio(slow: float, fast: float) -> float:
    """How many times faster `fast` is than `slow` (both seconds per unit)."""
    return slow / fast if fast > 0 else math.inf


def progress(message: str) -> None:
    """One line per benchmark on stderr, so a long run shows where it is."""
    print(f"bench: {message}", file=sys.stderr, flush=True)

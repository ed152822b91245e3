"""The XLA:CPU option tfscope sets before TensorFlow's first XLA compilation, and how to read it back.

XLA:CPU runs a compiled program as a sequence of runtime calls, one per optimized-HLO instruction
(its thunk runtime), and compiles a while loop into one function instead only when the loop touches
fewer than `xla_cpu_small_while_loop_byte_threshold` bytes per iteration (XLA's default: 1024).
The fused training loop of the lecture network touches a few kilobytes, so by default each step
paid ~40 runtime calls: 1.6 us per step, where one compiled function runs it in 0.18 us
(`tfscope bench`, row 1). Loops under SMALL_LOOP_BYTES per iteration are compiled whole: at that
size a step's own work is a few microseconds at most and dispatch is what it costs; larger loops
keep the per-instruction runtime, whose dispatch is then a negligible share.

XLA reads XLA_FLAGS once, at the first XLA compilation of the process, so `configure()` runs when
`core` is imported. A value the user already put in XLA_FLAGS is kept: `0` gives every instruction
its own runtime call again (what `tfscope profile --per-instruction` uses to time each one).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

KEY = "xla_cpu_small_while_loop_byte_threshold"
SMALL_LOOP_BYTES = 256 * 1024
SMALL_CALL = 'xla_cpu_small_call="true"'  # the attribute XLA puts on a loop it compiled into one function
_SETTING = re.compile(rf"{KEY}=(\d+)")


def small_loop_bytes(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """The threshold XLA_FLAGS sets, or None when it sets none (XLA then uses 1024)."""
    found = _SETTING.findall(environ.get("XLA_FLAGS", ""))
    return int(found[-1]) if found else None


def set_small_loop_bytes(n: int, environ: MutableMapping[str, str] = os.environ, keep: bool = False) -> int:
    """Make XLA_FLAGS set the threshold to `n` bytes (or, with `keep`, leave a value already there).
    Returns the value XLA_FLAGS now sets. Has no effect on a process that already compiled with XLA."""
    current = small_loop_bytes(environ)
    if keep and current is not None:
        return current
    flags = _SETTING.sub(f"{KEY}={n}", environ.get("XLA_FLAGS", ""))
    if current is None:
        flags = f"{flags} --xla_backend_extra_options={KEY}={n}".strip()
    environ["XLA_FLAGS"] = flags
    return n


def configure(environ: MutableMapping[str, str] = os.environ) -> int:
    """tfscope's default (SMALL_LOOP_BYTES), unless XLA_FLAGS already chooses."""
    return set_small_loop_bytes(SMALL_LOOP_BYTES, environ, keep=True)


"""FLOPs and bytes of one optimized-HLO instruction, from its shapes and attributes alone.

What counts as one FLOP (the convention of the bench and of most roofline studies):
  dot          2 * M * N * K: every output element (batch dims included) is K multiply-adds, 2 FLOPs each;
               K is the product of the lhs contracting dimensions.
  convolution  2 * output elements * kernel volume * input channels per group: the kernel's input-feature
               dimension already holds in-channels / feature_group_count. Padded window positions count
               (the arithmetic an unpadded formula would do; XLA's own cost model skips them).
  elementwise  1 per output element for every arithmetic, comparison, select or transcendental op
               (exp, tanh, rsqrt... each count 1, as a FLOP and not as the many a libm call takes).
  reduce       1 per reduced element: input elements - output elements applications of the reducer.
  reduce-window  output elements * window size.
  data movement  0: copy, transpose, broadcast, reshape, slice, concatenate, pad, gather, convert, iota...
  fusion       the sum of the above over its fused computation (nested fusions included).

Bytes are what an instruction must move at least once: each operand read once and the result
written once (sizes from the shapes; a fusion counts its own operands and result, not the values
inside it, which stay in registers or cache). Tuples count every element.
"""

from __future__ import annotations

import math
import re

from tfscope.profiling.hlo import HloModule, Instruction

DTYPE_BYTES = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
               "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
               "f8e4m3fn": 1, "f8e5m2": 1}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
MOVEMENT = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "copy", "copy-start", "copy-done",
    "transpose", "broadcast", "reshape", "slice", "dynamic-slice", "dynamic-update-slice", "concatenate",
    "pad", "gather", "scatter", "convert", "bitcast-convert", "iota", "reverse", "rng-get-and-update-state",
    "after-all", "partition-id", "replica-id", "while", "call", "conditional", "custom-call", "sort",
    "all-reduce", "all-gather", "send", "recv", "infeed", "outfeed", "domain", "optimization-barrier"})


def arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    """Every array of a (possibly tuple) shape: `(f32[2,3], s32[])` -> [(f32, (2, 3)), (s32, ())]."""
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in _ARRAY.findall(shape)
            if dt in DTYPE_BYTES]


def elements(shape: str) -> int:
    """Elements of a shape (all arrays of a tuple)."""
    return sum(math.prod(dims) for _, dims in arrays(shape))


def nbytes(shape: str) -> int:
    """Bytes of a shape (all arrays of a tuple)."""
    return sum(math.prod(dims) * DTYPE_BYTES[dt] for dt, dims in arrays(shape))


def _dims(shape: str) -> tuple[int, ...]:
    found = arrays(shape)
    return found[0][1] if found else ()


def _attr_list(attrs: str, key: str) -> list[int]:
    m = re.search(rf"\b{key}=\{{([0-9,]*)\}}", attrs)
    return [int(d) for d in m.group(1).split(",") if d] if m else []


def _attr_int(attrs: str, key: str, default: int = 1) -> int:
    m = re.search(rf"\b{key}=(\d+)", attrs)
    return int(m.group(1)) if m else default


def dot_flops(inst: Instruction, operands: list[str]) -> int:
    """2 * (output elements) * K, K the product of the lhs contracting dimensions."""
    lhs = _dims(operands[0])
    k = math.prod(lhs[d] for d in _attr_list(inst.attributes, "lhs_contracting_dims"))
    return 2 * elements(inst.shape) * k


def convolution_flops(inst: Instruction, operands: list[str]) -> int:
    """2 * output elements * kernel spatial volume * kernel input features (= in-channels per group).

    The kernel's layout comes from `dim_labels=LHS_KERNEL->OUT` (e.g. b01f_01io->b01f): 'i' marks
    its input-feature dimension, digits its spatial ones."""
    m = re.search(r"dim_labels=[^_\s,]+_([^-\s,]+)->", inst.attributes)
    kernel = _dims(operands[1])
    labels = m.group(1) if m else "01io"[-len(kernel):]
    spatial = math.prod(kernel[j] for j, c in enumerate(labels) if c.isdigit())
    in_per_group = kernel[labels.index("i")]
    return 2 * elements(inst.shape) * spatial * in_per_group


def _window_size(attrs: str) -> int:
    m = re.search(r"window=\{size=([0-9x]+)", attrs)
    return math.prod(int(d) for d in m.group(1).split("x")) if m else 1


def instruction_flops(inst: Instruction, module: HloModule, table: dict[str, Instruction] | None = None) -> int:
    """FLOPs of one execution of `inst` by the rules of the module docstring (`table`: the
    module's instructions by name, when asking for many)."""
    table = module.instructions if table is None else table
    op = inst.opcode
    if op == "fusion":
        return sum(instruction_flops(i, module, table) for i in module.computations.get(inst.calls, []))
    if op in MOVEMENT:
        return 0
    operands = module.operand_shapes(inst, table)
    if op == "dot":
        return dot_flops(inst, operands)
    if op == "convolution":
        return convolution_flops(inst, operands)
    if op == "reduce":
        n_in = len(operands) // 2 or 1  # variadic reduce: inputs, then as many init values
        return max(0, elements(operands[0]) - elements(inst.shape) // n_in) if operands else 0
    if op == "reduce-window":
        return elements(inst.shape) * _window_size(inst.attributes)
    return elements(inst.shape)  # elementwise: one per output element


def instruction_bytes(inst: Instruction, module: HloModule, table: dict[str, Instruction] | None = None) -> int:
    """Operands read once plus the result written once."""
    return sum(nbytes(s) for s in module.operand_shapes(inst, table)) + nbytes(inst.shape)


def module_flops(module: HloModule) -> int:
    """FLOPs of every instruction that runs as its own code, each counted once (a loop body once)."""
    table = module.instructions
    return sum(instruction_flops(i, module, table) for i in module.scheduled())

"""FLOPs and bytes of one optimized-HLO instruction, from its shapes and attributes alone.

What counts as one FLOP (the convention of the bench and of most roofline studies):
  dot          2 * M * N * K: every output element (batch dims included) is K multiply-adds, 2 FLOPs each;
               K is the product of the lhs contracting dimensions.
  convolution  2 * output elements * kernel volume * input channels per group: the kernel's input-feature
               dimension already holds in-channels / feature_group_count. Window positions on padding
               count, as in TensorFlow's own op statistics (XLA's cost model skips them), and so do
               those on the zeros of an lhs (base) dilation: the input gradient of a stride-s
               convolution counts s^2 times its useful work. XLA:CPU computes those zeros for grouped
               convolutions (its generic Eigen path) but skips them for ungrouped ones (its
               transposed-convolution path), so there such a point can sit up to s^2 too high.
  elementwise  1 per output element for every arithmetic, comparison, select or transcendental op
               (exp, tanh, rsqrt... each count 1, as a FLOP and not as the many a libm call takes).
  reduce       1 per reduced element: input elements - output elements applications of the reducer.
  reduce-window  output elements * window size.
  data movement  0: copy, transpose, broadcast, reshape, slice, concatenate, pad, gather, convert, iota...
  fusion       the sum of the above over its fused computation (nested fusions included).
  while, conditional, call  0 where their instructions run (and are timed) one by one; a loop XLA
               compiled whole into one `call` (core/xla_flags.py) counts its computation: the body
               and condition once per iteration (the iterations: XLA's known trip count, else the
               `trips` the caller knows, e.g. the fused loop's steps per call), a conditional its
               largest branch.

Bytes are what an instruction must move at least once: each operand read once and the result
written once (sizes from the shapes; a fusion counts its own operands and result, not the values
inside it, which stay in registers or cache). Tuples count every element. Exceptions, where the
rule would count memory the instruction never touches: a slice, dynamic-slice or gather reads only
what it returns (and its indices); a dynamic-update-slice writes its update in place, reading the
update only; inside a fusion the same holds for a parameter that is only sliced, and for a root
dynamic-update-slice into a parameter. While, conditional and (not whole) call move nothing
themselves: their instructions do. A loop compiled whole moves its state in and out once, a lower
bound on its traffic (what its iterations touch in cache is not counted).
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


SLICING = frozenset({"slice", "dynamic-slice", "gather"})  # read only what they return (and indices)
CONTAINERS = frozenset({"while", "conditional", "call"})
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def trip_count(loop: Instruction, trips: int = 1) -> int:
    """Iterations of a while loop: XLA's known trip count when it printed one, else `trips`."""
    m = _TRIP_COUNT.search(loop.attributes)
    return int(m.group(1)) if m else trips


def computation_flops(module: HloModule, computation: str, table: dict[str, Instruction], trips: int = 1) -> int:
    """FLOPs of one run of a computation's instructions as one piece of code: loops times their
    iterations, a conditional its largest branch."""
    total = 0
    for inst in module.computations.get(computation, []):
        if inst.opcode == "while":
            per = computation_flops(module, inst.body, table, trips) + computation_flops(module, inst.condition,
                                                                                        table, trips)
            total += trip_count(inst, trips) * per + computation_flops(module, inst.condition, table, trips)
        elif inst.opcode == "conditional":
            total += max(computation_flops(module, c, table, trips)
                         for c in (inst.true_computation, inst.false_computation))
        elif inst.opcode == "call":
            total += computation_flops(module, inst.to_apply, table, trips)
        else:
            total += instruction_flops(inst, module, table)
    return total


def instruction_flops(inst: Instruction, module: HloModule, table: dict[str, Instruction] | None = None,
                      trips: int = 1) -> int:
    """FLOPs of one execution of `inst` by the rules of the module docstring (`table`: the
    module's instructions by name, when asking for many; `trips`: iterations of a loop compiled
    whole whose count XLA does not know)."""
    table = module.instructions if table is None else table
    op = inst.opcode
    if op == "fusion":
        return sum(instruction_flops(i, module, table) for i in module.computations.get(inst.calls, []))
    if op == "call" and inst.whole:
        return computation_flops(module, inst.to_apply, table, trips)
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


def _update_bytes(inst: Instruction, operands: list[str]) -> int:
    """A dynamic-update-slice in place: its update read and written, its indices read."""
    return 2 * nbytes(operands[1]) + sum(nbytes(s) for s in operands[2:])


def _fusion_bytes(inst: Instruction, module: HloModule) -> int:
    """Its parameters read (only the slices taken of a parameter that is only sliced; nothing of a
    buffer its root dynamic-update-slice updates in place) and its result written (only the
    update, in place)."""
    body = module.computations[inst.calls]
    local = {i.name: i for i in body}
    users: dict[str, list[Instruction]] = {}
    for i in body:
        for o in i.operands:
            users.setdefault(o, []).append(i)
    root = next((i for i in body if i.root), body[-1])
    in_place = root.operands[0] if root.opcode == "dynamic-update-slice" else None
    moved = 0
    for param in (i for i in body if i.opcode == "parameter"):
        used = users.get(param.name, [])
        if param.name == in_place and all(u is root for u in used):
            continue
        if used and all(u.opcode in SLICING and u.operands[0] == param.name for u in used):
            moved += sum(nbytes(u.shape) for u in used)
        else:
            moved += nbytes(param.shape)
    if in_place is not None and local.get(in_place) is not None and local[in_place].opcode == "parameter":
        return moved + nbytes(module.operand_shapes(root, local)[1])
    return moved + nbytes(inst.shape)


def instruction_bytes(inst: Instruction, module: HloModule, table: dict[str, Instruction] | None = None) -> int:
    """Bytes one execution must move by the rules of the module docstring."""
    table = module.instructions if table is None else table
    op = inst.opcode
    if op in CONTAINERS and not (op == "call" and inst.whole):
        return 0
    operands = module.operand_shapes(inst, table)
    if op == "fusion" and inst.calls in module.computations:
        return _fusion_bytes(inst, module)
    if op in SLICING:
        return 2 * nbytes(inst.shape) + sum(nbytes(s) for s in operands[1:])
    if op == "dynamic-update-slice":
        return _update_bytes(inst, operands)
    return sum(nbytes(s) for s in operands) + nbytes(inst.shape)


def module_flops(module: HloModule, trips: int = 1) -> int:
    """FLOPs of every instruction that runs as its own code, each counted once (a loop body once)."""
    table = module.instructions
    return sum(instruction_flops(i, module, table, trips) for i in module.scheduled())

"""XLA IR of the compiled step and of the fused loop, at any stage TensorFlow offers, and a
summary of the optimized HLO: instructions by opcode, fusions by kind, the while-loop body.

The text is what `experimental_get_compiler_ir(*args)(stage=...)` returns; its instruction names
are the names the profiler records (`hlo_op`), which is how `hot_path` joins time to HLO.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tfscope.core.errors import ConfigError, RunDirError
from tfscope.core.xla_flags import SMALL_CALL

if TYPE_CHECKING:  # TensorFlow loads only when IR is made: parsing and stage checks stay light
    from tfscope.core.train.trainer import Trainer

STAGES = ("hlo", "hlo_no_metadata", "hlo_serialized", "stablehlo", "optimized_hlo", "optimized_hlo_serialized",
          "optimized_hlo_proto_serialized", "optimized_hlo_dot")
BINARY_STAGES = ("hlo_serialized", "optimized_hlo_serialized", "optimized_hlo_proto_serialized")
IR_MODES = ("xla", "fused")  # the XLA-compiled wrappings: one step per call, K steps per call
# Opcodes that run no code of their own (no thunk, so no profiler event): views and bookkeeping.
NO_CODE = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast"})
VIEWS = frozenset({"get-tuple-element", "tuple", "bitcast"})  # no code, and the value is another's

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\(")
_LAYOUT = re.compile(r"\{[^{}]*\}")


@dataclass
class Instruction:
    name: str  # e.g. add_dot_fusion.1; equals the profiler's hlo_op
    opcode: str  # e.g. fusion, dot, copy, while
    shape: str  # output shape without layout, e.g. f32[19,2] or a tuple
    computation: str  # the computation that holds it
    fusion_kind: str = ""  # kLoop, kInput, kOutput, kCustom... for fusions
    calls: str = ""  # the fused computation it calls
    to_apply: str = ""  # reduce, map, sort...: the computation applied per element; call: the one called
    whole: bool = False  # call: XLA compiled the called computation into one function (a small while loop)
    body: str = ""  # while: body computation
    condition: str = ""  # while: condition computation
    true_computation: str = ""  # conditional: the branch taken when the predicate holds
    false_computation: str = ""  # conditional: the other branch
    operands: list[str] = field(default_factory=list)  # operand instruction names, in order
    attributes: str = ""  # the text after the operand list (dimension numbers, window, groups...)
    root: bool = False  # the computation's ROOT instruction


@dataclass
class HloModule:
    name: str
    entry: str
    computations: dict[str, list[Instruction]] = field(default_factory=dict)

    @property
    def instructions(self) -> dict[str, Instruction]:
        """Every instruction by name (XLA keeps names unique across a module)."""
        return {i.name: i for insts in self.computations.values() for i in insts}

    def operand_shapes(self, inst: Instruction, table: dict[str, Instruction] | None = None) -> list[str]:
        """The shapes of an instruction's operands ('' for one not found); pass `instructions`
        as `table` when asking for many."""
        table = self.instructions if table is None else table
        return [table[n].shape if n in table else "" for n in inst.operands]

    def fused(self) -> set[str]:
        """Computations inlined into another instruction's code: fusion bodies, reducers (not the
        computation a `call` runs: its instructions are the program's own)."""
        return {c for insts in self.computations.values() for i in insts
                for c in (i.calls, "" if i.opcode == "call" else i.to_apply) if c}

    def scheduled(self) -> list[Instruction]:
        """Instructions that run as their own piece of code: not inside a fusion, not a no-op."""
        inner = self.fused()
        return [i for c, insts in self.computations.items() if c not in inner
                for i in insts if i.opcode not in NO_CODE]

    def consumers(self) -> dict[str, set[str]]:
        """Instruction name -> the instructions with code that read its result, looking through
        views (get-tuple-element, bitcast, tuple) to what they view."""
        table = self.instructions

        def sources(name: str, seen: frozenset = frozenset()) -> set[str]:
            inst = table.get(name)
            if inst is None or name in seen:
                return set()
            if inst.opcode in VIEWS:
                return {s for o in inst.operands for s in sources(o, seen | {name})}
            return {name}

        out: dict[str, set[str]] = {}
        for inst in self.scheduled():
            for operand in inst.operands:
                for src in sources(operand):
                    out.setdefault(src, set()).add(inst.name)
        return out

    def whiles(self) -> list[Instruction]:
        return [i for insts in self.computations.values() for i in insts if i.opcode == "while"]

    def compiled_whole(self, loop: Instruction) -> bool:
        """Whether XLA:CPU compiled this while loop into one function (core/xla_flags.py): its
        instructions then run without a runtime call (and a profiler event) each."""
        return any(i.whole and i.to_apply == loop.computation for insts in self.computations.values() for i in insts)

    def code(self, computation: str) -> int:
        """Instructions with code of their own in one computation."""
        return sum(1 for i in self.computations.get(computation, []) if i.opcode not in NO_CODE)

    def guards(self, computation: str) -> list[Instruction]:
        """The conditionals of a computation: in a fused loop body, the step's finite-loss guard when
        XLA keeps it a conditional (it may turn it into selects)."""
        return [i for i in self.computations.get(computation, []) if i.opcode == "conditional"]

    def loop_parts(self) -> set[str]:
        """Computations that run per loop iteration: bodies, conditions and the branches they call."""
        parts = {c for w in self.whiles() for c in (w.body, w.condition)}
        return parts | {b for w in self.whiles() for g in self.guards(w.body)
                        for b in (g.true_computation, g.false_computation)}

    def executed_per_step(self, dispatched_only: bool = False) -> int:
        """Instructions with code that one fused step executes: body + condition + the taken (update)
        branches of its loop (the largest, if several). With `dispatched_only`, a loop compiled whole
        counts 0: none of its instructions is a runtime call."""
        per_step = [self.code(w.body) + self.code(w.condition) + sum(self.code(g.true_computation)
                                                                     for g in self.guards(w.body))
                    for w in self.whiles() if not (dispatched_only and self.compiled_whole(w))]
        return max(per_step, default=0)

    def executed_outside_loops(self) -> int:
        loops = self.loop_parts()
        return sum(1 for i in self.scheduled() if i.computation not in loops)


def parse(text: str) -> HloModule:
    """Parse HLO text (as printed by XLA) into computations and instructions."""
    first = text.lstrip().split("\n", 1)[0]
    m = re.match(r"HloModule\s+([\w.\-]+)", first)
    module = HloModule(m.group(1) if m else "", "")
    current = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("HloModule"):
            continue
        if not line.startswith(" "):
            cm = _COMPUTATION.match(line)
            if cm:
                current = cm.group(2)
                module.computations[current] = []
                if cm.group(1):
                    module.entry = current
            elif line.startswith("}"):
                current = None
            continue
        im = _INSTRUCTION.match(line)
        if current is None or not im:
            continue
        bare = re.sub(r"metadata=\{[^}]*\}", "", line)  # op names in metadata must not look like attributes
        attrs = dict(re.findall(r"\b(kind|calls|body|condition|to_apply|true_computation|false_computation)"
                                r"=%?([\w.\-]+)", bare))
        module.computations[current].append(Instruction(
            name=im.group(2), opcode=im.group(4), shape=_shape(im.group(3)), computation=current,
            fusion_kind=attrs.get("kind", ""), calls=attrs.get("calls", ""), to_apply=attrs.get("to_apply", ""),
            body=attrs.get("body", ""), condition=attrs.get("condition", ""),
            true_computation=attrs.get("true_computation", ""), false_computation=attrs.get("false_computation", ""),
            whole=im.group(4) == "call" and SMALL_CALL in line, root=bool(im.group(1)),
            **_operands_and_attributes(bare, im.end())))
    return module


def _operands_and_attributes(line: str, start: int) -> dict:
    """Operand names (`%x` or, where XLA prints shapes, `f32[4,8]{1,0} %x` -> x) and the attribute
    text of one instruction line, `start` being just past the opcode's opening parenthesis."""
    depth, parts, cur, i = 0, [], "", start
    while i < len(line):
        ch = line[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0 and ch == ")":
                break
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    names = [p.strip().rsplit("%", 1)[1].strip() for p in parts if "%" in p]
    return {"operands": names, "attributes": line[i + 1:].strip().lstrip(",").strip()}


def _shape(text: str) -> str:
    """A shape as printed, without layouts and index comments: f32[19,2]{1,0} -> f32[19,2]."""
    text = re.sub(r"/\*index=\d+\*/", "", text)
    return _LAYOUT.sub("", text)


def summary(module: HloModule) -> dict:
    """Instructions by opcode, fusions by kind, and each while loop's body (opcode -> count)."""
    insts = [i for c, v in module.computations.items() if c not in module.fused() for i in v]
    out = {
        "module": module.name,
        "instructions": len(insts),
        "by_opcode": dict(Counter(i.opcode for i in insts).most_common()),
        "fusions_by_kind": dict(Counter(i.fusion_kind for i in insts if i.opcode == "fusion").most_common()),
        "executed_per_call_outside_loops": module.executed_outside_loops(),
        "executed_per_step": module.executed_per_step(),
        "while_loops": [],
    }
    for w in module.whiles():
        body = module.computations.get(w.body, [])
        out["while_loops"].append({
            "instruction": w.name, "body": w.body, "condition": w.condition,
            "compiled_whole": module.compiled_whole(w),
            "body_by_opcode": dict(Counter(i.opcode for i in body if i.opcode not in NO_CODE).most_common()),
            "body_instructions": [f"{i.name} = {i.opcode}{'(' + i.fusion_kind + ')' if i.fusion_kind else ''} "
                                  f"-> {i.shape}" for i in body if i.opcode not in NO_CODE],
        })
    return out


def step_args(trainer: Trainer, mode: str) -> tuple:
    """Arguments of the compiled function of `mode`: fused takes the step count, the rest nothing."""
    import tensorflow as tf

    return (tf.constant(trainer.steps_per_call, tf.int32),) if mode == "fused" else ()


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"--stage: unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return stage


def compiler_ir(fn: Callable, args: tuple, stage: str) -> str | bytes:
    """The IR of a tf.function for `args` at `stage` (a text, or bytes for the serialized stages)."""
    return fn.experimental_get_compiler_ir(*args)(stage=check_stage(stage))


def graph_op_counts(fn: Callable, args: tuple) -> dict[str, int]:
    """TF ops of the step function's graph by type, before XLA sees it: the function's own ops and
    those of the functions it calls (a while loop's body and condition, a cond's branches)."""
    graph_def = fn.get_concrete_function(*args).graph.as_graph_def()
    types = [n.op for n in graph_def.node] + [n.op for f in graph_def.library.function for n in f.node_def]
    return dict(Counter(types).most_common())


def ir_filename(mode: str, stage: str) -> str:
    ext = {"stablehlo": "mlir", "optimized_hlo_dot": "dot"}.get(stage, "pb" if stage in BINARY_STAGES else "txt")
    return f"{'step' if mode == 'xla' else 'fused_loop'}.{stage}.{ext}"


def write_ir(trainer: Trainer, out_dir: str | Path, stage: str, modes: tuple[str, ...] = IR_MODES) -> dict:
    """Write each mode's IR at `stage`, its TF graph and op counts into `out_dir`; return the summary.

    The summary always comes from the optimized HLO (what runs), whatever `stage` is written."""
    import tensorflow as tf

    check_stage(stage)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{out}: cannot create ({e.strerror})") from None
    report: dict = {"stage": stage, "modes": {}}
    for mode in modes:
        if mode not in IR_MODES:
            raise ConfigError(f"--mode: {mode!r} has no XLA IR; choose one of {', '.join(IR_MODES)}")
        fn = trainer.compiled(mode)
        args = step_args(trainer, mode)
        ir = compiler_ir(fn, args, stage)
        path = out / ir_filename(mode, stage)
        path.write_bytes(ir) if isinstance(ir, bytes) else path.write_text(ir, encoding="utf-8")
        graph = fn.get_concrete_function(*args).graph
        graph_path = out / f"{'step' if mode == 'xla' else 'fused_loop'}.graph.pbtxt"
        tf.io.write_graph(graph.as_graph_def(), str(out), graph_path.name, as_text=True)
        module = parse(ir if stage == "optimized_hlo" else compiler_ir(fn, args, "optimized_hlo"))
        report["modes"][mode] = {"ir_file": str(path), "graph_file": str(graph_path),
                                 "tf_graph_ops": graph_op_counts(fn, args), "optimized_hlo": summary(module)}
    return report


def format_summary(report: dict) -> str:
    """The printed summary of `write_ir`'s report."""
    lines = []
    for mode, r in report["modes"].items():
        s = r["optimized_hlo"]
        ops = r["tf_graph_ops"]
        lines.append(f"{mode}: {r['ir_file']}")
        lines.append(f"  TF graph: {sum(ops.values())} ops; " + ", ".join(f"{k} {v}" for k, v in list(ops.items())[:8]))
        lines.append(f"  optimized HLO {s['module']}: {s['instructions']} instructions outside fusions; "
                     f"{s['executed_per_call_outside_loops']} run once per call, "
                     f"{s['executed_per_step']:g} per fused step")
        lines.append("  by opcode: " + ", ".join(f"{k} {v}" for k, v in s["by_opcode"].items()))
        if s["fusions_by_kind"]:
            lines.append("  fusions by kind: " + ", ".join(f"{k} {v}" for k, v in s["fusions_by_kind"].items()))
        for w in s["while_loops"]:
            how = "one compiled function" if w["compiled_whole"] else "a runtime call per instruction"
            lines.append(f"  while loop {w['instruction']} ({how}): "
                         f"body {w['body']}, "
                         + ", ".join(f"{k} {v}" for k, v in w["body_by_opcode"].items()))
            lines.extend(f"    {t}" for t in w["body_instructions"])
    return "\n".join(lines)

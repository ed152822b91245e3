"""The hot-path report: where the captured step time goes, op by op, without the UI.

TensorBoard's op_profile and hlo_stats are empty for XLA on CPU. The capture itself has what they
lack: on CPU, XLA records one event per executed optimized-HLO instruction (stats `hlo_op`,
`hlo_module`), inside the executable's event. This report sums each instruction's exclusive
(self) time over the captured window and joins it with the optimized HLO text (opcode, fusion
kind, output shape). Graph mode has no HLO; its TF op events (`name:Type`) are summed instead,
and in eager mode each op's execution (`EagerLocalExecute: Type`, dispatch included).

An instruction's time is the time it is in flight: from the start of its event to the end of its
work. With more than one thread XLA:CPU dispatches convolutions, dots and partitioned loop
fusions to its intra-op pool and returns before they finish, so their event covers the dispatch
only; the runtime records a marker (`end: NAME`, linked by context id) when the work completes,
after running whatever the completion made ready. Where that marker comes after the event, the
end of the work is taken as the earlier of the marker and the first start of an instruction that
reads the result; elsewhere (the marker inside the event: the work was done inline) the event's
end. The explained share is the union of these spans over all threads, against the
executable's (and the step's) wall time: what it leaves out is time no instruction was in flight
(dispatch, hand-offs between threads, a ready instruction waiting for a core). Summed times can
exceed the union when instructions run concurrently; `concurrency` says by how much.

Times are under the profiler, which adds its own cost to every recorded event (a fused lecture
step: ~14 us while training, 40-100 us under the profiler on a 2-core machine): shares are the
useful figure; absolute times of tiny ops are inflated.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from tfscope.core.errors import RunDirError
from tfscope.profiling import hlo, xplane

JSON_NAME, CSV_NAME, HLO_NAME = "hot_path.json", "hot_path.csv", "optimized_hlo.txt"
EXECUTABLE = re.compile(r"Executable::Execute")  # CpuExecutable::ExecuteAsyncOnStream, GPU's likewise
STATS = frozenset({"hlo_op", "hlo_module", "step_num", "_p", "_c"})  # the stats the report reads
END_MARKER = "end: "  # XLA:CPU's completion marker of an instruction; its `_c` is the event's `_p`
CONTAINERS = frozenset({"while", "call", "conditional"})  # their work is their body's instructions
# graph-mode op events: "scope/name:Type"; a type may start with "_" (grappler's rewrites, e.g. oneDNN's
# _MklNativeFusedMatMul for MatMul + BiasAdd)
TF_OP = re.compile(r"^[^\s:]+:(_?[A-Za-z][\w]*)$")
# eager mode: one event per op or called function (__inference_...), dispatch included
EAGER_OP = re.compile(r"^EagerLocalExecute: (_*[A-Za-z][\w]*)$")


@dataclass
class OpRow:
    name: str  # HLO instruction or TF op name
    opcode: str  # HLO opcode or TF op type
    fusion_kind: str  # HLO fusions only
    shape: str  # HLO output shape
    calls: int  # events in the window
    total_us: float  # summed self time in flight (see the module docstring)
    mean_us: float
    share: float  # total / summed step time


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def _module_key(name: str) -> str:
    """`a_inference_fused_steps_499__XlaMustCompile_..._.12` and `a_inference_fused_steps_499__.12`
    (the HLO text's module name) both become `a_inference_fused_steps_499`."""
    return name.split("__")[0]


def _inside(e: xplane.Event, windows: list[tuple[int, int]]) -> bool:
    """Does the event start inside one of the (sorted, disjoint) step windows?"""
    i = bisect.bisect_right(windows, (e.start_ps, float("inf"))) - 1
    return i >= 0 and windows[i][0] <= e.start_ps < windows[i][1]


def build(logdir: str | Path, hlo_text: str | None = None, mode: str = "fused", steps_per_call: int = 1) -> dict:
    """Parse LOGDIR's newest capture into the report (a JSON-ready dict)."""
    path = xplane.find_xplane(logdir)
    space = xplane.load(path)
    every = list(xplane.events(space, stats=STATS))
    steps = xplane.step_events(every)
    if not steps:
        raise RunDirError(f"{path}: no step markers (Trace('train', step_num=...)) in the capture")
    windows = sorted((e.start_ps, e.end_ps) for e in steps)
    step_us = [e.duration_ps / 1e6 for e in steps]
    step_total_us = sum(step_us)
    inside = [e for e in every if _inside(e, windows)]

    module = hlo.parse(hlo_text) if hlo_text else None
    # graph and eager steps are reports of TF ops: an XLA-compiled call inside them (a mini-batch step's
    # rows) is one TF op among the others, though the capture records its instructions too
    hlo_events = [e for e in inside if "hlo_op" in e.stats] if mode not in ("graph", "eager") else []
    devices = xplane.device_planes(space)
    on_device = [e for e in hlo_events if e.plane in devices]
    if on_device:  # a GPU's kernels are the hot path; host-side events there are launches
        hlo_events = on_device
    if module and hlo_events:
        key = _module_key(module.name)
        matched = [e for e in hlo_events if _module_key(str(e.stats.get("hlo_module", ""))) == key]
        hlo_events = matched or hlo_events

    if hlo_events:
        kind, evs = "hlo", hlo_events
        insts = module.instructions if module else {}
        markers = {e.stats["_c"]: e.start_ps for e in inside if e.name.startswith(END_MARKER) and "_c" in e.stats}
        ends = completions(evs, markers, module.consumers() if module else {},
                           {n: i.opcode for n, i in insts.items()}, windows)
    else:
        kind, insts = "tf_op", {}
        evs = [e for e in inside if TF_OP.match(e.name)] or [e for e in inside if EAGER_OP.match(e.name)]
        ends = [e.end_ps for e in evs]
    own = xplane.self_times(evs)
    tails = [end - e.end_ps for e, end in zip(evs, ends)]
    rows: dict[str, OpRow] = {}
    for i, e in enumerate(evs):
        name = str(e.stats["hlo_op"]) if kind == "hlo" else e.name
        row = rows.get(name)
        if row is None:
            inst = insts.get(name)
            opcode = (inst.opcode if inst else "?") if kind == "hlo" else (TF_OP.match(e.name)
                                                                             or EAGER_OP.match(e.name)).group(1)
            row = rows[name] = OpRow(name, opcode, inst.fusion_kind if inst else "", inst.shape if inst else "",
                                     0, 0.0, 0.0, 0.0)
        row.calls += 1
        row.total_us += (own[i] + tails[i]) / 1e6
    for row in rows.values():
        row.mean_us = row.total_us / row.calls
        row.share = row.total_us / step_total_us if step_total_us else 0.0
    ordered = sorted(rows.values(), key=lambda r: -r.total_us)
    listed_us = sum(r.total_us for r in ordered)
    executables = [e for e in inside if EXECUTABLE.search(e.name)]
    executable_us = sum(e.duration_ps for e in executables) / 1e6
    in_flight = merged([(e.start_ps, end) for e, end in zip(evs, ends)])
    covered_us = overlap(in_flight, windows) / 1e6
    covered_exe_us = overlap(in_flight, merged([(e.start_ps, e.end_ps) for e in executables])) / 1e6

    return {
        "xplane": str(path),
        "xplane_bytes": path.stat().st_size,
        "planes": xplane.plane_names(space),
        "mode": mode,
        "kind": kind,
        "hlo_module": module.name if module else None,
        "loops_compiled_whole": [w.name for w in module.whiles() if module.compiled_whole(w)] if module else [],
        "calls": len(steps),
        "steps_per_call": steps_per_call,
        "step_numbers": [int(e.stats["step_num"]) for e in steps],
        "call_time_us": _stats(step_us),
        "training_step_us": statistics.fmean(step_us) / steps_per_call,
        "events_in_window": len(inside),
        "op_events": len(evs),
        "executable_us": executable_us,
        "listed_us": listed_us,
        "async_tail_us": sum(tails) / 1e6,
        "covered_us": covered_us,
        "concurrency": listed_us / covered_us if covered_us else None,
        "explained_share_of_step": covered_us / step_total_us if step_total_us else 0.0,
        "explained_share_of_executable": covered_exe_us / executable_us if executable_us else None,
        "ops": [asdict(r) for r in ordered],
    }


def completions(evs: list[xplane.Event], markers: dict[int, int], consumers: dict[str, set[str]],
                opcodes: dict[str, str], windows: list[tuple[int, int]]) -> list[int]:
    """When each instruction event's work ended (ps). An instruction whose completion marker
    (`markers`: context id -> time) comes after its event ran on after it: its work ended by the
    marker and by the first start of a consumer's event after its own start (whichever is earlier,
    within its step window). Any other ends with its event, as do containers (while, call,
    conditional), whose later time is their body's instructions'."""
    starts: dict[str, list[int]] = {}
    for e in evs:
        starts.setdefault(str(e.stats["hlo_op"]), []).append(e.start_ps)
    for v in starts.values():
        v.sort()
    out = []
    for e in evs:
        name = str(e.stats["hlo_op"])
        marker = markers.get(e.stats.get("_p"))
        if marker is None or marker <= e.end_ps or opcodes.get(name) in CONTAINERS:
            out.append(e.end_ps)
            continue
        bounds = [marker]
        for c in consumers.get(name, ()):
            s = starts.get(c, [])
            k = bisect.bisect_left(s, e.start_ps)
            if k < len(s):
                bounds.append(s[k])
        w = bisect.bisect_right(windows, (e.start_ps, float("inf"))) - 1
        if w >= 0:
            bounds.append(windows[w][1])
        out.append(max(e.end_ps, min(bounds)))
    return out


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of (start, end) spans as sorted, disjoint spans."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Total length of the intersection of two sorted lists of disjoint spans."""
    i = j = total = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    fields = ["rank", *OpRow.__dataclass_fields__]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for rank, row in enumerate(report["ops"], 1):
        w.writerow({"rank": rank, **row})
    return buf.getvalue()


def write(report: dict, logdir: str | Path) -> tuple[Path, Path]:
    """Write LOGDIR/hot_path.json and LOGDIR/hot_path.csv (without the roofline, which has its own
    files); return their paths."""
    d = Path(logdir)
    jp, cp = d / JSON_NAME, d / CSV_NAME
    jp.write_text(json.dumps({k: v for k, v in report.items() if k != "roofline"}, indent=2) + "\n",
                  encoding="utf-8")
    cp.write_text(to_csv(report), encoding="utf-8")
    return jp, cp


def from_logdir(logdir: str | Path) -> dict:
    """Rebuild the report from a LOGDIR that `capture.profile_run` wrote (it saved the HLO text)."""
    d = Path(logdir)
    meta = d / JSON_NAME
    old = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
    text = (d / HLO_NAME).read_text(encoding="utf-8") if (d / HLO_NAME).is_file() else None
    return build(d, text, old.get("mode", "fused"), old.get("steps_per_call", 1))


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_top(report: dict, top: int = 10) -> str:
    """The head of the report as printed: step times, then the top ops, then what they explain."""
    c = report["call_time_us"]
    k = report["steps_per_call"]
    lines = [f"capture:  {report['calls']} calls x {k:,} step{'s' if k != 1 else ''} in {report['mode']} mode, "
             f"{report['xplane_bytes'] / 1e6:.2f} MB ({report['xplane']})",
             f"per call: mean {c['mean']:.1f} us, median {c['median']:.1f} us, stdev {c['stdev']:.1f} us, "
             f"min {c['min']:.1f}, max {c['max']:.1f} (under the profiler)"]
    if k != 1:
        lines.append(f"per step: {report['training_step_us']:.3f} us")
    what = "optimized-HLO instruction" if report["kind"] == "hlo" else "TF op"
    lines.append(f"top {min(top, len(report['ops']))} of {len(report['ops'])} by self time per {what}:")
    lines.append(f"  {'share':>6}  {'total us':>10}  {'calls':>7}  {'name':<36} {'opcode':<16} {'kind':<8} shape")
    for r in report["ops"][:top]:
        lines.append(f"  {100 * r['share']:5.1f}%  {r['total_us']:10.1f}  {r['calls']:7d}  {r['name']:<36} "
                     f"{r['opcode']:<16} {r['fusion_kind']:<8} {_short(r['shape'])}")
    ex = report["explained_share_of_executable"]
    lines.append(f"listed ops explain {100 * report['explained_share_of_step']:.1f}% of step time"
                 + (f" ({100 * ex:.1f}% of the compiled executable's)" if ex else "")
                 + ": the union of their time in flight over all threads; the rest no op ran (dispatch, "
                 "hand-offs between threads, an op waiting for a core)")
    if report.get("async_tail_us"):
        lines.append(f"{report['async_tail_us']:,.0f} us of it ran after an instruction's own event ended (work "
                     "XLA:CPU dispatched to its thread pool), timed to its completion marker or first consumer")
    if (report.get("concurrency") or 1) > 1.005:
        lines.append(f"summed, their times are {report['concurrency']:.2f}x that union: ops ran concurrently, "
                     "so shares add up to more than the explained share")
    if report.get("loops_compiled_whole"):
        loops = ", ".join(report["loops_compiled_whole"])
        lines.append(f"the loop ({loops}) ran as one compiled function, as it does in training: its "
                     "instructions are not timed one by one; `tfscope profile --per-instruction` times each, in a "
                     "build that runs every instruction as its own runtime call (slower; read shares)")
    return "\n".join(lines)

"""The hot-path report: where the captured step time goes, op by op, without the UI.

TensorBoard's op_profile and hlo_stats are empty for XLA on CPU. The capture itself has what they
lack: on CPU, XLA records one event per executed optimized-HLO instruction (stats `hlo_op`,
`hlo_module`), inside the executable's event. This report sums each instruction's exclusive
(self) time over the captured window and joins it with the optimized HLO text (opcode, fusion
kind, output shape). Graph mode has no HLO; its TF op events (`name:Type`) are summed instead,
and in eager mode each op's execution (`EagerLocalExecute: Type`, dispatch included).

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
STATS = frozenset({"hlo_op", "hlo_module", "step_num"})  # the stats the report reads
TF_OP = re.compile(r"^[^\s:]+:([A-Za-z][\w]*)$")  # graph-mode op events: "scope/name:Type"
EAGER_OP = re.compile(r"^EagerLocalExecute: ([A-Za-z][\w]*)$")  # eager mode: one per op, dispatch included


@dataclass
class OpRow:
    name: str  # HLO instruction or TF op name
    opcode: str  # HLO opcode or TF op type
    fusion_kind: str  # HLO fusions only
    shape: str  # HLO output shape
    calls: int  # events in the window
    total_us: float  # summed self time
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
    hlo_events = [e for e in inside if "hlo_op" in e.stats]
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
    else:
        kind, insts = "tf_op", {}
        evs = [e for e in inside if TF_OP.match(e.name)] or [e for e in inside if EAGER_OP.match(e.name)]
    own = xplane.self_times(evs)
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
        row.total_us += own[i] / 1e6
    for row in rows.values():
        row.mean_us = row.total_us / row.calls
        row.share = row.total_us / step_total_us if step_total_us else 0.0
    ordered = sorted(rows.values(), key=lambda r: -r.total_us)
    listed_us = sum(r.total_us for r in ordered)
    executables = [e for e in inside if EXECUTABLE.search(e.name)]
    executable_us = sum(e.duration_ps for e in executables) / 1e6

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
        "explained_share_of_step": listed_us / step_total_us if step_total_us else 0.0,
        "explained_share_of_executable": listed_us / executable_us if executable_us else None,
        "covered_share_of_executable": _covered(evs, executables) / executable_us / 1e6 if executable_us else None,
        "ops": [asdict(r) for r in ordered],
    }


def _covered(evs: list[xplane.Event], executables: list[xplane.Event]) -> int:
    """Picoseconds of the executables' time during which at least one op event runs, on any thread.

    XLA:CPU's thunk executor runs independent instructions concurrently on the intra-op pool, so
    summed self times can exceed the wall time they cover; this union cannot. What it leaves out
    is time no instruction ran: dispatch, and threads the OS did not schedule."""
    covered = 0
    for x in executables:
        spans = sorted((max(e.start_ps, x.start_ps), min(e.end_ps, x.end_ps)) for e in evs
                       if e.end_ps > x.start_ps and e.start_ps < x.end_ps)
        end = x.start_ps
        for a, b in spans:
            if b > end:
                covered += b - max(a, end)
                end = b
    return covered


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    fields = ["rank", *OpRow.__dataclass_fields__]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for rank, row in enumerate(report["ops"], 1):
        w.writerow({"rank": rank, **row})
    return buf.getvalue()


def write(report: dict, logdir: str | Path) -> tuple[Path, Path]:
    """Write LOGDIR/hot_path.json and LOGDIR/hot_path.csv; return their paths."""
    d = Path(logdir)
    jp, cp = d / JSON_NAME, d / CSV_NAME
    jp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
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
    ex, cov = report["explained_share_of_executable"], report.get("covered_share_of_executable")
    lines.append(f"listed ops explain {100 * report['explained_share_of_step']:.1f}% of step time"
                 + (f" ({100 * ex:.1f}% of the compiled executable's)" if ex else "")
                 + "; the rest is dispatch and profiler overhead")
    if cov is not None and ex and ex > 0:
        lines.append(f"they run during {100 * cov:.1f}% of the executable's wall time (their union over threads; "
                     "the rest no instruction ran: dispatch, or threads waiting for a core)")
    if report.get("loops_compiled_whole"):
        loops = ", ".join(report["loops_compiled_whole"])
        lines.append(f"the fused loop ({loops}) ran as one compiled function, as it does in training: its "
                     "instructions are not timed one by one; `tfscope profile --per-instruction` times each, in a "
                     "build that runs every instruction as its own runtime call (slower; read shares)")
    return "\n".join(lines)

"""The roofline of a capture: every optimized-HLO instruction of the hot-path report placed
against the machine's measured roofs (profiling/roofs.py).

Per instruction: FLOPs and bytes of one execution (profiling/flops.py), arithmetic intensity
(FLOP per byte), achieved GFLOP/s and GB/s (per execution, from its self time under the
profiler), and its bound class:
  compute   intensity at or above the ridge point (peak / bandwidth)
  memory    intensity below it
  overhead  far below both roofs: achieved GFLOP/s < OVERHEAD_FRACTION of the peak AND achieved
            GB/s < OVERHEAD_FRACTION of the bandwidth (dispatch, profiler cost, tiny shapes), or
            an instruction that neither computes nor moves data (while, call, conditional)
Times come from the capture, so they include the profiler's own cost per event: small
instructions read as overhead partly because they are timed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tfscope.profiling.flops import instruction_bytes, instruction_flops
from tfscope.profiling.hlo import HloModule
from tfscope.profiling.roofs import Roofs

JSON_NAME, CSV_NAME, PNG_NAME = "roofline.json", "roofline.csv", "roofline.png"
OVERHEAD_FRACTION = 0.05
BOUNDS = ("compute", "memory", "overhead")
SUMMARY_RUN = "roofline"  # the TensorBoard run (LOGDIR/roofline) holding the summary


@dataclass
class Point:
    name: str
    opcode: str
    fusion_kind: str
    shape: str
    calls: int
    total_us: float  # self time summed over the window
    share: float  # of the captured step time
    flops: int  # per execution
    bytes: int  # per execution
    intensity: float  # FLOP per byte (0 when nothing moves)
    gflops: float  # achieved, per execution
    gbs: float  # achieved, per execution
    attainable_gflops: float  # what the roofline allows at this intensity
    fraction_of_roof: float  # gflops / attainable (memory-bound: equally GB/s / bandwidth)
    bound: str  # compute, memory or overhead


def classify(intensity: float, gflops: float, gbs: float, roofs: Roofs) -> str:
    """compute / memory by intensity against the ridge, overhead when far below both roofs."""
    if gflops < OVERHEAD_FRACTION * roofs.peak_gflops and gbs < OVERHEAD_FRACTION * roofs.bandwidth_gbs:
        return "overhead"
    return "compute" if intensity >= roofs.ridge else "memory"


def point(row: dict, module: HloModule, roofs: Roofs, table: dict | None = None, trips: int = 1) -> Point:
    """One hot-path row placed on the roofline (`table`: the module's instructions by name;
    `trips`: iterations per call of a loop compiled whole, when XLA does not know them)."""
    table = module.instructions if table is None else table
    inst = table.get(row["name"])
    flops = instruction_flops(inst, module, table, trips) if inst else 0
    moved = instruction_bytes(inst, module, table) if inst else 0
    seconds = row["total_us"] / row["calls"] / 1e6 if row["calls"] else 0.0
    gflops = flops / seconds / 1e9 if seconds > 0 else 0.0
    gbs = moved / seconds / 1e9 if seconds > 0 else 0.0
    intensity = flops / moved if moved else 0.0
    attainable = roofs.attainable(intensity) if moved else roofs.peak_gflops
    bound = classify(intensity, gflops, gbs, roofs) if (flops or moved) else "overhead"
    return Point(row["name"], row["opcode"], row["fusion_kind"], row["shape"], row["calls"], row["total_us"],
                 row["share"], flops, moved, intensity, gflops, gbs, attainable,
                 gflops / attainable if attainable and flops else gbs / roofs.bandwidth_gbs, bound)


def build(hot: dict, hlo_text: str, roofs: Roofs) -> dict:
    """The roofline report of a hot-path report (kind "hlo") and the module's optimized HLO text.

    A loop compiled whole is one `call` point whose FLOPs are its body's times the iterations of one
    execution (XLA's known trip count where it has one, else the steps the window ran over the call's
    executions: all of a call's steps for the lecture's loop, one for a mini-batch run's step loop,
    which the loop gathering its rows executes once a step)."""
    from tfscope.profiling.hlo import parse

    module = parse(hlo_text)
    table = module.instructions
    calls, steps = max(hot["calls"], 1), hot.get("steps_per_call", 1)
    points = [point(r, module, roofs, table, max(1, round(calls * steps / max(r["calls"], 1)))) for r in hot["ops"]]
    listed = sum(p.total_us for p in points) or 1.0
    totals = {}
    for b in BOUNDS:
        mine = [p for p in points if p.bound == b]
        totals[b] = {"instructions": len(mine), "total_us": sum(p.total_us for p in mine),
                     "share_of_listed": sum(p.total_us for p in mine) / listed,
                     "share_of_step": sum(p.share for p in mine),
                     "flops_per_call": sum(p.flops * p.calls for p in mine) / calls}
    flops_per_call = sum(p.flops * p.calls for p in points) / calls
    return {
        "hlo_module": module.name,
        "roofs": roofs.to_dict(),
        "overhead_fraction": OVERHEAD_FRACTION,
        "calls": hot["calls"],
        "steps_per_call": steps,
        "flops_per_call": flops_per_call,
        "flops_per_step": flops_per_call / steps,
        "listed_us_per_call": listed / calls,
        "in_flight_us_per_call": (hot.get("covered_us") or listed) / calls,
        "achieved_gflops_overall": flops_per_call / ((hot.get("covered_us") or listed) / calls) / 1e3,
        "explained_share_of_step": hot["explained_share_of_step"],
        "explained_share_of_executable": hot["explained_share_of_executable"],
        "note": whole_loop_note(hot),
        "totals": totals,
        "points": [asdict(p) for p in points],
    }


def whole_loop_note(hot: dict) -> str | None:
    """What the roofline can and cannot show of a loop XLA compiled into one function."""
    loops = hot.get("loops_compiled_whole")
    if not loops:
        return None
    how = ("`tfscope profile RUN_DIR --per-instruction` places each of its instructions" if hot["mode"] == "fused"
           else "XLA_FLAGS=--xla_cpu_small_while_loop_byte_threshold=0 runs each of its instructions on its own")
    return (f"the loop ({', '.join(loops)}) ran as one compiled function: one point, its FLOPs those of the "
            f"iterations an execution ran, its bytes only the loop's state in and out "
            f"(a lower bound on its traffic, so its intensity and class are upper bounds); {how}")


def attach(report: dict, hlo_text: str | None, roofs: Roofs | None, logdir: str | Path, top: int = 15,
           title: str | None = None) -> dict | None:
    """The roofline of a hot-path report, written to LOGDIR (JSON, CSV, PNG, TensorBoard summary)
    and stored under report["roofline"]; None (nothing written) without XLA instructions or roofs.
    Runs and models alike come through here."""
    report["roofline"] = None
    if not hlo_text or report["kind"] != "hlo" or roofs is None:
        return None
    r = build(report, hlo_text, roofs)
    r["title"] = title
    write(r, logdir, top)
    report["roofline"] = r
    return r


def files(report: dict) -> list[str]:
    """The report files a profile wrote into its LOGDIR, by name."""
    from tfscope.profiling import hot_path

    return [hot_path.JSON_NAME, hot_path.CSV_NAME] + ([JSON_NAME, CSV_NAME, PNG_NAME] if report.get("roofline") else [])


def format_report(report: dict, top: int = 15) -> str:
    """The printed report: the hot path, then the roofs, the roofline table and its note."""
    from tfscope.profiling import hot_path

    lines = [hot_path.format_top(report, top)]
    r = report.get("roofline")
    if r:
        lines += [format_roofs(r["roofs"]), format_table(r, top)]
        if r.get("note"):
            lines.append(f"note:     {r['note']}")
    return "\n".join(lines)


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["rank", *Point.__dataclass_fields__], lineterminator="\n")
    w.writeheader()
    for rank, p in enumerate(report["points"], 1):
        w.writerow({"rank": rank, **p})
    return buf.getvalue()


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_roofs(roofs: dict) -> str:
    kernels = (f"the faster of XLA's {roofs['matmul_n']}^2 matmul, {roofs.get('matmul_gflops', 0):.1f}, and 3x3 "
               f"convolution, {roofs.get('conv_gflops', 0):.1f}; " if roofs.get("conv_gflops")
               else f"XLA {roofs['matmul_n']}^2 matmul, ")
    return (f"roofs:    peak {roofs['peak_gflops']:.1f} GFLOP/s ({kernels}median of "
            f"{roofs['runs']}, {roofs['peak_spread'][0]:.1f}-{roofs['peak_spread'][1]:.1f}), bandwidth "
            f"{roofs['bandwidth_gbs']:.2f} GB/s (XLA x*a+b in place, {roofs['stream_bytes'] / 2**20:.0f} MiB per pass, "
            f"{roofs['bandwidth_spread'][0]:.2f}-{roofs['bandwidth_spread'][1]:.2f}), ridge "
            f"{roofs['ridge_flop_per_byte']:.1f} FLOP/B, {roofs['threads']} threads")


def format_table(report: dict, top: int = 15, markdown: bool = False) -> str:
    """The top instructions by time with their roofline columns, then the totals per bound class."""
    head = ["share", "name", "opcode", "MFLOP", "MB", "FLOP/B", "GFLOP/s", "GB/s", "of roof", "bound"]
    rows = []
    for p in report["points"][:top]:
        op = p["opcode"] + (f"({p['fusion_kind']})" if p["fusion_kind"] else "")
        rows.append([f"{100 * p['share']:.1f}%", _short(p["name"], 34), _short(op, 20), f"{p['flops'] / 1e6:.2f}",
                     f"{p['bytes'] / 1e6:.3f}", f"{p['intensity']:.2f}", f"{p['gflops']:.2f}", f"{p['gbs']:.2f}",
                     f"{100 * p['fraction_of_roof']:.0f}%", p["bound"]])
    totals = [f"{b} {t['instructions']} instructions, {100 * t['share_of_step']:.1f}% of step time"
              for b, t in report["totals"].items()]
    tail = [f"totals:   {'; '.join(totals)}",
            f"overall:  {report['flops_per_call'] / 1e6:.1f} MFLOP per call at "
            f"{report['achieved_gflops_overall']:.2f} GFLOP/s over the time instructions were in flight"]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([*lines, "", *tail])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" if i in (1, 2, 9) else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(["  " + fmt.format(*head), *("  " + fmt.format(*r) for r in rows), *tail])


def write(report: dict, logdir: str | Path, top: int = 15) -> dict[str, Path]:
    """LOGDIR/roofline.json, .csv, .png and the TensorBoard summary (Text and Scalars)."""
    d = Path(logdir)
    paths = {"json": d / JSON_NAME, "csv": d / CSV_NAME, "png": d / PNG_NAME}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["csv"].write_text(to_csv(report), encoding="utf-8")
    from tfscope.profiling.roofline_plot import plot

    plot(report, paths["png"])
    write_summary(report, d, top)
    return paths


def write_summary(report: dict, logdir: Path, top: int = 15) -> None:
    """LOGDIR/roofline: the table as Text, the roofs and each bound class's share as Scalars."""
    import tensorflow as tf

    w = tf.summary.create_file_writer(str(logdir / SUMMARY_RUN))
    with w.as_default():
        tf.summary.text("roofline", format_roofs(report["roofs"]) + "\n\n" + format_table(report, top, True), step=0)
        tf.summary.scalar("roofs/peak_gflops", report["roofs"]["peak_gflops"], step=0)
        tf.summary.scalar("roofs/bandwidth_gbs", report["roofs"]["bandwidth_gbs"], step=0)
        tf.summary.scalar("achieved/gflops_overall", report["achieved_gflops_overall"], step=0)
        for b, t in report["totals"].items():
            tf.summary.scalar(f"share_of_step/{b}", t["share_of_step"], step=0)
    w.flush()
    w.close()

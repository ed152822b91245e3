"""roofline.png: log-log arithmetic intensity against achieved GFLOP/s, the two measured roofs,
one point per instruction sized by its share of the step time, the top ones labelled.

Instructions that do no arithmetic (copies, transposes: 0 FLOPs) have no place on a log scale;
the legend says how many there are and what share of the time they hold.
"""

from __future__ import annotations

from pathlib import Path

COLORS = {"compute": "#c0392b", "memory": "#2471a3", "overhead": "#7f8c8d"}
LABELLED = 6
# Label offsets (points) tried in turn, nearest first, so labels of neighbouring instructions fan out
# instead of overlapping: right, left (the label's width further), above and below, at growing distances.
OFFSETS = tuple((dx, dy) for r in (1, 2, 3, 4) for dx, dy in ((14, 18 * r), (14, -26 * r), (-150, 22 * r),
                                                                (-150, -30 * r), (40 * r, 0), (-150 - 40 * r, 0)))


def _size(p: dict) -> float:
    """A point's marker area (points^2): grows with its share of the step time."""
    return 20 + 2500 * p["share"]


def _label(fig, ax, points: list[dict], fixed: list) -> None:
    """Annotate `points`, each at the first of OFFSETS whose label overlaps no label already placed
    (the roofs' and the legend included) nor a labelled point's marker and stays inside the axes;
    failing that, where it overlaps least."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    placed = [t.get_window_extent(renderer) for t in fixed]
    for p in points:  # the labelled points' own markers stay visible
        x, y = ax.transData.transform((p["intensity"], p["gflops"]))
        r = (_size(p) / 3.1416) ** 0.5 * fig.dpi / 72
        placed.append(Bbox.from_extents(x - r, y - r, x + r, y + r))
    inside = ax.get_window_extent(renderer)

    def clash(box) -> float:
        shared = sum(max(0, min(box.x1, b.x1) - max(box.x0, b.x0)) * max(0, min(box.y1, b.y1) - max(box.y0, b.y0))
                     for b in placed)
        out = box.width * box.height - max(0, min(box.x1, inside.x1) - max(box.x0, inside.x0)) * \
            max(0, min(box.y1, inside.y1) - max(box.y0, inside.y0))
        return shared + out

    for p in points:
        ann = ax.annotate(f"{p['name']}: {100 * p['share']:.1f}%\n{p['gflops']:.3g} GFLOP/s, {p['gbs']:.3g} GB/s",
                          (p["intensity"], p["gflops"]), xytext=OFFSETS[0], textcoords="offset points",
                          fontsize=7.5, color="#333", zorder=4,
                          bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#ccc", "lw": 0.5},
                          arrowprops={"arrowstyle": "-", "color": "#888", "lw": 0.6})
        best = None
        for offset in OFFSETS:
            ann.set_position(offset)
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer).expanded(1.08, 1.25)  # the text alone (no arrow), framed
            cost = clash(box)
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        ann.set_position(best[1])
        placed.append(best[2])


def plot(report: dict, path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    roofs = report["roofs"]
    peak, bw, ridge = roofs["peak_gflops"], roofs["bandwidth_gbs"], roofs["ridge_flop_per_byte"]
    drawn = [p for p in report["points"] if p["flops"] > 0 and p["bytes"] > 0 and p["gflops"] > 0]
    hidden = [p for p in report["points"] if p not in drawn]
    xs = [p["intensity"] for p in drawn] or [ridge]
    ys = [p["gflops"] for p in drawn] or [peak]
    lo_x, hi_x = min(min(xs), ridge) / 4, max(max(xs), ridge) * 4
    lo_y, hi_y = min(min(ys), bw * lo_x) / 3, max(max(ys), peak) * 3

    fig, ax = plt.subplots(figsize=(10, 6.4), dpi=110)
    grid = np.geomspace(lo_x, hi_x, 200)
    ax.plot(grid, np.minimum(peak, bw * grid), color="#222", lw=2.2, zorder=2)
    ax.fill_between(grid, np.minimum(peak, bw * grid), lo_y, color="#f4f6f7", zorder=0)
    ax.axvline(ridge, color="#999", lw=0.8, ls=":", zorder=1)
    box = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85}
    fixed = [ax.text(lo_x * 1.15, bw * lo_x * 1.25, f"memory roof {bw:.2f} GB/s", fontsize=9, color="#222",
                     va="bottom", bbox=box, zorder=5),
             ax.text(hi_x / 1.15, peak * 1.12, f"compute roof {peak:.1f} GFLOP/s", fontsize=9, ha="right",
                     color="#222", bbox=box, zorder=5),
             ax.text(ridge * 1.08, lo_y * 1.3, f"ridge {ridge:.1f} FLOP/B", fontsize=8, color="#666")]

    for bound, color in COLORS.items():
        mine = [p for p in drawn if p["bound"] == bound]
        if not mine:
            continue
        share = sum(p["share"] for p in mine)
        ax.scatter([p["intensity"] for p in mine], [p["gflops"] for p in mine],
                   s=[_size(p) for p in mine], color=color, alpha=0.55, edgecolors="white",
                   linewidths=0.8, zorder=3, label=f"{bound}: {len(mine)} instructions, {100 * share:.1f}% of step")
    if hidden:
        share = sum(p["share"] for p in hidden)
        ax.scatter([], [], s=20, color="white", edgecolors="#999",
                   label=f"not drawn (0 FLOP: copy, transpose...): {len(hidden)}, {100 * share:.1f}% of step")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(lo_y, hi_y)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("achieved GFLOP/s (under the profiler)")
    name = report.get("title") or report["hlo_module"].split("__")[0]
    ax.set_title(title or f"{name}: {report['flops_per_call'] / 1e6:.1f} MFLOP per call, "
                 f"{report['achieved_gflops_overall']:.2f} GFLOP/s overall; point area = share of step time",
                 fontsize=10)
    ax.grid(True, which="major", color="#ddd", lw=0.6)
    legend = ax.legend(loc="upper left", fontsize=8, frameon=True, markerscale=0.5)  # above the memory roof: empty
    fig.tight_layout()  # before the labels: it moves the axes, and the labels are placed in pixels
    _label(fig, ax, sorted(drawn, key=lambda p: -p["share"])[:LABELLED], [*fixed, legend])
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out

"""Read a profiler capture (`LOGDIR/plugins/profile/<session>/<host>.xplane.pb`) without the UI.

An XSpace holds planes (`/host:CPU`, `/device:GPU:0`, `/host:metadata`, ...); a plane holds lines
(one per thread or stream); a line holds events whose name and stat names live in the plane's
metadata tables. This module flattens that into `Event` records with absolute times and resolved
stats, which is all the hot-path report needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tfscope.core.errors import RunDirError

PROFILE_DIR = ("plugins", "profile")
STEP_EVENT = "train"  # the name of the tf.profiler.experimental.Trace that marks one captured call


@dataclass
class Event:
    plane: str  # e.g. /host:CPU or /device:GPU:0
    line: str  # thread or stream name
    name: str  # e.g. "add_dot_fusion", "MatMul:MatMul", "train"
    display_name: str  # e.g. the TF op type for TF op events
    start_ps: int  # absolute start, picoseconds
    duration_ps: int
    stats: dict = field(default_factory=dict)  # stat name -> int, float or str (references resolved)

    @property
    def end_ps(self) -> int:
        return self.start_ps + self.duration_ps


def sessions(logdir: str | Path) -> list[Path]:
    """The capture sessions under LOGDIR, oldest first (their names are timestamps)."""
    root = Path(logdir).joinpath(*PROFILE_DIR)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.xplane.pb")))


def find_xplane(logdir: str | Path) -> Path:
    """The newest session's xplane.pb; RunDirError when LOGDIR holds no capture."""
    found = sessions(logdir)
    if not found:
        raise RunDirError(f"{logdir}: no profiler capture (no {'/'.join(PROFILE_DIR)}/<session>/*.xplane.pb)")
    files = sorted(found[-1].glob("*.xplane.pb"))
    if len(files) != 1:
        raise RunDirError(f"{found[-1]}: expected one *.xplane.pb, found {len(files)}")
    return files[0]


def load(path: str | Path):
    """Parse one xplane.pb into an XSpace protobuf."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    try:
        space.ParseFromString(Path(path).read_bytes())
    except OSError as e:
        raise RunDirError(f"{path}: cannot read ({e.strerror})") from None
    except Exception as e:  # protobuf's DecodeError
        raise RunDirError(f"{path}: not an XSpace protobuf ({type(e).__name__})") from None
    return space


def _stat_value(plane, stat):
    kind = stat.WhichOneof("value")
    if kind == "ref_value":  # a string interned in the plane's stat metadata
        return plane.stat_metadata[stat.ref_value].name
    if kind == "bytes_value":
        return bytes(stat.bytes_value)
    return getattr(stat, kind) if kind else None


def events(space, planes: tuple[str, ...] | None = None, stats: frozenset[str] | None = None) -> Iterator[Event]:
    """Every event of the chosen planes (default: all), with absolute times and named stats
    (only those named in `stats` when given: resolving every stat of 100,000 events is slow)."""
    for plane in space.planes:
        if planes is not None and plane.name not in planes:
            continue
        names = {k: m.name for k, m in plane.stat_metadata.items() if stats is None or m.name in stats}
        for line in plane.lines:
            base = line.timestamp_ns * 1000
            line_name = line.display_name or line.name
            for e in line.events:
                md = plane.event_metadata[e.metadata_id]
                st = {names[s.metadata_id]: _stat_value(plane, s) for s in e.stats if s.metadata_id in names}
                yield Event(plane.name, line_name, md.name, md.display_name, base + e.offset_ps, e.duration_ps, st)


def plane_names(space) -> list[str]:
    return [p.name for p in space.planes]


def device_planes(space) -> list[str]:
    """Accelerator planes (`/device:GPU:0`, ...) present in the capture; empty on a CPU-only host."""
    return [p.name for p in space.planes if p.name.startswith("/device:")]


def step_events(space_or_events) -> list[Event]:
    """The step markers (`Trace("train", step_num=i, _r=1)`), sorted by step number; pass an XSpace
    or events already read (one pass over a large capture costs seconds)."""
    evs = events(space_or_events, stats=frozenset({"step_num"})) if hasattr(space_or_events, "planes") \
        else space_or_events
    found = [e for e in evs if e.name == STEP_EVENT and "step_num" in e.stats]
    return sorted(found, key=lambda e: (int(e.stats["step_num"]), e.start_ps))


def self_times(evs: list[Event]) -> dict[int, int]:
    """Exclusive time of each event (index -> ps): its duration minus that of its direct children.

    Events on one line nest properly (a while instruction encloses its body's instructions), so a
    stack over start-sorted events finds each event's parent."""
    own = {i: e.duration_ps for i, e in enumerate(evs)}
    by_line: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(evs):
        by_line.setdefault((e.plane, e.line), []).append(i)
    for idx in by_line.values():
        idx.sort(key=lambda i: (evs[i].start_ps, -evs[i].duration_ps))
        stack: list[int] = []
        for i in idx:
            while stack and evs[stack[-1]].end_ps <= evs[i].start_ps:
                stack.pop()
            if stack:
                own[stack[-1]] -= evs[i].duration_ps
            stack.append(i)
    return own

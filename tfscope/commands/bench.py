"""`tfscope bench [--quick] [--out DIR] [--force]`: benchmarks against what users would otherwise run."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tfscope.cli import fail


def check_out(out: Path, force: bool) -> None:
    """Refuse before any work: OUT must be a writable directory (or creatable) without a bench.json,
    unless --force."""
    from tfscope.profiling.bench import JSON_FILE

    if out.exists() and not out.is_dir():
        fail(f"bench: --out {out}: exists and is not a directory")
    if (out / JSON_FILE).exists() and not force:
        fail(f"bench: --out {out}: {JSON_FILE} already exists; use --force to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        fail(f"bench: --out {out}: cannot write there ({e.strerror})")


def cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_out(out, args.force)
    from tfscope.profiling import bench_suite

    plan = bench_suite.QUICK if args.quick else bench_suite.FULL
    result = bench_suite.run(plan, quick=args.quick)
    jpath, ppath = bench_suite.write(result, out)
    print(bench_suite.table(result))
    print(f"\nwrote {jpath} and {ppath} ({result['seconds']:.0f} s)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="time the lecture loop, Keras fit and this project's modes; "
                                     "a compute-bound network; SavedModel vs onnxruntime inference")
    p.add_argument("--quick", action="store_true", help="a reduced run (well under a minute) for smoke tests")
    p.add_argument("--out", default="runs/bench", metavar="DIR",
                   help="where bench.json and bench.png go (default: runs/bench)")
    p.add_argument("--force", action="store_true", help="replace an existing bench.json in DIR")
    p.set_defaults(func=cmd_bench)

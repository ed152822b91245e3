"""`tfscope verify EXPORT_DIR [--atol A] [--rtol R] [--detail] [--bench]`: the equivalence report
(exit 0 when every runtime matches the live network, 1 when any does not)."""

from __future__ import annotations

import argparse

from tfscope.commands.export import add_depth_flags, add_tolerance_flags, print_report


def cmd_verify(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from tfscope import junit
    from tfscope.export.preflight import check_export_dir

    if args.junit:  # the flags, then EXPORT_DIR, before TensorFlow loads
        junit.check_target(args.junit)
    check_export_dir(Path(args.export_dir))
    from tfscope.export.parity import verify

    start = time.perf_counter()
    report = verify(args.export_dir, atol=args.atol, rtol=args.rtol, deep=not args.outputs_only,
                    reference=not args.no_reference)
    print_report(report, args.detail)
    if args.junit:
        junit.write(args.junit, report, time.perf_counter() - start)
    if args.bench:
        from tfscope.export.latency import export_latency, latency_table, model_latency
        from tfscope.export.model_parity import read_meta

        print()
        model = read_meta(Path(args.export_dir)) is not None
        print(latency_table(model_latency(args.export_dir) if model else export_latency(args.export_dir)))
    return 0 if report.passed else 1


def register(sub) -> None:
    p = sub.add_parser("verify", help="prove an export equals the trained network, runtime by runtime")
    p.add_argument("export_dir", metavar="EXPORT_DIR")
    add_tolerance_flags(p)
    add_depth_flags(p)
    p.add_argument("--bench", action="store_true",
                   help="also time SavedModel vs onnxruntime per call at batch 1 and 1024")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report (one test case per runtime and "
                   "input set) for CI")
    p.set_defaults(func=cmd_verify)

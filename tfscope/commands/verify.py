"""`tfscope verify EXPORT_DIR [--atol A] [--rtol R] [--detail] [--bench]`: the equivalence report
(exit 0 when every runtime matches the live network, 1 when any does not)."""

from __future__ import annotations

import argparse

from tfscope.commands.export import add_tolerance_flags


def cmd_verify(args: argparse.Namespace) -> int:
    from tfscope.export.parity import verify

    report = verify(args.export_dir, atol=args.atol, rtol=args.rtol)
    print(report.table(detail=args.detail))
    if args.bench:
        from tfscope.export.latency import export_latency, latency_table

        print()
        print(latency_table(export_latency(args.export_dir)))
    return 0 if report.passed else 1


def register(sub) -> None:
    p = sub.add_parser("verify", help="prove an export equals the trained network, runtime by runtime")
    p.add_argument("export_dir", metavar="EXPORT_DIR")
    add_tolerance_flags(p)
    p.add_argument("--bench", action="store_true",
                   help="also time SavedModel vs onnxruntime per call at batch 1 and 1024")
    p.set_defaults(func=cmd_verify)

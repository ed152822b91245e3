"""`tfscope export RUN_DIR --out EXPORT_DIR [--opset N] [--force]`: SavedModel + ONNX + parity.json."""

from __future__ import annotations

import argparse
import math


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tfscope.export.preflight import check_opset, check_target

    check_opset(args.opset)  # before TensorFlow loads: a refusal costs nothing
    check_target(Path(args.out), args.force)
    from tfscope.export.writer import export_run

    report = export_run(args.run_dir, args.out, opset=args.opset, force=args.force, atol=args.atol, rtol=args.rtol)
    print(f"exported {args.run_dir} to {args.out}: saved_model/, model.onnx (opset {args.opset}), parity.json")
    print(report.table(detail=args.detail))
    return 0 if report.passed else 1


def register(sub) -> None:
    from tfscope.export.preflight import DEFAULT_OPSET, OPSETS

    p = sub.add_parser("export", help="export a trained run to SavedModel and ONNX, and verify both")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="EXPORT_DIR", help="export directory (created atomically)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default: {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true", help="replace an existing export in EXPORT_DIR")
    add_tolerance_flags(p)
    p.set_defaults(func=cmd_export)


def tolerance(text: str) -> float:
    """A finite number >= 0, for --atol and --rtol (refused by the parser, before TensorFlow loads)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def add_tolerance_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atol", type=tolerance, help="absolute tolerance (default: 1e-5 for float32, 1e-12 for float64)")
    p.add_argument("--rtol", type=tolerance, help="relative tolerance (default: 1e-5 for float32, 1e-12 for float64)")
    p.add_argument("--detail", action="store_true", help="one table row per runtime and input set")

"""`tfscope export RUN_DIR --out EXPORT_DIR [--opset N] [--force]`: SavedModel + ONNX + parity.json;
`tfscope export --keras MODEL.keras | --saved-model DIR [--signature NAME] --out EXPORT_DIR` does the
same for any model, its inputs generated from its signature (`--shape`, `--range`, `--inputs`,
`--batch-sizes`)."""

from __future__ import annotations

import argparse
import math


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tfscope.core.errors import ConfigError
    from tfscope.core.sources import feeds
    from tfscope.export.preflight import check_opset, check_target

    check_opset(args.opset)  # before TensorFlow loads: a refusal costs nothing
    given = [x for x in (args.run_dir, args.keras, args.saved_model) if x is not None]
    if len(given) != 1:
        raise ConfigError("export: give exactly one of RUN_DIR, --keras MODEL.keras or --saved-model DIR")
    model_flags = args.shape or args.range or args.inputs or args.batch_sizes or args.signature
    if args.run_dir is not None and model_flags:
        raise ConfigError("export RUN_DIR: --shape, --range, --inputs, --batch-sizes and --signature apply to "
                          "--keras and --saved-model (a run's inputs come from its training data)")
    if args.signature is not None and args.saved_model is None:
        raise ConfigError("--signature: applies to --saved-model only")
    shapes, ranges = feeds.parse_shapes(args.shape), feeds.parse_ranges(args.range)
    sizes = feeds.parse_batch_sizes(args.batch_sizes)
    check_target(Path(args.out), args.force)
    if args.run_dir is not None:
        from tfscope.core.train.run_dir import load_config

        load_config(args.run_dir)
        from tfscope.export.writer import export_run

        report = export_run(args.run_dir, args.out, opset=args.opset, force=args.force, atol=args.atol,
                            rtol=args.rtol)
        what = args.run_dir
    else:
        from tfscope.export.writer import export_model

        report = export_model(args.out, keras=args.keras, saved_model=args.saved_model,
                              signature=args.signature or "serving_default", opset=args.opset, force=args.force,
                              shapes=shapes, ranges=ranges, batch_sizes=sizes, npz=args.inputs, atol=args.atol,
                              rtol=args.rtol, deep=not args.outputs_only, reference=not args.no_reference)
        what = args.keras or args.saved_model
    print(f"exported {what} to {args.out}: saved_model/, model.onnx (opset {args.opset}), parity.json")
    print_report(report, args.detail)
    return 0 if report.passed else 1


def print_report(report, detail: bool) -> None:
    """The table, then (for a model export) the deep check's counts, or every tensor with --detail."""
    print(report.table(detail=detail))
    deep = getattr(report, "deep", None)
    if deep is not None:
        print(deep.detail() if detail else f"deep check ({deep.runtime}, input {deep.input!r}): {deep.describe()}")
        if deep.note:
            print(deep.note)


def register(sub) -> None:
    from tfscope.export.preflight import DEFAULT_OPSET, OPSETS

    p = sub.add_parser("export", help="export a trained run, a Keras file or a SavedModel to SavedModel and ONNX, "
                       "and verify both")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a tfscope run directory")
    p.add_argument("--keras", metavar="MODEL.keras", help="export a Keras model file instead of a run")
    p.add_argument("--saved-model", metavar="DIR", help="export one signature of a SavedModel instead of a run")
    p.add_argument("--signature", metavar="NAME", help="the SavedModel signature (default: serving_default)")
    p.add_argument("--out", required=True, metavar="EXPORT_DIR", help="export directory (created atomically)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1} (default: {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true", help="replace an existing export in EXPORT_DIR")
    add_feed_flags(p)
    p.add_argument("--batch-sizes", metavar="1,7,64", help="batch sizes for a free batch dimension")
    add_tolerance_flags(p)
    add_depth_flags(p)
    p.set_defaults(func=cmd_export)


def add_feed_flags(p: argparse.ArgumentParser) -> None:
    """--shape, --range, --inputs: how a model's inputs are generated from its signature (core/sources/feeds)."""
    p.add_argument("--shape", action="append", metavar="NAME=DxDx..", help="fix a model input's shape (repeatable)")
    p.add_argument("--range", action="append", metavar="NAME=LO:HI",
                   help="draw a model input uniformly in [LO, HI) (integers: [LO, HI]); repeatable")
    p.add_argument("--inputs", metavar="FILE.npz", help="real rows instead of generated ones (keys: input names)")


def add_depth_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outputs-only", action="store_true",
                   help="skip the deep check of every matched intermediate tensor (model exports)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip onnx.reference.ReferenceEvaluator (slow on convolutions; model exports)")


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
    fixed = ("given, switches a float32 verdict from the rounding bound vs float64 to the fixed rule vs eager "
             "(Polygraphy's; the other tolerance defaults to 1e-5; float64 networks: always fixed, 1e-12)")
    p.add_argument("--atol", type=tolerance, help=f"absolute tolerance; {fixed}")
    p.add_argument("--rtol", type=tolerance, help=f"relative tolerance; {fixed}")
    p.add_argument("--detail", action="store_true", help="one table row per runtime and input set")

"""`tfscope run`: the main job. Train (the lecture network unless --data), export to SavedModel and
ONNX with the equivalence table, then profile a small window of the compiled step and print the
top of the hot-path report. Everything lands under --out: run/, export/, profile/."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfscope.commands.train import add_train_flags, print_summary, run_training


def stage(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    stage("train")
    result = run_training(args, out / "run", resume=False, force=args.force)
    print_summary(result)
    if result.metrics["stopped_because"] not in ("target", "steps"):
        return 1

    from tfscope.export.writer import export_run

    stage("export and verify")
    report = export_run(out / "run", out / "export", force=args.force)
    print(f"export:     {out / 'export'} (saved_model/, model.onnx, parity.json)")
    print(report.table())
    if not report.passed:
        print(report.failure_line())

    if args.no_profile:
        return 0 if report.passed else 1
    from tfscope.profiling import capture, hot_path

    stage("profile")
    profile = capture.profile_run(out / "run", out / "profile", force=args.force)
    print(hot_path.format_top(profile, 5))
    print(capture.tensorboard_hint(out / "profile"))
    return 0 if report.passed else 1


def register(sub) -> None:
    p = sub.add_parser("run", help="the main job: train, export + verify, profile (default: the lecture network)")
    p.add_argument("--out", default="tfscope-out", metavar="DIR",
                   help="output directory: DIR/run, DIR/export, DIR/profile (default: tfscope-out)")
    p.add_argument("--force", action="store_true", help="replace an earlier `tfscope run` output in DIR")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler stage")
    add_train_flags(p)
    p.set_defaults(func=cmd_run)

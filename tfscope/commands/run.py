"""`tfscope run`: the main job. Train the lecture network (or any --data) and print the result;
later stages (export, verify, profile) join here as they land."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfscope.commands.train import add_train_flags, print_summary, run_training


def cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    result = run_training(args, out / "run", resume=False, force=args.force)
    print_summary(result)
    return 0 if result.metrics["stopped_because"] in ("target", "steps") else 1


def register(sub) -> None:
    p = sub.add_parser("run", help="the main job: train, then report (default: the lecture network)")
    p.add_argument("--out", default="tfscope-out", metavar="DIR", help="output directory (default: tfscope-out)")
    p.add_argument("--force", action="store_true", help="replace an earlier `tfscope run` output in DIR")
    add_train_flags(p)
    p.set_defaults(func=cmd_run)

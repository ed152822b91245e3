"""`tfscope profile RUN_DIR --logdir LOGDIR`: a TensorBoard profiler session over the compiled
step, its summaries, and the hot-path report (printed, and written as JSON and CSV)."""

from __future__ import annotations

import argparse


def cmd_profile(args: argparse.Namespace) -> int:
    if args.per_instruction:  # before TensorFlow's first XLA compilation, which reads XLA_FLAGS
        from tfscope.core import xla_flags

        xla_flags.set_small_loop_bytes(0)
    from tfscope.profiling import capture, hot_path

    report = capture.profile_run(args.run_dir, args.logdir, mode=args.mode, calls=args.calls,
                                 steps_per_call=args.steps_per_call, force=args.force)
    print(hot_path.format_top(report, args.top))
    print(f"report:   {args.logdir}/{hot_path.JSON_NAME}, {args.logdir}/{hot_path.CSV_NAME}")
    print(capture.tensorboard_hint(args.logdir))
    return 0


def register(sub) -> None:
    from tfscope.commands.train import positive_int
    from tfscope.core.choices import MODES
    from tfscope.profiling.limits import DEFAULT_CALLS, DEFAULT_EVENT_BUDGET

    p = sub.add_parser("profile", help="profile a run's compiled step into a TensorBoard log directory")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--logdir", required=True, metavar="LOGDIR", help="TensorBoard log directory to create")
    p.add_argument("--mode", default="fused", choices=MODES,
                   help="eager, graph, xla, fused (default: fused, the fastest)")
    p.add_argument("--calls", type=positive_int, metavar="N",
                   help=f"calls to capture (default: {DEFAULT_CALLS['fused']} fused, {DEFAULT_CALLS['xla']} xla/graph)")
    p.add_argument("--steps-per-call", type=positive_int, metavar="K",
                   help=f"fused mode: steps per call (default: sized to keep the capture under "
                        f"{DEFAULT_EVENT_BUDGET:,} events)")
    p.add_argument("--per-instruction", action="store_true",
                   help="compile the fused loop with a runtime call per HLO instruction, so the profile times each "
                        "(by default the loop runs as in training: one compiled function, one event per call)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="ops to print (default: 10; the files hold all)")
    p.add_argument("--force", action="store_true", help="replace an earlier profile in LOGDIR")
    p.set_defaults(func=cmd_profile)

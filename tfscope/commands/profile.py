"""`tfscope profile RUN_DIR --logdir LOGDIR`: a TensorBoard profiler session over a run's compiled
step, its summaries, the hot-path report (printed, and written as JSON and CSV) and, in the XLA
modes, the roofline of its instructions against the machine's measured roofs.
`tfscope profile --keras MODEL.keras | --saved-model DIR [--signature NAME] --logdir LOGDIR` does
the same for any model's XLA-compiled call (or, with `--train`, a Keras model's training step), its
inputs from the one input generator (`--shape`, `--range`, `--inputs`, `--batch-size`). Both print
and write through the same report code (profiling/roofline.py)."""

from __future__ import annotations

import argparse

RUN_ONLY = ("mode", "steps_per_call", "per_instruction")
MODEL_ONLY = ("shape", "range", "inputs", "batch_size", "signature", "train", "threads")


def _check_flags(args: argparse.Namespace) -> None:
    """Refuse contradictory flags before TensorFlow loads."""
    from tfscope.core.errors import ConfigError

    given = [x for x in (args.run_dir, args.keras, args.saved_model) if x is not None]
    if len(given) != 1:
        raise ConfigError("profile: give exactly one of RUN_DIR, --keras MODEL.keras or --saved-model DIR")
    if args.run_dir is not None:
        extra = [f"--{f.replace('_', '-')}" for f in MODEL_ONLY if getattr(args, f) not in (None, False)]
        if extra:
            raise ConfigError(f"profile RUN_DIR: {extra[0]} applies to --keras and --saved-model only")
        return
    extra = [f"--{f.replace('_', '-')}" for f in RUN_ONLY if getattr(args, f) not in (None, False)]
    if extra:
        raise ConfigError(f"profile --keras/--saved-model: {extra[0]} applies to a run directory only")
    if args.signature is not None and args.saved_model is None:
        raise ConfigError("--signature: applies to --saved-model only")
    if args.train and args.keras is None:
        raise ConfigError("--train: needs a Keras model (--keras); a SavedModel signature has no training step")


def cmd_profile(args: argparse.Namespace) -> int:
    _check_flags(args)
    if args.run_dir is None:
        return cmd_profile_model(args)
    from pathlib import Path

    from tfscope.core.train.run_dir import load_config
    from tfscope.profiling.logdirs import check_logdir

    load_config(args.run_dir)  # RUN_DIR and LOGDIR refused before TensorFlow loads
    check_logdir(Path(args.logdir), Path(args.run_dir), args.force)
    if args.per_instruction:  # before TensorFlow's first XLA compilation, which reads XLA_FLAGS
        from tfscope.core import xla_flags

        xla_flags.set_small_loop_bytes(0)
    from tfscope.profiling import capture

    report = capture.profile_run(args.run_dir, args.logdir, mode=args.mode or "fused", calls=args.calls,
                                 steps_per_call=args.steps_per_call, force=args.force, top=args.top)
    print_report(report, args)
    return 0


def print_report(report: dict, args: argparse.Namespace) -> None:
    """The hot path, the roofline where there is one, the files and how to open them: runs and
    models alike."""
    from tfscope.profiling import capture, roofline

    print(roofline.format_report(report, args.top))
    print(f"report:   {', '.join(f'{args.logdir}/{f}' for f in roofline.files(report))}")
    hint = capture.tensorboard_hint(args.logdir)
    if args.run_dir is None:
        hint = hint.replace("Histograms, Graphs, Profile", "Text, Profile")
    elif report.get("roofline"):
        hint = hint.replace("Profile)", "Text, Profile)")
    print(hint)


def cmd_profile_model(args: argparse.Namespace) -> int:
    """Any model: every flag and the log directory are checked before the model loads, the feeds
    (which need the model's signature) before anything is written."""
    from pathlib import Path

    from tfscope.core.sources import feeds
    from tfscope.profiling.logdirs import check_logdir

    shapes, ranges = feeds.parse_shapes(args.shape), feeds.parse_ranges(args.range)
    model_path = Path(args.keras or args.saved_model)
    logdir = Path(args.logdir)
    check_logdir(logdir, model_path, args.force)
    from tfscope.core.sources.source import SERVING, load_keras, load_saved_model

    if args.threads:  # before TensorFlow creates its thread pools, which its first op does
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    source = load_keras(model_path) if args.keras else load_saved_model(model_path, args.signature or SERVING)
    sets = feeds.generate(source.inputs, shapes, ranges, (args.batch_size or 8,), npz=args.inputs)
    feed = next(iter(sets.values()))
    from tfscope.profiling import model_profile

    report = model_profile.profile_model(source, feed, logdir, train=args.train, calls=args.calls, force=args.force,
                                         model_path=model_path, top=args.top)
    what = "training step" if args.train else "inference"
    inputs = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in report["feeds"].items())
    print(f"model:    {source.description}, {what}, inputs {inputs}")
    print_report(report, args)
    return 0


def register(sub) -> None:
    from tfscope.commands.export import add_feed_flags
    from tfscope.commands.train import positive_int
    from tfscope.core.choices import MODES
    from tfscope.profiling.limits import DEFAULT_CALLS, DEFAULT_EVENT_BUDGET

    p = sub.add_parser("profile", help="profile a run's compiled step, or any model's XLA-compiled call, into a "
                       "TensorBoard log directory")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a tfscope run directory")
    p.add_argument("--keras", metavar="MODEL.keras", help="profile a Keras model file instead of a run")
    p.add_argument("--saved-model", metavar="DIR", help="profile one signature of a SavedModel instead of a run")
    p.add_argument("--signature", metavar="NAME", help="the SavedModel signature (default: serving_default)")
    p.add_argument("--logdir", required=True, metavar="LOGDIR", help="TensorBoard log directory to create")
    p.add_argument("--mode", choices=MODES, help="a run: eager, graph, xla, fused (default: fused, the fastest)")
    p.add_argument("--calls", type=positive_int, metavar="N",
                   help=f"calls to capture (default: {DEFAULT_CALLS['fused']} fused, {DEFAULT_CALLS['xla']} xla/graph; "
                        "a model: 10, fewer if its instructions would exceed the event cap)")
    p.add_argument("--steps-per-call", type=positive_int, metavar="K",
                   help=f"a run's fused mode: steps per call (default: sized to keep the capture under "
                        f"{DEFAULT_EVENT_BUDGET:,} events)")
    p.add_argument("--per-instruction", action="store_true",
                   help="compile the fused loop with a runtime call per HLO instruction, so the profile times each "
                        "(by default the loop runs as in training: one compiled function, one event per call)")
    add_feed_flags(p)
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="a free batch dimension's size (default: 8)")
    p.add_argument("--train", action="store_true",
                   help="a Keras model: profile one training step (forward, compiled loss or mean squared output, "
                        "gradient, SGD update) instead of inference")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="a model: XLA:CPU's intra-op threads, for the roofs and the capture alike (default: one per "
                        "core); 1 runs the instructions one after another, so none waits for a hand-off")
    p.add_argument("--top", type=int, default=10, metavar="N", help="ops to print (default: 10; the files hold all)")
    p.add_argument("--force", action="store_true", help="replace an earlier profile in LOGDIR")
    p.set_defaults(func=cmd_profile)

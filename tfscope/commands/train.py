"""`tfscope train` and the training flags shared with `tfscope run`."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from tfscope.cli import fail


def widths(text: str) -> list[int]:
    """'2' -> [2], '64,32' -> [64, 32], '' or 'none' -> [] (a single Dense layer)."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be comma-separated whole numbers, got {text!r}") from None


def numbers(kind: type):
    """'100,200' -> [100, 200] (kind int) or [0.1, 0.01] (kind float), for --boundaries and --values."""
    def parse(text: str) -> list:
        try:
            return [kind(t) for t in text.split(",")] if text.strip() else []
        except ValueError:
            what = "whole numbers" if kind is int else "numbers"
            raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r}") from None
    return parse


def add_optimizer_flags(p: argparse.ArgumentParser) -> None:
    """Keras' optimiser features and the learning-rate schedule (core/optim/optimizers.py, schedules.py)."""
    from tfscope.core.config import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("optimiser features and learning-rate schedule (Keras' names and formulas)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="decoupled weight decay: var -= var * wd * lr before each update (default: 0 = off)")
    g.add_argument("--clipnorm", type=float, default=None, help="clip each Variable's gradient to this L2 norm")
    g.add_argument("--clipvalue", type=float, default=None, help="clip every gradient element to [-v, v]")
    g.add_argument("--global-clipnorm", type=float, default=None,
                   help="scale all gradients so their joint L2 norm is at most this (one clip flag at most)")
    g.add_argument("--amsgrad", action="store_true", help="Adam: divide by the running maximum of v (AMSGrad)")
    g.add_argument("--schedule", default=d.schedule,
                   help="learning rate by step: constant (default), exponential, cosine, piecewise")
    g.add_argument("--decay-steps", type=int, default=d.decay_steps,
                   help="exponential: steps per factor --decay-rate; cosine: steps of the cosine phase")
    g.add_argument("--decay-rate", type=float, default=d.decay_rate,
                   help="exponential: lr * rate ** (step / decay_steps), rate in (0, 1]")
    g.add_argument("--staircase", action="store_true", help="exponential: decay in whole --decay-steps only")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="cosine: linear warmup from 0 to --lr over this many steps first (default: 0)")
    g.add_argument("--alpha", type=float, default=d.alpha,
                   help="cosine: the final rate as a fraction of --lr, in [0, 1] (default: 0)")
    g.add_argument("--boundaries", type=numbers(int), default=d.boundaries,
                   help="piecewise: steps after which the rate changes, e.g. 500,1500")
    g.add_argument("--values", type=numbers(float), default=d.values,
                   help="piecewise: the rates, one more than the boundaries, e.g. 0.1,0.01,0.001 (--lr unused)")


def add_train_flags(p: argparse.ArgumentParser) -> None:
    from tfscope.core.config import CHECKPOINT_SECONDS, TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="CSV|NPZ|digits",
                   help="CSV file with a header row, an npz of images (x: N,H,W,C; y: N), or 'digits' "
                        "(the built-in 8x8 handwritten digits); default: the lecture's 19 rows")
    g.add_argument("--task", default=d.task, help="regress (default) or classify (the target holds class labels)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="hold out this share of the rows (seeded; stratified when classifying) and report on it")
    g.add_argument("--target", help="target column name or index (default: the last column)")
    g.add_argument("--features", help="comma-separated feature columns (default: all but the target)")
    g = p.add_argument_group("network and training")
    g.add_argument("--hidden", type=widths, default=d.hidden, help="hidden widths, e.g. 2 or 64,64 (default: 2)")
    g.add_argument("--activation", default=d.activation, help="linear, relu, tanh, sigmoid (default: linear)")
    g.add_argument("--net", default=None, metavar="SPEC",
                   help="layers instead of --hidden, e.g. conv:8x3,pool:2,flatten,dense:32,dense "
                        "(README 'Classification and convolution')")
    g.add_argument("--loss", default=None,
                   help="mse, half_mse, mae, huber (default: mse); classify: cross_entropy (default), softmax_ce, "
                        "binary_ce")
    g.add_argument("--optimizer", default=d.optimizer, help="sgd, momentum, nesterov, adam (default: adam)")
    g.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=d.learning_rate,
                   help=f"learning rate > 0 (default: {d.learning_rate})")
    g.add_argument("--momentum", type=float, default=d.momentum, help=f"momentum in [0, 1) (default: {d.momentum})")
    g.add_argument("--steps", type=int, default=d.steps, help=f"total step budget of the run (default: {d.steps})")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="rows per step; 0 = full batch (default); the last short batch of an epoch is dropped")
    g.add_argument("--mode", default=d.mode, help="eager, graph, xla, fused (default: fused)")
    g.add_argument("--steps-per-call", type=int, default=d.steps_per_call,
                   help=f"fused mode: most steps per compiled call (default: {d.steps_per_call:,})")
    g.add_argument("--target-loss", type=float, default=d.target_loss,
                   help=f"stop when the training loss is <= this; 0 = never (default: {d.target_loss:g})")
    g.add_argument("--grad", default=d.grad, help="gradient route: tape or chain (default: tape)")
    g.add_argument("--rule", default=d.rule,
                   help="learning rule: backprop (default), or with --hidden none: delta (batch), lms (per-sample "
                        "delta), perceptron, hebbian, oja")
    g.add_argument("--dtype", default=d.dtype, help="float32 or float64 (default: float32)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed for weights and batch order (default: 0)")
    g.add_argument("--no-standardize", dest="standardize", action="store_false",
                   help="train on raw x and z (the lecture's way; needs a much smaller learning rate)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"steps between checkpoints; 0 = every {CHECKPOINT_SECONDS:g} s of training (default: 0); "
                        "the end of a run is always saved")
    add_optimizer_flags(p)
    g.add_argument("--no-compile-cache", action="store_true",
                   help="compile every XLA program afresh instead of loading it from the persistent cache "
                        "($TFSCOPE_COMPILE_CACHE, else $XDG_CACHE_HOME/tfscope or ~/.cache/tfscope; "
                        "TFSCOPE_COMPILE_CACHE=off turns it off too)")
    g = p.add_argument_group("distribution (tf.distribute)")
    g.add_argument("--strategy", default=d.strategy, choices=("none", "mirrored", "multiworker"),
                   help="none (default), mirrored (this machine's GPUs, else logical CPUs), "
                        "multiworker (the cluster in TF_CONFIG; only the chief writes RUN_DIR)")
    g.add_argument("--devices", type=positive_int, default=d.devices,
                   help="replicas on this machine: GPUs, or logical CPU devices without GPUs (default: 1)")


def positive_int(text: str) -> int:
    """A whole number >= 1, for --devices."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def config_from_args(args: argparse.Namespace):
    from tfscope.core.config import TrainConfig

    features = None
    if args.features is not None:
        features = [c.strip() for c in args.features.split(",") if c.strip()]
    target = args.target
    loss = args.loss or ("cross_entropy" if args.task == "classify" else "mse")
    return TrainConfig(data=args.data, target=target, features=features, hidden=args.hidden,
                       activation=args.activation, loss=loss, task=args.task, net=args.net,
                       val_fraction=args.val_fraction, optimizer=args.optimizer,
                       learning_rate=args.learning_rate, momentum=args.momentum, steps=args.steps,
                       batch_size=args.batch_size, mode=args.mode, steps_per_call=args.steps_per_call,
                       target_loss=args.target_loss, grad=args.grad, rule=args.rule,
                       dtype=args.dtype, seed=args.seed,
                       standardize=args.standardize, checkpoint_every=args.checkpoint_every,
                       strategy=args.strategy, devices=args.devices,
                       weight_decay=args.weight_decay, clipnorm=args.clipnorm, clipvalue=args.clipvalue,
                       global_clipnorm=args.global_clipnorm, amsgrad=args.amsgrad, schedule=args.schedule,
                       decay_steps=args.decay_steps, decay_rate=args.decay_rate, staircase=args.staircase,
                       warmup_steps=args.warmup_steps, alpha=args.alpha, boundaries=args.boundaries,
                       values=args.values).validate()


def run_training(args: argparse.Namespace, out: Path, resume: bool, force: bool):
    """Train with a progress bar; Ctrl-C stops at the next call boundary and saves a checkpoint."""
    config = config_from_args(args)  # refuses a bad flag before TensorFlow loads
    from tfscope.core import compile_cache

    compile_cache.configure(enabled=not args.no_compile_cache)  # before the first XLA compilation
    from tfscope.core.data import tables as data_mod
    from tfscope.core.train.run_dir import check_dir, check_resume

    check_dir(out, resume, force)  # and a directory it must not touch
    if resume:
        check_resume(out, config)

    dataset = data_mod.load(config.data, config.target, config.features, config.dtype, config.task)  # a bad file
    from tfscope.core.nn import netspec

    netspec.check(config.net, dataset.x.shape[1:])  # and a network that cannot take its images
    from tfscope.core import tf_import

    tf_import.tensorflow()  # without the Keras it would load for nothing; after every check above
    if args.strategy != "none":  # devices and threads are set before TensorFlow starts: ahead of any op
        from tfscope.core.train.distributed import make_strategy

        make_strategy(args.strategy, args.devices)
    from tfscope.core.train import run as run_mod
    from tfscope.progress import ProgressBar

    stop = {"asked": False}

    def on_sigint(signum, frame):
        stop["asked"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    bar = ProgressBar()
    try:
        result = run_mod.train(config, out, resume=resume, force=force, progress=bar,
                               should_stop=lambda: stop["asked"], dataset=dataset)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    return result


def print_summary(result) -> None:
    m = result.metrics
    print(f"run:        {result.run_dir}")
    print(f"stopped:    {m['stopped_because']} after {m['steps']:,} steps"
          f" ({m['steps_this_invocation']:,} in this invocation)")
    print(f"final loss: {m['final_loss']:.6g} ({m['loss_units']} units)" if isinstance(m["final_loss"], float)
          else f"final loss: {m['final_loss']}")
    us = m["us_per_step"]
    print(f"wall time:  {m['seconds']:.3f} s (compile {m['compile_seconds']:.3f} s),"
          f" {us:.3f} us/step in {m['mode']} mode" if us is not None else f"wall time:  {m['seconds']:.3f} s")
    if "affine_map" in m:
        w, b = m["affine_map"]["W"], m["affine_map"]["b"]
        if isinstance(b, float):
            names = result.trainer.data.features
            terms = " + ".join(f"{wi:.6g}*{n}" for wi, n in zip(w, names))
            print(f"affine map: {result.trainer.data.targets[0]} = {terms} + {b:.6g}")
    if "prediction_at_3_2" in m:
        print(f"predict(3, 2) = {m['prediction_at_3_2'][0]:.6f}")
    if "train_accuracy" in m:
        held = (f", held-out {m['val_accuracy']:.2%} of {m['val_rows']:,} rows" if "val_accuracy" in m else "")
        print(f"accuracy:   training {m['train_accuracy']:.2%} of {m['train_rows']:,} rows{held}"
              f" (confusion matrix: {result.run_dir}/confusion.png)")
    if "val_rmse" in m:
        print(f"held out:   RMSE {m['val_rmse']:.3g}, MAE {m['val_mae']:.3g}, R^2 {m['val_r2']:.6f}")
    if "train_rmse" in m:
        print(f"train fit:  RMSE {m['train_rmse']:.3g}, MAE {m['train_mae']:.3g}, R^2 {m['train_r2']:.9f}")
    if "history_loss_column" in m:
        print(f"rule:       {m['rule']}; history.csv's loss column is {m['history_loss_column']}")
    if "train_mistakes" in m:
        print("perceptron: converged (a pass without mistakes)" if m["stopped_because"] == "target" else
              f"perceptron: not converged: {m['train_mistakes']} training rows misclassified after "
              f"{m['steps']:,} steps (not linearly separable, or too few steps)")
    if "first_component" in m:
        print(f"oja:        first principal component (training units) {m['first_component']}")
    if m["stopped_because"] == "diverged":
        last = m["last_checkpoint_step"]
        kept = (f"the last finite checkpoint is step {last:,}" if last is not None
                else "no checkpoint was saved (the training state was already non-finite)")
        print(f"diverged:   the loss became non-finite at step {m['diverged_at_step']:,}; {kept}. "
              "Try a smaller --lr (a new run: --force)"
              + (" or drop --no-standardize" if not result.trainer.config.standardize else "") + ".")
    if m["stopped_because"] == "interrupted":
        print(f"interrupted: checkpoint saved at step {m['steps']:,}; continue with "
              f"`tfscope train --out {result.run_dir} --resume` and the same flags.")


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume and args.force:
        fail("train: --resume and --force exclude each other")
    result = run_training(args, Path(args.out), args.resume, args.force)
    print_summary(result)
    if result.metrics["stopped_because"] == "interrupted":
        return 130
    return 1 if result.metrics["stopped_because"] == "diverged" else 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network with the compiled custom loop")
    p.add_argument("--out", default="runs/lecture", metavar="RUN_DIR", help="run directory (default: runs/lecture)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing run in RUN_DIR")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

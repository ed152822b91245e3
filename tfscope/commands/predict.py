"""`tfscope predict RUN_DIR 3,2 [ROW ...] [--csv FILE]`: predictions of a trained network."""

from __future__ import annotations

import argparse

import numpy as np

from tfscope.cli import fail


def _cells(row: str) -> list[str]:
    return [c for c in row.replace(" ", ",").split(",") if c]


def _values(i: int, row: str, dtype: str) -> list[float]:
    """Row i's cells as numbers by the CSV rules (plain decimal, finite, within `dtype`), else one
    line naming the row."""
    from tfscope.core.data.tables import NUMBER

    cells = _cells(row)
    try:
        values = [float(c) for c in cells]
    except ValueError:
        fail(f"predict: row {i} {row!r} is not numeric")
    if not np.all(np.isfinite(values)):
        fail(f"predict: row {i} {row!r} is not finite")
    if not all(NUMBER.fullmatch(c) for c in cells):
        fail(f"predict: row {i} {row!r} is not plain decimal numbers")
    if np.any(np.abs(values) > np.finfo(dtype).max):
        fail(f"predict: row {i} {row!r} overflows {dtype}")
    return values


def check_rows(rows: list[str], dtype: str = "float64") -> None:
    """Every row's cells, before the network (and TensorFlow) loads; their count needs the network."""
    for i, row in enumerate(rows, 1):
        _values(i, row, dtype)


def parse_rows(rows: list[str], n_in: int, dtype: str = "float64") -> np.ndarray:
    """Rows typed on the command line as an (n, n_in) array, each of `n_in` cells that follow the
    CSV rules, else one line naming the row."""
    out = []
    for i, row in enumerate(rows, 1):
        count = len(_cells(row))
        if count != n_in:
            fail(f"predict: row {i} {row!r} has {count} values; the network takes {n_in}")
        out.append(_values(i, row, dtype))
    return np.asarray(out)


def cmd_predict(args: argparse.Namespace) -> int:
    from tfscope.core.train.run_dir import load_config

    config = load_config(args.run_dir)  # a RUN_DIR that is no run, and bad rows, before TensorFlow loads
    if not (args.npz or args.csv or args.rows):
        fail("predict: give one or more rows (e.g. 3,2), --csv FILE or --npz FILE")
    if args.rows and not (args.npz or args.csv):
        check_rows(args.rows, config.dtype)
    from tfscope.core.data import tables as data_mod
    from tfscope.core.nn.network import Classifier
    from tfscope.core.train.run import load_run

    trainer = load_run(args.run_dir)
    model = trainer.model
    image = len(model.in_shape) == 3
    if args.npz:
        from tfscope.core.data import images

        x = images.load_inputs(args.npz, model.in_shape, trainer.config.dtype)
    elif image:
        fail(f"predict: this run takes images {'x'.join(map(str, model.in_shape))}; give them with --npz FILE")
    elif args.csv:
        x = data_mod.load_features(args.csv, trainer.data.features, trainer.config.dtype)
    else:
        x = parse_rows(args.rows, model.in_shape[0], trainer.config.dtype)
    shown = [f"image {i}" for i in range(len(x))] if image else [",".join(f"{v:g}" for v in xi) for xi in x]
    if isinstance(model, Classifier):
        k, p = model.predict_classes(x)
        for name, ki, pi in zip(shown, k, p):
            print(f"{name} -> {model.classes[ki]} (p = {pi:.6f})")
        return 0
    z = model.predict(x)
    for name, zi in zip(shown, z):
        print(name, "->", ",".join(f"{v:.6f}" for v in zi))
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict with a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("rows", nargs="*", metavar="ROW", help="comma-separated feature values, e.g. 3,2")
    p.add_argument("--csv", metavar="FILE", help="predict every row of a CSV (header row; all columns are features)")
    p.add_argument("--npz", metavar="FILE", help="predict every image (or row) of an npz's array x")
    p.set_defaults(func=cmd_predict)

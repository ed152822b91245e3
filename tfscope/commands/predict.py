"""`tfscope predict RUN_DIR 3,2 [ROW ...] [--csv FILE]`: predictions of a trained network."""

from __future__ import annotations

import argparse

import numpy as np

from tfscope.cli import fail


def parse_rows(rows: list[str], n_in: int, dtype: str = "float64") -> np.ndarray:
    """Rows typed on the command line as an (n, n_in) array; cells follow the CSV rules (plain
    decimal numbers, finite, within `dtype`'s range), else one line naming the row."""
    from tfscope.core.data.tables import NUMBER

    out = []
    for i, row in enumerate(rows, 1):
        cells = [c for c in row.replace(" ", ",").split(",") if c]
        if len(cells) != n_in:
            fail(f"predict: row {i} {row!r} has {len(cells)} values; the network takes {n_in}")
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
        out.append(values)
    return np.asarray(out)


def cmd_predict(args: argparse.Namespace) -> int:
    from tfscope.core.data import tables as data_mod
    from tfscope.core.train.run import load_run

    trainer = load_run(args.run_dir)
    n_in = trainer.model.mlp.sizes[0]
    if args.csv:
        x = data_mod.load_features(args.csv, trainer.data.features, trainer.config.dtype)
    elif args.rows:
        x = parse_rows(args.rows, n_in, trainer.config.dtype)
    else:
        fail("predict: give one or more rows (e.g. 3,2) or --csv FILE")
    z = trainer.model.predict(x)
    for xi, zi in zip(x, z):
        print(",".join(f"{v:g}" for v in xi), "->", ",".join(f"{v:.6f}" for v in zi))
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict with a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("rows", nargs="*", metavar="ROW", help="comma-separated feature values, e.g. 3,2")
    p.add_argument("--csv", metavar="FILE", help="predict every row of a CSV (header row; all columns are features)")
    p.set_defaults(func=cmd_predict)

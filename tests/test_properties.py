"""Properties of everything a user types or hands over: any argument list either parses into a
valid configuration or is refused in one line with exit status 2; any CSV text with any column
choice either loads a usable data set or raises DataError; any predict row either is numbers of
the right count or is refused in one line. Never anything else (tests/test_data.py holds the
loader's properties for the default columns; these add column choices, predict files and rows).
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfscope.cli import COMMANDS, build_parser
from tfscope.commands.predict import parse_rows
from tfscope.commands.train import config_from_args
from tfscope.core import choices
from tfscope.core.config import TrainConfig
from tfscope.core.data import tables as data
from tfscope.core.errors import ConfigError, DataError

PARSER = build_parser()
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# Every command's own arguments, read from the parser itself, so drawn argument lists reach deep.
COMMAND_PARSERS = PARSER._subparsers._group_actions[0].choices
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "3", "0.5", "-0.1", "1e-3", "1e400", "nan", "inf", "-inf", "", " ",
                     "1_0", "2,2", "0,4", "none", "64,-1", "x", "adam", "sgd", "relu", "swish", "mse", "hinge",
                     "fused", "xla", "turbo", "float64", "mirrored", "tpu", "chain", "delta", "3,2", "19",
                     "9" * 30, "--", "-", "lecture"]),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
PLAUSIBLE = {  # values a user would type for each kind of argument; any of VALUES may replace them
    int: st.integers(0, 5000).map(str),
    float: st.sampled_from(["0.05", "0.001", "1e-4", "0.9", "0", "1e-10"]),
    "widths": st.sampled_from(["2", "8,4", "none", "16"]),
    "names": st.sampled_from(["x", "y", "z", "x,y", "0", "-1"]),
    "path": st.sampled_from(["runs/a", "out", "data.csv", "lecture"]),
}


NAMED = {"activation": choices.ACTIVATIONS, "loss": choices.LOSSES, "optimizer": choices.OPTIMIZERS,
         "rule": choices.RULES, "mode": (*choices.MODES, "both"), "grad": choices.GRADS, "dtype": choices.DTYPES}


def plausible(action):
    if action.choices:
        return st.sampled_from(sorted(map(str, action.choices)))
    if action.dest in NAMED:
        return st.sampled_from(NAMED[action.dest])
    kind = getattr(action.type, "__name__", None)
    if kind in ("int", "positive_int"):
        return PLAUSIBLE[int]
    if kind in ("float", "tolerance"):
        return PLAUSIBLE[float]
    if kind == "widths":
        return PLAUSIBLE["widths"]
    if action.dest in ("target", "features"):
        return PLAUSIBLE["names"]
    return PLAUSIBLE["path"]


@st.composite
def argvs(draw) -> list[str]:
    """A subcommand (or a stray word), its positionals and required flags (usually), then a mix of
    its own flags with plausible or arbitrary values and arbitrary tokens."""
    command = draw(st.sampled_from([*COMMAND_PARSERS, "fly", ""]))
    argv = [command] if command else []
    sub = COMMAND_PARSERS.get(command)
    actions = [a for a in (sub._actions if sub else PARSER._actions) if a.option_strings != ["-h", "--help"]]
    flags = [a for a in actions if a.option_strings]
    for a in actions:
        if a.option_strings:
            if a.required and draw(st.integers(0, 9)):  # a required flag, mostly present
                argv += [a.option_strings[0], draw(plausible(a))]
        elif a.dest != "command" and draw(st.integers(0, 9)):  # a positional, mostly present
            argv += [draw(PLAUSIBLE["path"])] + draw(st.lists(st.sampled_from(["3,2", "1 2", "x"]), max_size=2)
                                                     if a.nargs == "*" else st.just([]))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind <= 7 and flags:
            a = draw(st.sampled_from(flags))
            argv.append(draw(st.sampled_from(a.option_strings)))
            if a.nargs != 0:
                argv.append(draw(plausible(a) if kind <= 5 else VALUES))
        else:
            argv.append(draw(VALUES))
    return [a for a in argv if a not in ("-h", "--help")]


def parse(argv: list[str]):
    """The Namespace, or the (status, stderr) of argparse's refusal."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return PARSER.parse_args(argv), None
        except SystemExit as e:
            return None, (e.code, err.getvalue())


def last(argv: list[str], *flags: str) -> str | None:
    """The value after the last of `flags` (argparse keeps the last), or None."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in flags]
    return values[-1] if values else None


def assert_refusal(refusal) -> None:
    status, stderr = refusal
    assert status == 2
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfscope: error: ") and "Traceback" not in stderr, stderr


@SETTINGS
@given(argvs())
def test_any_argument_list_parses_to_a_valid_config_or_is_refused_in_one_line(argv):
    args, refusal = parse(argv)
    if refusal:
        assert_refusal(refusal)
        return
    assert args.command in (*COMMANDS, None)
    if args.command not in ("train", "run"):
        return
    try:
        config = config_from_args(args)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)
        return
    # A config that passed is valid, round-trips through config.json, and holds what was typed.
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    for flags, field, cast in ((("--steps",), "steps", int), (("--lr", "--learning-rate"), "learning_rate", float),
                               (("--batch-size",), "batch_size", int), (("--seed",), "seed", int),
                               (("--checkpoint-every",), "checkpoint_every", int)):
        typed = last(argv, *flags)
        if typed is not None:
            assert getattr(config, field) == cast(typed)
    assert math.isfinite(config.learning_rate) and config.learning_rate > 0 and config.steps >= 1
    assert all(isinstance(w, int) and w >= 1 for w in config.hidden)


@SETTINGS
@given(st.lists(st.one_of(VALUES, st.lists(VALUES, max_size=3).map(",".join)), min_size=1, max_size=4),
       st.integers(1, 3), st.sampled_from(["float32", "float64"]))
def test_any_predict_row_is_numbers_of_the_right_count_or_refused_in_one_line(rows, n_in, dtype):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            x = parse_rows(rows, n_in, dtype)
        except SystemExit as e:
            assert_refusal((e.code, err.getvalue()))
            return
    assert x.shape == (len(rows), n_in) and np.all(np.isfinite(x.astype(dtype)))
    # accepted cells are what the CSV loader accepts too: plain decimal numbers
    assert all(data.NUMBER.fullmatch(c) for row in rows for c in row.replace(" ", ",").split(",") if c)


CSV_ALPHABET = "0123456789.,-+eE \n\r\"abxyzn_\ufeff;"
COLUMNS = st.one_of(st.none(), st.sampled_from(["a", "b", "x", "y", "z", "0", "1", "-1", "2", "-3", "9", "", " "]))


@SETTINGS
@given(st.text(alphabet=CSV_ALPHABET, max_size=80), COLUMNS,
       st.one_of(st.none(), st.lists(COLUMNS.filter(lambda c: c is not None), max_size=3)),
       st.sampled_from(["float32", "float64"]))
def test_any_column_choice_loads_or_raises_data_error(text, target, features, dtype):
    try:
        ds = data.parse_csv(text, "t.csv", target=target, features=features, dtype=dtype)
    except DataError as e:
        assert "\n" not in str(e) and str(e).startswith("t.csv")
        return
    assert ds.rows >= 2 and ds.x.shape == (ds.rows, len(ds.features)) and ds.z.shape == (ds.rows, 1)
    assert ds.x.dtype == ds.z.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(ds.x)) and np.all(np.isfinite(ds.z))
    assert set(ds.features).isdisjoint(ds.targets) and len(set(ds.features)) == len(ds.features)


@SETTINGS
@given(st.text(alphabet=CSV_ALPHABET, max_size=80), st.sampled_from([("x", "y"), ("a",), ("x", "y", "z")]),
       st.sampled_from(["float32", "float64"]))
def test_any_predict_file_loads_finite_rows_or_raises_data_error(tmp_path_factory, text, names, dtype):
    path = tmp_path_factory.getbasetemp() / "predict.csv"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        x = data.load_features(path, names, dtype)
    except DataError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))
        return
    assert x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] == len(names) and x.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(x))


@SETTINGS
@given(st.lists(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                   st.sampled_from([3.4e38, 3.5e38, -1e39, 1e300])),
                         min_size=2, max_size=2), min_size=1, max_size=5),
       st.sampled_from(["float32", "float64"]))
def test_a_predict_file_of_numbers_loads_them_or_names_the_cell_beyond_the_dtype(tmp_path_factory, rows, dtype):
    """Numbers written exactly (repr) load exactly; one beyond the dtype's range is named, never inf."""
    path = tmp_path_factory.getbasetemp() / "numbers.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in rows), encoding="utf-8")
    values = np.array(rows, np.float64)
    beyond = np.abs(values) > np.finfo(dtype).max
    try:
        x = data.load_features(path, ("x", "y"), dtype)
    except DataError as e:
        r, c = np.argwhere(beyond)[0]
        assert str(e).startswith(f"{path}: row {r + 2}, column {'xy'[c]!r}: ") and str(e).endswith(f"overflows {dtype}")
        return
    assert not beyond.any()
    np.testing.assert_array_equal(x, values.astype(dtype))


def test_the_drawn_argument_lists_reach_every_command_and_both_outcomes():
    """The strategy is not vacuous: it yields parsed train configs, refusals and every command."""
    seen = set()

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(argvs())
    def collect(argv):
        args, refusal = parse(argv)
        if refusal:
            seen.add("refused")
            return
        seen.add(args.command)
        if args.command in ("train", "run"):
            try:
                config_from_args(args)
                seen.add("valid train config")
            except ConfigError:
                seen.add("config error")

    collect()
    assert {"refused", "valid train config", "config error", *COMMANDS} <= seen, seen


if __name__ == "__main__":
    pytest.main([__file__])

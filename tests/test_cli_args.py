"""The command line reads a word beginning with '-' as a value wherever the command takes one (a row
-1,8, a negative number, a path -runs/a), and names the command at fault once in an error line.

Every positional of every command is read from the parser itself, so a command added later is
checked too. The end-to-end cases run the CLI in this process (no extra TensorFlow import).
"""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pytest

from tfscope.cli import build_parser, main

PARSER = build_parser()
COMMAND_PARSERS = PARSER._subparsers._group_actions[0].choices
DASHED = ["-1", "-1,8", "-0.5e3", "-.5,2", "-inf", "-runs/a", "-x"]  # each begins with a single '-'


def positionals(sub) -> list:
    return [a for a in sub._actions if not a.option_strings]


def required_flags(sub) -> list[str]:
    argv = []
    for a in sub._actions:
        if a.option_strings and a.required:
            argv += [a.option_strings[0], "out-dir"]
    return argv


CASES = [(name, a.dest, value) for name, sub in COMMAND_PARSERS.items() for a in positionals(sub)
         for value in DASHED]


def refusal(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        PARSER.parse_args(argv)
    return e.value.code, err.getvalue()


def test_every_command_with_positionals_is_checked():
    # predict (RUN_DIR, ROW...), export, verify, profile, hlo: the commands that take a path or a value
    assert {name for name, _, _ in CASES} >= {"predict", "export", "verify", "profile", "hlo"}


@pytest.mark.parametrize("command,dest,value", CASES)
def test_a_value_beginning_with_a_minus_sign_reaches_its_positional(command, dest, value):
    sub = COMMAND_PARSERS[command]
    argv = [command]
    for a in positionals(sub):
        argv.append(value if a.dest == dest else ("3,2" if a.nargs == "*" else "somewhere"))
    args = PARSER.parse_args(argv + required_flags(sub))
    got = getattr(args, dest)
    assert (got == [value]) if isinstance(got, list) else (got == value)


def test_several_rows_with_minus_signs_and_a_path_with_one():
    args = PARSER.parse_args(["predict", "-lecture", "3,2", "-1,8", "-2.5,-0.5"])
    assert args.run_dir == "-lecture" and args.rows == ["3,2", "-1,8", "-2.5,-0.5"]


def test_a_negative_flag_value_reaches_the_flag():
    # argparse alone reads '-1e-3' as an unknown option; here it is --lr's value, refused later by the config
    assert PARSER.parse_args(["train", "--lr", "-1e-3"]).learning_rate == -1e-3


@pytest.mark.parametrize("argv,line", [
    (["predict", "r", "3,2", "--bogus"], "tfscope: error: predict: unrecognized arguments: --bogus"),
    (["export", "r", "--out", "o", "extra"], "tfscope: error: export: unrecognized arguments: extra"),
    (["verify"], "tfscope: error: verify: the following arguments are required: EXPORT_DIR"),
    (["verify", "e", "--atol", "-1"], "tfscope: error: verify: argument --atol: must be a finite number >= 0, "
                                      "got '-1'"),
    (["fly"], "tfscope: error: argument COMMAND: invalid choice: 'fly' (choose from "),
    (["--nope"], "tfscope: error: unrecognized arguments: --nope"),
])
def test_an_error_names_the_command_once(argv, line):
    status, stderr = refusal(argv)
    assert status == 2 and stderr.startswith(line) and len(stderr.splitlines()) == 1, stderr
    assert "tfscope: error: tfscope:" not in stderr


def test_unknown_double_dash_flags_are_still_refused():
    # only single-dash words become values: a mistyped --flag is still named as unrecognised
    status, stderr = refusal(["predict", "r", "--cvs", "f.csv"])
    assert status == 2 and "predict: unrecognized arguments: --cvs f.csv" in stderr


def test_predict_rows_with_minus_signs_from_a_run_dir_named_with_one(lecture_run, tmp_path, monkeypatch, capsys):
    """End to end: `tfscope predict -lecture 3,2 -1,8` without `--`. The oracle is the restored
    network's own predict on the same two rows: the CLI prints 6 decimals, so agreement is within
    5e-7 plus the float32 rounding of values near 20 (1e-6 in all)."""
    from tfscope.core.train.run import load_run

    shutil.copytree(lecture_run, tmp_path / "-lecture")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "-lecture", "3,2", "-1,8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" -> ")[0] for line in lines] == ["3,2", "-1,8"]
    z = np.array([float(line.split(" -> ")[1]) for line in lines])
    expected = np.ravel(load_run(lecture_run).model.predict(np.array([[3.0, 2.0], [-1.0, 8.0]])))
    np.testing.assert_allclose(z, expected, rtol=0, atol=1e-6)


def test_a_missing_run_dir_beginning_with_a_minus_sign_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["predict", "-nowhere", "-1,8"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("tfscope: error: -nowhere: "), err

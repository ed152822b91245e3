"""`tfscope ...`: one parser, one subcommand module per command, one error path.

Every error a user can cause (core.errors.TfscopeError, a bad flag) prints one line on stderr,
`tfscope: error: ...`, and exits with status 2. TensorFlow's start-up chatter is silenced
unless --tf-logs is given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("run", "train", "predict", "export", "verify", "profile", "hlo", "bench")
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{self.prog.split(' ', 1)[-1] if ' ' in self.prog else 'tfscope'}: {message}")


def fail(message: str, status: int = EXIT_USAGE) -> None:
    print(f"tfscope: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up INFO/WARNING lines; must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def build_parser() -> Parser:
    parser = Parser(prog="tfscope", description="Study TensorFlow 2 training at its lowest level: "
                    "explicit Variables, XLA-compiled loops, profiler sessions, SavedModel/ONNX export.")
    parser.add_argument("--tf-logs", action="store_true", help="keep TensorFlow's own log lines on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tfscope.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tfscope.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--tf-logs" not in argv:
        quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from tfscope.core.errors import TfscopeError

    try:
        return int(args.func(args) or 0)
    except TfscopeError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    return 0

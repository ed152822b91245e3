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
    """argparse that reports a bad flag in one line (no usage block) with exit status 2, names the
    command at fault once (`tfscope: error: predict: ...`), and reads a word that begins with one
    '-' but is no option of the command (`-1,8`, `-0.5`, `-1e3`, a path `-runs/a`) as a value."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        fail(f"{command}: {message}" if command else message)

    def _parse_optional(self, arg_string: str):
        # argparse takes any word starting with '-' for an option unless it is a plain negative
        # number (-1, -.5): a row like -1,8 or a path like -runs was refused as an unknown flag.
        found = super()._parse_optional(arg_string)
        if found is not None and not arg_string.startswith("--"):
            first = found[0] if isinstance(found, list) else found  # a list of candidates in Python 3.12.7+
            if first[0] is None:  # no option of this parser: a value
                return None
        return found

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """Extra words are laid at the subcommand's door: `predict: unrecognized arguments: ...`."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and " " not in self.prog and getattr(parsed, "command", None):
            fail(f"{parsed.command}: unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def fail(message: str, status: int = EXIT_USAGE) -> None:
    print(f"tfscope: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(status)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up INFO/WARNING lines; must run before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        sys.meta_path.insert(0, _QuietImport())


# Lines TensorFlow's C++ side writes while it loads, before absl's logging is initialised, so
# TF_CPP_MIN_LOG_LEVEL cannot hold them back: the banner saying so, and INFO lines (on CPUs where
# oneDNN is on by default, "oneDNN custom operations are on ..." once per library).
_PREINIT = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", "I0000 ")


class _QuietImport:
    """A meta-path finder that runs the first `import tensorflow` with file descriptor 2 captured, then
    passes on every captured line but absl's pre-initialisation banner and INFO lines."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturingLoader(spec.loader)
        return spec


class _CapturingLoader:
    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        import tempfile

        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                text = captured.read().decode("utf-8", "replace")
        kept = [line for line in text.splitlines() if line and not line.startswith(_PREINIT)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


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

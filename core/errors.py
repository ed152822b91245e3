"""Typed errors whose one-line message names the file, row, column, field or flag at fault.

The command line prints `tfscope: error: <message>` for any of these and exits with status 2.
"""


class TfscopeError(ValueError):
    """Base of every error a user can cause; its str() is one line that names the culprit."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DataError(TfscopeError):
    """A data file (or in-memory array) cannot be used: missing, empty, ragged, non-numeric..."""


class ConfigError(TfscopeError):
    """A setting is out of range or unknown (learning rate, width, activation, loss, mode...)."""


class RunDirError(TfscopeError):
    """A run or export directory is missing, not a run, corrupt, or would be overwritten."""

"""Checks an export makes before any heavy import, so a refusal costs nothing and touches nothing:
the ONNX opset is one this project accepts, and the target directory may be written.

tf2onnx 1.17 converts opsets up to 18 and refuses 19 ("Opset 19 is not supported yet"); 13 is
the oldest this project checks. An existing EXPORT_DIR needs `force`, and `force` only replaces
a directory that holds an export (its export.json marker).
"""

from __future__ import annotations

from pathlib import Path

from tfscope.core.errors import ConfigError, RunDirError
from tfscope.core.paths import check_creatable

DEFAULT_OPSET = 17
OPSETS = range(13, 19)  # 13 to 18
MARKER = "export.json"


def check_opset(opset: int) -> int:
    """Return `opset` when accepted, else ConfigError naming the flag and the accepted range."""
    if opset not in OPSETS:
        raise ConfigError(f"--opset: {opset} is not supported; choose {OPSETS.start} to {OPSETS.stop - 1} "
                          f"(tf2onnx 1.17 converts opsets up to 18; default {DEFAULT_OPSET})")
    return opset


def check_target(out: Path, force: bool) -> None:
    """Refuse to clobber: an existing EXPORT_DIR needs --force, and --force only replaces exports; a new
    EXPORT_DIR must be creatable."""
    if out.exists() or out.is_symlink():
        if not force:
            raise RunDirError(f"{out}: already exists; use --force to replace it")
        if not (out.is_dir() and (out / MARKER).is_file()):
            raise RunDirError(f"{out}: exists and is not an export directory; --force only replaces exports")
    check_creatable(out)


def check_export_dir(d: Path) -> None:
    """EXPORT_DIR exists and is an export (its export.json marker): checked before TensorFlow loads;
    verify then checks each part it reads."""
    if not d.is_dir():
        raise RunDirError(f"{d}: no such export directory")
    if not (d / MARKER).is_file():
        raise RunDirError(f"{d}: not a complete export directory (no {MARKER})")

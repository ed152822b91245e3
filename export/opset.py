"""Which ONNX opsets an export may target, kept apart from the heavy modules so the command line
can state them without importing TensorFlow. tf2onnx 1.17 converts opsets up to 18 and refuses 19
("Opset 19 is not supported yet"); 13 is the oldest this project checks."""

from __future__ import annotations

from core.errors import ConfigError

DEFAULT_OPSET = 17
OPSETS = range(13, 19)  # 13 to 18


def check_opset(opset: int) -> int:
    """Return `opset` when accepted, else ConfigError naming the flag and the accepted range."""
    if opset not in OPSETS:
        raise ConfigError(f"--opset: {opset} is not supported; choose {OPSETS.start} to {OPSETS.stop - 1} "
                          f"(tf2onnx 1.17 converts opsets up to 18; default {DEFAULT_OPSET})")
    return opset

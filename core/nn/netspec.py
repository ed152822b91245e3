"""The `--net` grammar: a network as comma-separated layer tokens, parsed and shape-checked without
TensorFlow, so a bad spec is refused in milliseconds, naming the token.

    spec    := layer ("," layer)*            the last layer is a bare `dense` (the output layer)
    layer   := conv | pool | "flatten" | dense
    conv    := "conv:" FILTERS "x" KERNEL (":" option)*     option: sN (stride), same | valid, activation
    pool    := ("pool" | "maxpool" | "avgpool") ":" SIZE (":" option)*   option: sN, same | valid
    dense   := "dense" [":" WIDTH] [":" activation]

`pool` is max pooling. Defaults: conv stride 1, padding same, activation the run's `--activation`;
pool stride = its size, padding valid; a hidden dense layer's activation is `--activation`; the output
`dense` takes its width from the data (classes, or target columns) and is linear. Convolution and
pooling need images (N, H, W, C); dense needs a flat input (put `flatten` first). Example:
`conv:8x3,pool:2,conv:16x3,pool:2,flatten,dense:32,dense`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tfscope.core import choices
from tfscope.core.errors import ConfigError

POOLS = {"pool": "max", "maxpool": "max", "avgpool": "avg"}


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # conv, maxpool, avgpool, flatten, dense
    token: str  # the text it came from, for messages
    index: int  # 1-based position in the spec
    size: int = 0  # conv filters, dense width (0 = the output layer), pool window
    kernel: int = 0  # conv kernel (square)
    stride: int = 1
    padding: str = "valid"
    activation: str | None = None  # None = the run's activation (hidden) / linear (output)


def _bad(spec: LayerSpec | tuple[int, str], why: str) -> ConfigError:
    index, token = (spec.index, spec.token) if isinstance(spec, LayerSpec) else spec
    return ConfigError(f"net: layer {index} {token!r}: {why}")


def _whole(text: str, where: tuple[int, str], what: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise _bad(where, f"{what} {text!r} is not a whole number")
    value = int(text)
    if value < 1:
        raise _bad(where, f"{what} must be >= 1, got {value}")
    return value


def _options(parts: Sequence[str], where: tuple[int, str], allow_activation: bool) -> dict:
    out: dict = {}
    for opt in parts:
        if re.fullmatch(r"s[0-9]+", opt):
            out["stride"] = _whole(opt[1:], where, "stride")
        elif opt in ("same", "valid"):
            out["padding"] = opt
        elif allow_activation and opt in choices.ACTIVATIONS:
            out["activation"] = opt
        else:
            known = "sN, same, valid" + (", " + ", ".join(choices.ACTIVATIONS) if allow_activation else "")
            raise _bad(where, f"unknown option {opt!r} (options: {known})")
    return out


def parse(spec: str) -> list[LayerSpec]:
    """The layers of `spec`, or ConfigError naming the first bad token."""
    tokens = [t.strip() for t in spec.split(",")]
    if not spec.strip():
        raise ConfigError("net: the spec is empty (e.g. conv:8x3,pool:2,flatten,dense)")
    layers = []
    for i, token in enumerate(tokens, 1):
        where = (i, token)
        head, *rest = token.split(":")
        if not token:
            raise _bad(where, "empty layer (two commas in a row?)")
        if head == "conv":
            m = re.fullmatch(r"([0-9]+)x([0-9]+)", rest[0]) if rest else None
            if m is None:
                raise _bad(where, "conv needs FILTERSxKERNEL, e.g. conv:8x3")
            opts = _options(rest[1:], where, True)
            layers.append(LayerSpec("conv", token, i, _whole(m[1], where, "filters"), _whole(m[2], where, "kernel"),
                                    opts.get("stride", 1), opts.get("padding", "same"), opts.get("activation")))
        elif head in POOLS:
            if not rest:
                raise _bad(where, f"{head} needs a window size, e.g. {head}:2")
            size = _whole(rest[0], where, "window")
            opts = _options(rest[1:], where, False)
            layers.append(LayerSpec(POOLS[head] + "pool", token, i, size, size, opts.get("stride", size),
                                    opts.get("padding", "valid")))
        elif head == "flatten":
            if rest:
                raise _bad(where, "flatten takes no options")
            layers.append(LayerSpec("flatten", token, i))
        elif head == "dense":
            width, act = 0, None
            if rest and re.fullmatch(r"[0-9]+", rest[0]):
                width, rest = _whole(rest[0], where, "width"), rest[1:]
            if len(rest) > 1 or (rest and rest[0] not in choices.ACTIVATIONS):
                raise _bad(where, f"dense takes a width and an activation ({', '.join(choices.ACTIVATIONS)}), "
                                  f"e.g. dense:32 or dense:32:relu")
            if rest:
                act = rest[0]
            if width == 0 and i != len(tokens):
                raise _bad(where, "a dense layer without a width is the output layer: it must come last")
            if width == 0 and act not in (None, "linear"):
                raise _bad(where, "the output layer is linear (losses take logits or raw values)")
            layers.append(LayerSpec("dense", token, i, width, activation=act))
        else:
            raise _bad(where, "unknown layer (conv:FxK, pool:K, maxpool:K, avgpool:K, flatten, dense[:N])")
    if layers[-1].kind != "dense" or layers[-1].size != 0:
        raise _bad((layers[-1].index, layers[-1].token), "the last layer must be a bare `dense` (the output layer)")
    return layers


def conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    """One spatial dimension after a convolution or pooling window (TensorFlow's rule)."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1 if size >= kernel else 0


def shapes(layers: Sequence[LayerSpec], in_shape: Sequence[int], n_out: int) -> list[tuple[int, ...]]:
    """Each layer's output shape (without the batch), from the input's; ConfigError naming the first
    layer that cannot take its input or whose output falls below 1."""
    shape = tuple(int(s) for s in in_shape)
    out = []
    for spec in layers:
        if spec.kind in ("conv", "maxpool", "avgpool"):
            if len(shape) != 3:
                raise _bad(spec, f"needs images (N, H, W, C); its input is (N, {', '.join(map(str, shape))})")
            h, w = (conv_out(d, spec.kernel, spec.stride, spec.padding) for d in shape[:2])
            if h < 1 or w < 1:
                raise _bad(spec, f"on a {shape[0]}x{shape[1]} input gives a {h}x{w} output (below 1); "
                                 "use a smaller kernel, padding same, or fewer pools")
            shape = (h, w, spec.size if spec.kind == "conv" else shape[2])
        elif spec.kind == "flatten":
            shape = (math.prod(shape),)
        else:
            if len(shape) != 1:
                raise _bad(spec, f"needs a flat input; its input is (N, {', '.join(map(str, shape))}): "
                                 "put flatten before it")
            shape = (spec.size or n_out,)
        out.append(shape)
    return out


def from_hidden(hidden: Sequence[int], image: bool) -> str:
    """The spec of an MLP with these hidden widths (after a flatten, for images)."""
    return ",".join([*(["flatten"] if image else []), *(f"dense:{w}" for w in hidden), "dense"])


def check(spec: str | None, in_shape: Sequence[int]) -> None:
    """ConfigError naming the first layer of `spec` that cannot take inputs of `in_shape`; without a
    spec, images are flattened into an MLP, which takes any shape."""
    if spec is not None:
        shapes(parse(spec), in_shape, 1)

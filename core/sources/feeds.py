"""The one input generator: a model's input signature plus the user's `--shape`, `--range`,
`--inputs` and `--batch-sizes` -> seeded feeds, for export, verify, profile and the pytest plugin.

A feed set is `{input name: array}`; `generate` returns named sets `{set name: feeds}`:
  batch_B   for each batch size B (default 1, 7, 64) when the first dimension is free (None)
  inputs    the rows of a user's npz file (`--inputs`), instead of generated ones
Floating inputs are N(0, 1) unless a range is given (then uniform in [lo, hi)); integer inputs
(token ids, indices) must be given a range and are drawn uniformly in [lo, hi] inclusive;
boolean inputs hold both values in every set of two or more elements. Free dimensions other than
the batch must be fixed by `--shape`. Importing this module does not import TensorFlow, so a bad
flag is refused before TensorFlow loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfscope.core.errors import ConfigError, DataError

SEED = 20240611
BATCH_SIZES = (1, 7, 64)
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """One input of a model's signature; `shape` uses None for a free dimension."""

    name: str
    dtype: str  # a numpy dtype name: float32, float64, float16, int32, int64, bool, ...
    shape: tuple[int | None, ...]

    @property
    def kind(self) -> str:
        """'float', 'int' or 'bool'; anything else (strings) cannot be generated."""
        dt = np.dtype(self.dtype)
        if dt == np.bool_:
            return "bool"
        if np.issubdtype(dt, np.floating):
            return "float"
        if np.issubdtype(dt, np.integer):
            return "int"
        return dt.name

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({self.dtype}, {dims or 'scalar'})"


def _names(specs: Sequence[InputSpec]) -> str:
    return ", ".join(s.name for s in specs) or "(none)"


def _lookup(specs: Sequence[InputSpec], name: str, flag: str) -> InputSpec:
    for s in specs:
        if s.name == name:
            return s
    raise ConfigError(f"{flag} {name}: no input named {name!r}; the model's inputs are {_names(specs)}")


def _split(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ConfigError(f"{flag} {text!r}: expected NAME=VALUE")
    return name, value


def parse_shapes(items: Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    """`--shape NAME=1x224x224x3` (repeatable) -> {name: dims}; every dim a positive integer."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, value = _split(item, "--shape")
        try:
            dims = tuple(int(d) for d in value.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--shape {item!r}: dimensions must be integers separated by x, e.g. 1x28x28x1") from None
        if any(d < 1 for d in dims):
            raise ConfigError(f"--shape {item!r}: every dimension must be >= 1")
        out[name] = dims
    return out


def parse_ranges(items: Iterable[str] | None) -> dict[str, tuple[float, float]]:
    """`--range NAME=LO:HI` (repeatable) -> {name: (lo, hi)} with finite lo < hi."""
    out: dict[str, tuple[float, float]] = {}
    for item in items or ():
        name, value = _split(item, "--range")
        lo_text, sep, hi_text = value.partition(":")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            lo = hi = float("nan")
        if not sep or not (np.isfinite(lo) and np.isfinite(hi)):
            raise ConfigError(f"--range {item!r}: expected NAME=LO:HI with two finite numbers")
        if not lo < hi:
            raise ConfigError(f"--range {item!r}: LO must be below HI")
        out[name] = (lo, hi)
    return out


def parse_batch_sizes(text: str | Sequence[int] | None) -> tuple[int, ...]:
    """`--batch-sizes 1,7,64` -> (1, 7, 64); each a positive integer."""
    if text is None:
        return BATCH_SIZES
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--batch-sizes {text!r}: expected positive integers separated by commas") from None
    if not sizes or any(b < 1 for b in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: every batch size must be >= 1")
    return sizes


def resolve_shape(spec: InputSpec, given: tuple[int, ...] | None, batch: int) -> tuple[int, ...]:
    """The concrete shape of one input: `given` (checked against the signature) or the signature
    with a free first dimension set to `batch`; any other free dimension needs `given`."""
    if given is not None:
        if len(given) != len(spec.shape):
            raise ConfigError(f"--shape {spec.name}: {len(given)} dimensions given, the signature has "
                              f"{len(spec.shape)} ({spec.describe()})")
        for i, (g, s) in enumerate(zip(given, spec.shape)):
            if s is not None and g != s:
                raise ConfigError(f"--shape {spec.name}: dimension {i} is {s} in the signature, {g} given "
                                  f"({spec.describe()})")
        return given
    dims = list(spec.shape)
    if dims and dims[0] is None:
        dims[0] = batch
    free = [i for i, d in enumerate(dims) if d is None]
    if free:
        raise ConfigError(f"input {spec.name}: dimension {free[0]} is unknown in the signature "
                          f"({spec.describe()}); give it with --shape {spec.name}=" +
                          "x".join(str(d) if d is not None else "N" for d in dims))
    return tuple(int(d) for d in dims)


def check_flags(specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]],
                ranges: Mapping[str, tuple[float, float]]) -> None:
    """Every --shape and --range names an input, agrees with its signature and kind; integer
    inputs have a range; every input is of a kind that can be generated."""
    for name, dims in shapes.items():
        resolve_shape(_lookup(specs, name, "--shape"), dims, 1)
    for name in ranges:
        spec = _lookup(specs, name, "--range")
        if spec.kind == "bool":
            raise ConfigError(f"--range {name}: input {name} is boolean; it takes both values without a range")
    for spec in specs:
        if spec.kind not in ("float", "int", "bool"):
            raise ConfigError(f"input {spec.name}: dtype {spec.dtype} cannot be generated; give rows with --inputs")
        if spec.kind == "int" and spec.name not in ranges:
            raise ConfigError(f"input {spec.name}: integer input ({spec.describe()}) needs --range {spec.name}=LO:HI "
                              "(e.g. token ids 0:VOCAB-1)")
        if spec.kind == "int" and spec.name in ranges:
            lo, hi = ranges[spec.name]
            info = np.iinfo(np.dtype(spec.dtype))
            if lo != int(lo) or hi != int(hi) or lo < info.min or hi > info.max:
                raise ConfigError(f"--range {spec.name}: an integer input takes whole numbers within {spec.dtype}, "
                                  f"got {lo:g}:{hi:g}")


def draw(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator,
         value_range: tuple[float, float] | None) -> np.ndarray:
    """Seeded values of one input (see the module docstring for the rules per kind)."""
    dtype = np.dtype(spec.dtype)
    if spec.kind == "bool":
        n = int(np.prod(shape))
        flat = np.arange(n) % 2 == 0  # both values whenever there are two or more elements
        return rng.permutation(flat).reshape(shape)
    if spec.kind == "int":
        lo, hi = value_range  # type: ignore[misc]  (check_flags made sure there is one)
        return rng.integers(int(lo), int(hi), size=shape, endpoint=True).astype(dtype)
    if value_range is None:
        return rng.standard_normal(shape).astype(dtype)
    return rng.uniform(value_range[0], value_range[1], size=shape).astype(dtype)


def load_npz(path: str | Path, specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]] | None = None
             ) -> Feeds:
    """A user's rows: one array per input name, checked against the signature (kind, rank, fixed
    dimensions) and against each other (one batch size)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable npz file ({str(e).splitlines()[0][:120] if str(e) else e})") from None
    feeds: Feeds = {}
    for spec in specs:
        if spec.name not in arrays:
            raise DataError(f"{path}: no array named {spec.name!r} (the model's inputs: {_names(specs)}; "
                            f"the file holds {', '.join(arrays) or 'nothing'})")
        a = arrays[spec.name]
        want = np.dtype(spec.dtype)
        if a.dtype != want:
            same_kind = (np.issubdtype(a.dtype, np.floating) and spec.kind == "float") or (
                np.issubdtype(a.dtype, np.integer) and spec.kind == "int")
            if not same_kind or (spec.kind == "int" and not np.can_cast(a.dtype, want)):
                raise DataError(f"{path}: array {spec.name!r} is {a.dtype}, input {spec.describe()} needs {want}")
            converted = a.astype(want)
            if spec.kind == "float" and not np.array_equal(converted.astype(a.dtype), a, equal_nan=True):
                raise DataError(f"{path}: array {spec.name!r} is {a.dtype} and not exactly representable in {want}")
            a = converted
        if a.ndim != len(spec.shape) or any(s is not None and s != d for s, d in zip(spec.shape, a.shape)):
            raise DataError(f"{path}: array {spec.name!r} has shape {'x'.join(map(str, a.shape))}, "
                            f"input {spec.describe()} does not accept it")
        given = (shapes or {}).get(spec.name)
        if given is not None and tuple(a.shape) != tuple(given):
            raise DataError(f"{path}: array {spec.name!r} has shape {'x'.join(map(str, a.shape))}, "
                            f"--shape {spec.name} says {'x'.join(map(str, given))}")
        feeds[spec.name] = np.ascontiguousarray(a)
    batches = {a.shape[0] for a in feeds.values() if a.ndim}
    if len(batches) > 1:
        raise DataError(f"{path}: the arrays disagree on the batch size ({sorted(batches)})")
    return feeds


def generate(specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]] | None = None,
             ranges: Mapping[str, tuple[float, float]] | None = None, batch_sizes: Sequence[int] = BATCH_SIZES,
             seed: int = SEED, npz: str | Path | None = None) -> dict[str, Feeds]:
    """The named feed sets for a signature; see the module docstring. Same arguments, same arrays."""
    shapes, ranges = dict(shapes or {}), dict(ranges or {})
    if npz is not None:
        for name in list(shapes) + list(ranges):
            _lookup(specs, name, "--shape" if name in shapes else "--range")
        return {"inputs": load_npz(npz, specs, shapes)}
    check_flags(specs, shapes, ranges)
    batched = any(s.shape and s.shape[0] is None and s.name not in shapes for s in specs)
    rng = np.random.default_rng(seed)
    sets: dict[str, Feeds] = {}
    for b in (batch_sizes if batched else (None,)):
        feeds = {}
        for spec in specs:
            shape = resolve_shape(spec, shapes.get(spec.name), b or 1)
            feeds[spec.name] = draw(spec, shape, rng, ranges.get(spec.name))
        sets[f"batch_{b}" if b else "fixed"] = feeds
    return sets

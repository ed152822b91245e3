"""Inference latency of the exported network: the reloaded SavedModel signature vs onnxruntime.

Each figure is the median over `repeats` timed calls after `warmup` untimed ones, one call at a
time (per-call latency, the serving case). Reused by the benchmark command.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Latency:
    runtime: str
    batch: int
    seconds_per_call: float  # median
    calls: int  # timed calls

    @property
    def rows_per_second(self) -> float:
        return self.batch / self.seconds_per_call


def median_call_seconds(fn: Callable[[], object], warmup: int = 20, repeats: int = 200) -> float:
    """Median wall time of one call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def export_latency(export_dir: str | Path, batches: tuple[int, ...] = (1, 1024), warmup: int = 20,
                   repeats: int = 200, seed: int = 0) -> list[Latency]:
    """SavedModel (`serving_default`, numpy in and out) and onnxruntime (CPU, ORT_ENABLE_ALL) per call."""
    import onnxruntime as ort
    import tensorflow as tf

    from tfscope.export.parity import ONNX_FILE, SAVED_MODEL
    from tfscope.export.serving import INPUT, OUTPUT, SERVING

    d = Path(export_dir)
    serve = tf.saved_model.load(str(d / SAVED_MODEL)).signatures[SERVING]
    spec = serve.structured_input_signature[1][INPUT]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(d / ONNX_FILE), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    out = []
    for batch in batches:
        x = rng.standard_normal((batch, spec.shape[1])).astype(spec.dtype.as_numpy_dtype)
        calls = {"savedmodel": lambda x=x: serve(**{INPUT: tf.constant(x)})[OUTPUT].numpy(),
                 "onnxruntime": lambda x=x: session.run([OUTPUT], {INPUT: x})[0]}
        for name, fn in calls.items():
            out.append(Latency(name, batch, median_call_seconds(fn, warmup, repeats), repeats))
    return out


def latency_table(rows: list[Latency]) -> str:
    """Per-call latency and rows/s, with onnxruntime's speed-up over the SavedModel at each batch."""
    lines = [f"{'runtime':<12} {'batch':>6} {'us/call':>10} {'rows/s':>14} {'speed-up':>9}"]
    by = {(r.runtime, r.batch): r for r in rows}
    for r in rows:
        sm = by.get(("savedmodel", r.batch))
        up = f"{sm.seconds_per_call / r.seconds_per_call:.1f}x" if sm and r.runtime != "savedmodel" else ""
        lines.append(f"{r.runtime:<12} {r.batch:>6} {r.seconds_per_call * 1e6:>10.1f} {r.rows_per_second:>14,.0f}"
                     f" {up:>9}")
    lines.append(f"(median of {rows[0].calls} calls after warm-up; speed-up = SavedModel time / this time)"
                 if rows else "")
    return "\n".join(lines)


def model_latency(export_dir: str | Path, batches: tuple[int, ...] = (1, 32), warmup: int = 20,
                  repeats: int = 200, seed: int = 0) -> list[Latency]:
    """Per-call latency of a model export (any inputs): its SavedModel signature and onnxruntime
    (CPU, ORT_ENABLE_ALL), on seeded feeds from the one input generator at each batch size."""
    import json

    import onnxruntime as ort
    import tensorflow as tf

    from tfscope.core.sources import feeds as feeds_mod
    from tfscope.core.sources.source import load_saved_model
    from tfscope.export.inputs import INPUTS, load_feed_sets
    from tfscope.export.parity import ONNX_FILE, SAVED_MODEL

    d = Path(export_dir)
    meta = json.loads((d / "export.json").read_text(encoding="utf-8"))
    sig = load_saved_model(d / SAVED_MODEL, meta["source"].get("signature", "serving_default"))
    fn = sig._fn  # the signature's concrete function, called as a server would
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(d / ONNX_FILE), so, providers=["CPUExecutionProvider"])
    saved = next(iter(load_feed_sets(d / INPUTS).values()))  # shapes and ranges as exported
    out = []
    for batch in batches:
        shapes = {k: (batch, *v.shape[1:]) for k, v in saved.items()}
        ranges = {s.name: (float(saved[s.name].min()), float(saved[s.name].max()))
                  for s in sig.inputs if s.kind == "int"}
        feeds = feeds_mod.generate(sig.inputs, shapes, ranges, seed=seed)["fixed"]
        tensors = {k: tf.constant(v) for k, v in feeds.items()}
        calls = {"savedmodel": lambda t=tensors: {k: v.numpy() for k, v in fn(**t).items()},
                 "onnxruntime": lambda f=feeds: session.run(None, f)}
        for name, call in calls.items():
            out.append(Latency(name, batch, median_call_seconds(call, warmup, repeats), repeats))
    return out

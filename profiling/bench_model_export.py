"""Bring-your-own-model figures: export + verify wall time of keras.applications.MobileNetV2
(weights=None, 96x96) and the per-call latency of its SavedModel vs onnxruntime at batch 1 and 32.

Each figure is the median of `repeats` (export: one timed export+verify per repeat, in this
process; latency: `export.latency.model_latency`, median per call after warm-up). Run:
`python -m tfscope.profiling.bench_model_export [--repeats N]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

BATCHES = (1, 32)
INPUT = (96, 96, 3)


def time_model_export(repeats: int = 1, calls: int = 100, warmup: int = 10) -> dict:
    """{'export_verify_s': [..], 'latency': {(runtime, batch): [s per call, ..]}}."""
    import keras

    from tfscope.export.latency import model_latency
    from tfscope.export.writer import export_model

    out: dict = {"export_verify_s": [], "latency": {}}
    with tempfile.TemporaryDirectory(prefix="tfscope-bench-model-") as tmp:
        path = Path(tmp) / "mobilenetv2.keras"
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None, input_shape=INPUT).save(path)
        for _ in range(repeats):
            start = time.perf_counter()
            export_model(Path(tmp) / "export", keras=path, force=True)
            out["export_verify_s"].append(time.perf_counter() - start)
        for _ in range(repeats):
            for lat in model_latency(Path(tmp) / "export", BATCHES, warmup=warmup, repeats=calls):
                out["latency"].setdefault((lat.runtime, lat.batch), []).append(lat.seconds_per_call)
    return out


def table(figures: dict) -> str:
    ev = figures["export_verify_s"]
    lines = [f"MobileNetV2 {INPUT[0]}x{INPUT[1]} (weights=None): export + verify {statistics.median(ev):.1f} s "
             f"(median of {len(ev)}, spread {min(ev):.1f}-{max(ev):.1f} s)",
             f"{'runtime':<12} {'batch':>6} {'ms/call':>10} {'spread':>16} {'vs SavedModel':>14}"]
    lat = figures["latency"]
    for (rt, b), s in sorted(lat.items(), key=lambda kv: (kv[0][1], kv[0][0] != "savedmodel")):
        base = statistics.median(lat[("savedmodel", b)])
        m = statistics.median(s)
        lines.append(f"{rt:<12} {b:>6} {m * 1e3:>10.2f} {min(s) * 1e3:>7.2f}-{max(s) * 1e3:<8.2f} "
                     f"{base / m:>13.2f}x")
    return "\n".join(lines)


def part(repeats: int) -> dict:
    """The bench suite's part (bench.json): export + verify seconds and latency rows."""
    figures = time_model_export(repeats)
    ev = figures["export_verify_s"]
    rows = [{"runtime": rt, "batch": b, "median_ms": statistics.median(s) * 1e3, "low_ms": min(s) * 1e3,
             "high_ms": max(s) * 1e3} for (rt, b), s in sorted(figures["latency"].items())]
    return {"model": f"MobileNetV2 {INPUT[0]}x{INPUT[1]}, weights=None", "export_verify_s": ev,
            "export_verify_median_s": statistics.median(ev), "rows": rows, "table": table(figures)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(table(time_model_export(args.repeats)))


if __name__ == "__main__":
    main()

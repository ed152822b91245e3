"""Inference of the trained lecture network: the reloaded TF SavedModel vs onnxruntime, batch 1 and 1024.

The export and the per-call timing are the export package's own (`export.writer.export_run`,
`export.latency.export_latency`: median per call after warm-up, numpy in and out). Here that
measurement is repeated `repeats` times, each a fresh load of both runtimes, so every figure
comes with the spread across repeats as well as its median.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tfscope.core.config import TrainConfig
from tfscope.core.train.run import train
from tfscope.profiling.bench import Timing, summarize

BATCHES = (1, 1024)


def time_inference(batches: tuple[int, ...] = BATCHES, calls: int = 200, warmup: int = 20,
                   repeats: int = 5) -> dict[tuple[str, int], Timing]:
    """Seconds per call for each (runtime, batch): runtime is "savedmodel" or "onnxruntime"."""
    from tfscope.export.latency import export_latency
    from tfscope.export.writer import export_run

    samples: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tfscope-bench-") as tmp:
        run_dir, export_dir = Path(tmp) / "run", Path(tmp) / "export"
        train(TrainConfig(), run_dir)
        export_run(run_dir, export_dir)
        for _ in range(repeats):
            for lat in export_latency(export_dir, batches, warmup=warmup, repeats=calls):
                samples.setdefault((lat.runtime, lat.batch), []).append(lat.seconds_per_call)
    return {key: summarize(s, calls) for key, s in samples.items()}

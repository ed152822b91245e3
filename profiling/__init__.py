"""TensorBoard profiler sessions, summaries, XLA IR inspection, hot-path report and benchmarks."""

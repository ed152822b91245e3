"""Sizes of a profiler capture window, apart from capture.py so the command line can show them
without importing TensorFlow."""

DEFAULT_EVENT_BUDGET = 100_000  # events a default capture records at most
BYTES_PER_EVENT = 60  # measured ~56 on the lecture network (2.2 MB for 39,115 events)
SIZE_LIMIT_BYTES = 10_000_000  # stated cap on a default capture's events (the HLO metadata of compiled modules adds)
EVENTS_PER_INSTRUCTION = 2  # XLA on CPU: the instruction's event and its "end:" marker
EVENTS_PER_CALL = 16  # a call's own events around its instructions (13 measured on the lecture's fused call)
EVENTS_PER_TF_OP = 2  # graph/eager: the op's event and the executor's bookkeeping around it
DEFAULT_CALLS = {"fused": 10, "xla": 50, "graph": 50, "eager": 20}
WARM_UP_CALLS = 2  # the first call compiles; the second runs the compiled code once more

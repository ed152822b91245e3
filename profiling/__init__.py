"""Profiler capture, summaries, HLO inspection, the hot-path and roofline reports, benchmarks.

`profile_function(fn, *args, logdir=...)` profiles any tf.function (profiling/model_profile.py);
it is loaded on first use, so importing a light module of this package never loads TensorFlow.
"""


def __getattr__(name: str):
    if name == "profile_function":
        from tfscope.profiling.model_profile import profile_function

        return profile_function
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

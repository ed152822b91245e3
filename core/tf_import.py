"""Import TensorFlow without the Keras it loads eagerly.

`import tensorflow` ends with `importlib.import_module("keras.src.optimizers")` inside a
try/except ImportError (to register Keras' optimisers for SavedModel loading), which imports all
of Keras 3 and, through keras.src.visualization, matplotlib.pyplot: about a fifth of TensorFlow's
import time (`python -X importtime -m tfscope train`). tfscope's own networks, optimisers,
checkpoints and exports are plain `tf.Module`s and never need that registration, so for the
length of the import that one module is marked absent; afterwards `import keras` works as usual
for the commands that use Keras (bench, Keras sources).

Python's cyclic garbage collector is paused for the length of the import, and the ~250,000 objects
the import leaves are then frozen (`gc.freeze()`: never scanned again). The import makes no cyclic
garbage (a `gc.collect()` right after it frees 0 objects), yet with the collector on it ran ~700
collections, ~0.3 s of the ~2.8 s of CPU time the import takes; and the interpreter's final
collection at exit, which scans every tracked object, took 0.5-1.1 s after a command had printed
its answer (0.07-0.11 s with them frozen).
"""

from __future__ import annotations

import gc
import sys
from types import ModuleType

EAGER_KERAS = "keras.src.optimizers"  # the module TensorFlow's __init__ imports for Keras' sake


def tensorflow() -> ModuleType:
    """`import tensorflow`, with Keras left unloaded if this is the process's first import of it."""
    if "tensorflow" in sys.modules or EAGER_KERAS in sys.modules:
        import tensorflow as tf

        return tf
    sys.modules[EAGER_KERAS] = None  # type: ignore[assignment]  # makes its import raise ImportError
    collecting = gc.isenabled()
    gc.disable()
    try:
        import tensorflow as tf
    finally:
        if sys.modules.get(EAGER_KERAS, ...) is None:
            del sys.modules[EAGER_KERAS]
        gc.freeze()
        if collecting:
            gc.enable()
    return tf

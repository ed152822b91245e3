"""Import TensorFlow without the Keras it loads eagerly.

`import tensorflow` ends with `importlib.import_module("keras.src.optimizers")` inside a
try/except ImportError (to register Keras' optimisers for SavedModel loading), which imports all
of Keras 3 and, through keras.src.visualization, matplotlib.pyplot: about a fifth of TensorFlow's
import time (`python -X importtime -m tfscope train`). tfscope's own networks, optimisers,
checkpoints and exports are plain `tf.Module`s and never need that registration, so for the
length of the import that one module is marked absent; afterwards `import keras` works as usual
for the commands that use Keras (bench, Keras sources).
"""

from __future__ import annotations

import sys
from types import ModuleType

EAGER_KERAS = "keras.src.optimizers"  # the module TensorFlow's __init__ imports for Keras' sake


def tensorflow() -> ModuleType:
    """`import tensorflow`, with Keras left unloaded if this is the process's first import of it."""
    if "tensorflow" in sys.modules or EAGER_KERAS in sys.modules:
        import tensorflow as tf

        return tf
    sys.modules[EAGER_KERAS] = None  # type: ignore[assignment]  # makes its import raise ImportError
    try:
        import tensorflow as tf
    finally:
        if sys.modules.get(EAGER_KERAS, ...) is None:
            del sys.modules[EAGER_KERAS]
    return tf

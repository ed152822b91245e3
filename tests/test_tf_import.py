"""TensorFlow imported without Keras: Keras stays unloaded, and a later `import keras` still works."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import sys
from tfscope.core import tf_import
tf = tf_import.tensorflow()
print(sorted(m for m in ("keras", "matplotlib", "onnx", "tf2onnx") if m in sys.modules))
print(float(tf.function(lambda: tf.constant(2.0) * 3.0, jit_compile=True)()))
import keras
print(keras.optimizers.Adam(0.5).learning_rate.numpy())
"""


def test_tensorflow_without_keras_in_a_fresh_process():
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "6.0", "0.5"]

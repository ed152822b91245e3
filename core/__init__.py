"""tfscope core: explicit-Variable networks, losses, optimisers, gradients and the compiled loop.

Importing this package does not import TensorFlow. It does set one XLA option in XLA_FLAGS
(core/xla_flags.py: small while loops, the fused training loop among them, compile into one
function), which takes effect if no XLA compilation has run in the process yet; a value already
in XLA_FLAGS is kept. Set TF_CPP_MIN_LOG_LEVEL before the first `import tensorflow` to silence
TensorFlow's start-up lines (the command line does).
"""

from tfscope.core import xla_flags

xla_flags.configure()

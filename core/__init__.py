"""tfscope core: explicit-Variable networks, losses, optimisers, gradients and the compiled loop.

Importing this package does not import TensorFlow's logging noise: set TF_CPP_MIN_LOG_LEVEL
before the first `import tensorflow` if you need it silent (the command line does).
"""

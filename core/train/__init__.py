"""The training loop: the one step and its compiled wrappings, batching, the run directory,
checkpoints and distribution."""

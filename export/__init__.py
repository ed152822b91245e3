"""Export of trained networks to SavedModel and ONNX, and the equivalence report."""

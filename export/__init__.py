"""Export of trained networks to SavedModel and ONNX, and the equivalence report.

serving.py   the ExportModule: raw x in, raw z out, standardisation folded in, plus per-stage outputs
writer.py    export_run: a run to EXPORT_DIR, atomically (preflight.py: opset and target checks)
inputs.py    the seeded input sets saved as inputs.npz
live.py      the live network's checkpoint carried in the export, so verify can rebuild it
runtimes.py  eager, graph, XLA, SavedModel, onnxruntime (optimisation off / all), ONNX reference
compare.py   Polygraphy's comparison rules
localize.py  the first stage that diverges
parity.py    verify: every runtime against eager, the Report, parity.json
latency.py   per-call latency of SavedModel vs onnxruntime
"""

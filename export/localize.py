"""Per-stage localisation of a mismatch: compare each stage's output (standardised input, each
Dense layer's activation, raw output) of a failing runtime with the live eager network's, on the
failing input, and name the first stage that diverges."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfscope.export.compare import Comparison, compare
from tfscope.export.runtimes import Runtime


@dataclass
class Localisation:
    runtime: str
    input: str
    stages: list[Comparison] = field(default_factory=list)  # in network order
    missing: list[str] = field(default_factory=list)  # stages the runtime does not expose (folded away)
    first_diverging: str | None = None  # the first stage that fails, or None when every stage passes

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "input": self.input, "first_diverging": self.first_diverging,
                "missing": self.missing, "stages": [c.to_dict() for c in self.stages]}


def localise(reference: Runtime, runtime: Runtime, x: np.ndarray, input_name: str, atol: float,
             rtol: float) -> Localisation:
    """Compare every stage `runtime` exposes with the reference's on the rows `x`."""
    ref = reference.stages(x)
    got = runtime.stages(x)
    loc = Localisation(runtime.name, input_name)
    for stage, r in ref.items():
        if stage not in got:
            loc.missing.append(stage)
            continue
        c = compare(r, got[stage], atol, rtol, runtime.name, input_name, stage)
        loc.stages.append(c)
        if not c.passed and loc.first_diverging is None:
            loc.first_diverging = stage
    return loc

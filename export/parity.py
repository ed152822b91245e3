"""The equivalence report: every runtime against the live eager network on the saved inputs.

`verify(export_dir)` rebuilds the live network from the export's own checkpoint, runs the seeded
inputs of inputs.npz through every runtime (export/runtimes.py), compares each with eager by
Polygraphy's rules (export/compare.py), localises the first failure to a stage
(export/localize.py), writes parity.json and returns the Report.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tfscope.core.errors import ConfigError, RunDirError
from tfscope.export.compare import DEFAULT_TOLERANCE, Comparison, combine, compare
from tfscope.export.inputs import INPUTS, load_inputs
from tfscope.export.live import LIVE, load_live
from tfscope.export.localize import Localisation, localise
from tfscope.export.preflight import check_export_dir
from tfscope.export.runtimes import DESCRIPTIONS, EAGER, RUNTIMES, all_runtimes

if TYPE_CHECKING:
    from tfscope.export.assess import Assessment

SAVED_MODEL, ONNX_FILE, PARITY = "saved_model", "model.onnx", "parity.json"


@dataclass
class Report:
    export_dir: str
    dtype: str
    atol: float
    rtol: float
    inputs: dict[str, list[int]]  # input set -> shape
    comparisons: list[Comparison]  # one per (runtime, input), RUNTIMES order then input order
    summaries: list[Comparison]  # one per runtime, all inputs pooled
    localisation: Localisation | None = None  # of the first failing pair, when there is one
    assessment: Assessment | None = None  # the rounding-bound verdict vs float64 (float32 tfscope runs)
    rule: str = "fixed"  # what decides: "bound" (the default where there is an assessment) or "fixed"

    @property
    def passed(self) -> bool:
        if self.rule == "bound" and self.assessment is not None:
            return self.assessment.passed
        return all(c.passed for c in self.comparisons)

    @property
    def first_failure(self) -> Comparison | None:
        """The first (runtime, input) failing the fixed rule (Polygraphy's, against eager)."""
        return next((c for c in self.comparisons if not c.passed), None)

    def _bound_failure_line(self) -> str | None:
        a, loc = self.assessment, self.localisation
        f = a.first_failure
        if f is None:
            if self.passed or loc is None:
                return None
            return (f"the deep check of {loc.runtime} on input {loc.input!r} finds an intermediate tensor beyond what "
                    f"its rule allows; first diverging op: {loc.first_diverging}")
        if f.rule == "-":  # a runtime that could not run the model (export/graph_verdict.unrun_rows)
            return f"{f.runtime} could not run the model: {f.input}"
        line = (f"{f.runtime} exceeds what float32 rounding explains on input {f.input!r}: "
                + f.why(a.what(f), a.oracle_name))
        if loc is not None:
            line += (f"; first diverging stage: {loc.first_diverging}" if loc.first_diverging
                     else "; no single stage exceeds its own rounding bound")
        return line

    def failure_line(self) -> str | None:
        """One line naming the first failing pair, input and row (and the diverging stage)."""
        if self.rule == "bound" and self.assessment is not None:
            return self._bound_failure_line()
        f = self.first_failure
        if f is None:
            return None
        line = f"{f.runtime} vs {EAGER} differs on input {f.input!r}: {f.why()}"
        loc = self.localisation
        if loc is not None:
            line += (f"; first diverging stage: {loc.first_diverging}" if loc.first_diverging
                     else "; no single stage diverges beyond tolerance")
        return line

    def to_dict(self) -> dict:
        return {
            "export_dir": self.export_dir, "dtype": self.dtype, "atol": self.atol, "rtol": self.rtol,
            "reference": EAGER, "runtimes": {k: DESCRIPTIONS[k] for k in (EAGER, *RUNTIMES)},
            "passed": self.passed, "first_failure": self.failure_line(), "inputs": self.inputs,
            "summaries": [c.to_dict() for c in self.summaries],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "localisation": self.localisation.to_dict() if self.localisation else None,
            "rule": self.rule, "bound_verdict": self.assessment.to_dict() if self.assessment else None,
            "fixed_verdict": {"atol": self.atol, "rtol": self.rtol, "reference": EAGER,
                              "passed": all(c.passed for c in self.comparisons)},
        }

    def table(self, detail: bool = False) -> str:
        """The human table: one row per runtime (all inputs pooled), or per (runtime, input)."""
        if self.assessment is not None:
            return self._bound_table(detail)
        rows = self.comparisons if detail else self.summaries
        head = ["runtime vs eager", "input", "max abs", "mean abs", "median abs", "max rel", "min atol",
                "min rtol", "shape", "dtype", "nan/inf", "result"]
        body = [[c.runtime, c.input, _g(c.max_abs), _g(c.mean_abs), _g(c.median_abs), _g(c.max_rel),
                 _g(c.min_atol), _g(c.min_rtol), "ok" if c.shape_ok else "DIFF", "ok" if c.dtype_ok else "DIFF",
                 f"{c.nan_got}/{c.inf_got}", "pass" if c.passed else "FAIL"] for c in rows]
        lines = [f"equivalence with the live eager network ({self.dtype}, atol {self.atol:g}, rtol {self.rtol:g};"
                 f" {sum(s[0] for s in self.inputs.values()):,} rows in {len(self.inputs)} input sets)",
                 *_format(head, body)]
        lines += self._localisation_lines()
        verdict = "PASS: every runtime matches" if self.passed else f"FAIL: {self.failure_line()}"
        lines.append(verdict)
        return "\n".join(lines)

    def _localisation_lines(self) -> list[str]:
        loc = self.localisation
        if loc is None:
            return []
        lines = [f"localisation of {loc.runtime} on input {loc.input!r}:"]
        judged = {j.output: j for j in getattr(loc, "judgements", [])}
        if judged:
            lines += _format(["stage", "vs eager max abs", "vs float64", "stage bound use", "result"],
                             [[c.output, _g(c.max_abs), _g(judged[c.output].max_error),
                               _g(judged[c.output].bound_use), "pass" if judged[c.output].passed else "FAIL"]
                              for c in loc.stages if c.output in judged])
        else:
            lines += _format(["stage", "max abs", "max rel", "result"],
                             [[c.output, _g(c.max_abs), _g(c.max_rel), "pass" if c.passed else "FAIL"]
                              for c in loc.stages])
        if loc.missing:
            lines.append(f"  (not in this runtime's graph, folded away: {', '.join(loc.missing)})")
        return lines

    def _bound_table(self, detail: bool) -> str:
        """Per runtime: the bound verdict vs the float64 network, then Polygraphy's columns vs eager."""
        a = self.assessment
        many = a.many_outputs  # model exports label a runtime's rows per output: 'rt [output]'

        def key(c: Comparison) -> tuple[str, str]:
            return (f"{c.runtime} [{c.output}]" if many and " [" not in c.runtime else c.runtime, c.input)

        polygraphy = {key(c): c for c in (self.comparisons if detail else self.summaries)}
        rows = [j for j in a.outputs] if detail else a.summaries
        head = ["runtime", "input", "err vs f64", "rel vs f64", "bound use", "worst at", "| vs eager: max abs",
                "max rel", "min atol", "min rtol", "shape", "dtype", "nan/inf", "fixed rule", "result"]
        body = []
        for j in rows:
            c = polygraphy.get((j.runtime, j.input if detail or j.rule == "-" else "all"))
            worst = j.output if detail else f"{j.worst_input}/{j.output}"
            fixed = ([_g(c.max_abs), _g(c.max_rel), _g(c.min_atol), _g(c.min_rtol), "ok" if c.shape_ok else "DIFF",
                      "ok" if c.dtype_ok else "DIFF", f"{c.nan_got}/{c.inf_got}", "pass" if c.passed else "FAIL"]
                     if c is not None else ["-"] * 5 + ["-", "-", "(reference)"])
            verdict = j.passed if self.rule == "bound" else (c is None or c.passed)
            body.append([j.runtime, j.input, _g(j.max_error), _g(j.max_rel_error), _g(j.bound_use), worst,
                         *fixed, "pass" if verdict else "FAIL"])
        rows_n = f"{sum(s[0] for s in self.inputs.values()):,} rows in {len(self.inputs)} input sets"
        decides = ("the rounding bound decides (bound use <= 1 passes); --atol/--rtol switch to the fixed rule"
                   if self.rule == "bound" else
                   f"the fixed rule decides (atol {self.atol:g}, rtol {self.rtol:g} vs eager, as asked)")
        lines = [f"{a.title} ({self.dtype}; {rows_n}); {decides}",
                 "bound use = max over elements of |error vs float64| / what float32 rounding can explain "
                 f"(or, under 'fallback', k x eager's own error), {a.scope}", *_format(head, body)]
        reference = getattr(a, "reference", None)
        if reference:
            lines.append(f"reference graph: {reference}")
        rules = getattr(a, "rules", {})
        unbounded = {k: v for k, v in rules.items() if v != "bound"}
        if unbounded:
            lines.append("outputs not judged by the bound: " + "; ".join(f"{k}: {v}" for k, v in unbounded.items()))
        if getattr(a, "file_note", None):
            lines.append(a.file_note)
        if a.graph_checks:
            worst = max(a.graph_checks, key=lambda j: j.bound_use)
            lines.append(f"{a.file_line}: bound use {_g(worst.bound_use)} "
                         f"(input {worst.input!r}){'' if worst.passed else ': the ONNX file is not that function'}")
        lines += self._localisation_lines()
        lines.append("PASS: every runtime matches" if self.passed else f"FAIL: {self.failure_line()}")
        return "\n".join(lines)


def _g(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _format(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(head), fmt(["-" * w for w in widths]), *[fmt(r) for r in body]]


def check_tolerance(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"--{name}: must be a finite number >= 0, got {value}")


def verify(export_dir: str | Path, atol: float | None = None, rtol: float | None = None,
           write: bool = True, deep: bool = True, reference: bool = True, source=None) -> Report:
    """Run the export's inputs through every runtime; compare with eager; write parity.json.
    An export of a Keras file or SavedModel (export.json names its source) goes through
    export/model_parity.py: the same Report, over every named output, with the deep check
    (`deep`) and the ONNX reference evaluator (`reference`) as options; `source` is the model
    already loaded from the same file (the export passes its own, saving a reload)."""
    d = Path(export_dir)
    check_tolerance("atol", atol)
    check_tolerance("rtol", rtol)
    check_export_dir(d)
    from tfscope.export.model_parity import read_meta, report_dict, verify_model

    meta = read_meta(d)
    if meta is not None:
        report = verify_model(d, meta, atol, rtol, deep=deep, reference=reference, source=source)
        if write:
            write_json(d / PARITY, report_dict(report, meta))
        return report
    for part in (SAVED_MODEL, ONNX_FILE, INPUTS, LIVE):
        if not (d / part).exists():
            raise RunDirError(f"{d}: not a complete export directory (no {part})")
    model, _ = load_live(d / LIVE)
    from tfscope.export.assess import not_stagewise

    why = not_stagewise(model)
    if why is not None:  # a classifier or a convnet: every named output judged through its ONNX graph
        from tfscope.core.sources.source import RunSource
        from tfscope.export.serving import SERVING, output_names

        meta = {"source": {"kind": "run", "signature": SERVING, "verdict": why}}
        source = RunSource(model, f"tfscope network of {d}", outputs=output_names(model))
        report = verify_model(d, meta, atol, rtol, deep=deep, reference=reference, source=source)
        report.parity = lambda: report_dict(report, meta)  # type: ignore[attr-defined]  (parity.json's body)
        if write:
            write_json(d / PARITY, report.parity())
        return report
    dtype = model.dtype.name
    fixed = atol is not None or rtol is not None  # explicit tolerances ask for the fixed rule
    atol = DEFAULT_TOLERANCE[dtype] if atol is None else float(atol)
    rtol = DEFAULT_TOLERANCE[dtype] if rtol is None else float(rtol)
    try:
        sets = load_inputs(d / INPUTS)
    except (OSError, ValueError) as e:
        raise RunDirError(f"{d / INPUTS}: unreadable ({e})") from None
    if dtype == "float32":  # a graph with no float64 form is refused before any runtime runs
        from tfscope.export.assess import check_export_graph

        check_export_graph(d / ONNX_FILE)
    runtimes = all_runtimes(model, d / SAVED_MODEL, d / ONNX_FILE)
    reference = runtimes[EAGER]
    refs = {name: reference.run(x) for name, x in sets.items()}
    comparisons, summaries, outputs = [], [], {EAGER: refs}
    for rt in RUNTIMES:
        parts, gots = [], []
        for name, x in sets.items():
            got = runtimes[rt].run(x)
            parts.append(compare(refs[name], got, atol, rtol, rt, name))
            gots.append(got)
        comparisons += parts
        summaries.append(combine(parts, list(refs.values()), gots))
        outputs[rt] = dict(zip(sets, gots))
    report = Report(str(d), dtype, atol, rtol, {k: list(v.shape) for k, v in sets.items()}, comparisons, summaries)
    if dtype == "float32":  # float64 networks keep the fixed 1e-12 rule: no wider oracle here
        from tfscope.export.assess import assess, attach_localisation

        report.assessment = assess(model, d / ONNX_FILE, sets, outputs, runtimes)
        report.rule = "fixed" if fixed else "bound"
    first = report.first_failure if report.rule == "fixed" else report.assessment.first_failure
    if first is not None:
        report.localisation = localise(reference, runtimes[first.runtime], sets[first.input], first.input, atol, rtol)
        if report.assessment is not None:
            attach_localisation(report.assessment, report.localisation, report.rule == "bound")
    if write:
        write_report(d / PARITY, report)
    return report


def write_report(path: Path, report: Report) -> None:
    write_json(path, report.to_dict())


def write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)

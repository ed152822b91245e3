"""The tfscope pytest plugin (entry point `pytest11: tfscope`): parity checks in a user's own suite.

  fixture tfscope_inputs     tfscope_inputs(model, shapes=..., ranges=..., batch_sizes=..., seed=...):
                             seeded feed sets from the model's signature (core/sources/feeds.generate)
  fixture tfscope_export     tfscope_export(model, opset=17, **options): the model exported once per
                             session into a temporary directory by tfscope's export writer (SavedModel
                             + ONNX, verified); returns tfscope.testing.Exported (paths and the Report)
  --tfscope-report FILE      every check's numbers (tfscope.testing.CHECKS) as JSON
  terminal summary           one line: checks run, passed/failed, worst tolerance use (and bound use)

Loading the plugin imports neither TensorFlow nor tfscope.core: a session that does not use it
pays nothing. Checks are attributed to the test whose setup, call or teardown ran them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

TESTING = "tfscope.testing"
REPORT_VERSION = 1


def _checks() -> list[dict]:
    module = sys.modules.get(TESTING)  # not imported by any test: no checks ran
    return module.CHECKS if module is not None else []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tfscope", "tfscope parity checks")
    group.addoption("--tfscope-report", metavar="FILE", default=None,
                    help="write the numbers of every tfscope parity check (tfscope.testing) as JSON to FILE")


OUTER = pytest.StashKey[list]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """A session nested in another process's session (pytester in-process) counts only its own checks."""
    module = sys.modules.get(TESTING)
    if module is not None:
        session.config.stash[OUTER] = module.CHECKS
        module.CHECKS = []


def pytest_unconfigure(config: pytest.Config) -> None:
    module = sys.modules.get(TESTING)
    if module is not None and OUTER in config.stash:
        module.CHECKS = config.stash[OUTER]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    before = len(_checks())
    try:
        return (yield)
    finally:
        for record in _checks()[before:]:
            record["test"] = item.nodeid


def _use(record: dict, key: str) -> float | None:
    v = record.get(key)
    if v is None:
        return None
    return float(v)  # "inf" strings included


def summary(checks: list[dict]) -> dict:
    passed = sum(1 for c in checks if c.get("passed"))
    out: dict[str, Any] = {"checks": len(checks), "passed": passed, "failed": len(checks) - passed}
    for key in ("tolerance_use", "bound_use"):
        used = [(u, c) for c in checks if (u := _use(c, key)) is not None]
        if used:
            worst, c = max(used, key=lambda t: t[0])
            out[f"worst_{key}"] = worst if math.isfinite(worst) else str(worst)
            out[f"worst_{key}_test"] = c.get("test")
    return out


def summary_line(checks: list[dict]) -> str:
    s = summary(checks)
    kinds: dict[str, int] = {}
    for c in checks:
        kinds[c.get("kind", "check")] = kinds.get(c.get("kind", "check"), 0) + 1
    what = ", ".join(f"{n} {k}" for k, n in kinds.items())
    line = f"tfscope: {s['checks']} parity check(s) ({what}): {s['passed']} passed, {s['failed']} failed"
    if "worst_bound_use" in s:
        line += f"; worst bound use {_fmt(s['worst_bound_use'])} ({s['worst_bound_use_test']})"
    if "worst_tolerance_use" in s:
        line += f"; worst tolerance use {_fmt(s['worst_tolerance_use'])} ({s['worst_tolerance_use_test']})"
    return line


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    checks = _checks()
    if checks:
        terminalreporter.write_line(summary_line(checks))
    path = config.getoption("tfscope_report")
    if path:
        terminalreporter.write_line(f"tfscope: report written to {path}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("tfscope_report")
    if not path:
        return
    checks = _checks()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps({"version": REPORT_VERSION, **summary(checks), "records": checks}, indent=2) + "\n",
                   encoding="utf-8")
    tmp.replace(target)


@pytest.fixture
def tfscope_inputs():
    """A function: tfscope_inputs(model or [InputSpec], shapes=None, ranges=None, batch_sizes=None,
    seed=None) -> {set name: {input name: array}}, the same arrays for the same arguments."""
    from tfscope.testing import generate_inputs

    return generate_inputs


@pytest.fixture(scope="session")
def tfscope_export(tmp_path_factory):
    """A function: tfscope_export(model, opset=17, **options) -> tfscope.testing.Exported (directory,
    saved_model, onnx, report), exporting each model (by identity, or a path by its resolved name)
    once per session into a temporary directory with tfscope's own export writer, verified."""
    from tfscope.testing import export

    done: dict[Any, tuple[Any, Any]] = {}  # the model is kept so that its id is not reused

    def run(model: Any, opset: int = 17, **options: Any):
        key = (str(Path(model).resolve()) if isinstance(model, (str, Path)) else id(model), opset,
               json.dumps(options, sort_keys=True, default=str))
        if key not in done:
            done[key] = (model, export(model, tmp_path_factory.mktemp("tfscope_export"), opset, **options))
        return done[key][1]

    return run

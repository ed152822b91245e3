"""CI runs exactly the README's test command (.ci/run's last line)."""

from __future__ import annotations

import re

from conftest import ROOT


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"Run the tests .*?```sh\n(.*?)\n```", readme, re.S)
    assert block is not None, "the README has no 'Run the tests' command block"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == block.group(1).strip()

"""tfscope claims no generic top-level names: from a directory holding a user's own `core/` and
`export/` packages, the user's `import core`, `import tfscope.testing`, the plugin and the CLI all
work side by side (one user pytest run in a subprocess, so the directory is the user's sys.path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

USER_TEST = '''
import core.mine
import export.mine
import numpy as np
import pytest

import tfscope.testing
from tfscope.cli import main


def test_side_by_side(tfscope_inputs, capsys):
    assert core.mine.WHO == "the user's core" and export.mine.WHO == "the user's export"
    import tfscope.core.sources.feeds as feeds
    import tfscope.export.compare as compare

    assert Path(feeds.__file__).resolve().is_relative_to({repo!r})
    assert Path(compare.__file__).resolve().is_relative_to({repo!r})
    sets = tfscope_inputs([feeds.InputSpec("x", "float32", (None, 2))], batch_sizes=[3])
    tfscope.testing.assert_equivalent(lambda x: x * 2, lambda x: x + x, sets)
    with pytest.raises(SystemExit) as e:  # the CLI, importing tfscope.export, in this same process
        main(["export", "no-such-run", "--out", "out", "--opset", "19"])
    assert e.value.code == 2 and "--opset: 19 is not supported" in capsys.readouterr().err
    assert core.mine.WHO == "the user's core"  # still the user's after tfscope loaded its own


from pathlib import Path  # noqa: E402
'''


def test_a_users_core_and_export_packages_live_beside_tfscope(tmp_path):
    repo = str(Path(__file__).resolve().parents[1])
    for pkg in ("core", "export"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
        (tmp_path / pkg / "mine.py").write_text(f'WHO = "the user\'s {pkg}"\n')
    (tmp_path / "test_user.py").write_text(USER_TEST.format(repo=repo))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "tfscope: 1 parity check(s)" in r.stdout, r.stdout


def test_the_distribution_installs_no_generic_top_level_name(tmp_path):
    code = "import importlib.util as u; print([n for n in ('core', 'export', 'profiling') if u.find_spec(n)])"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    assert importlib.util.find_spec("tfscope.core") is not None


def test_the_readme_python_examples_use_tfscope_names():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```python")[1:]]
    lines = [line.strip() for b in blocks for line in b.splitlines()]
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    assert imports
    bare = [line for line in imports if line.split()[1].split(".")[0] in ("core", "export", "profiling")]
    assert not bare, bare
    prose = readme.replace("tfscope.core.", "")
    assert "core.distributed." not in prose and "core.xla_flags." not in prose

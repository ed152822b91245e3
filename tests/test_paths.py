"""core/paths.py: a path a command would create is refused before any heavy import when it cannot
be created, and the check leaves nothing behind."""

from __future__ import annotations

import pytest

from tfscope.core.errors import RunDirError
from tfscope.core.paths import check_creatable


def test_a_new_path_under_a_writable_directory_passes_and_leaves_nothing(tmp_path):
    check_creatable(tmp_path / "a" / "b" / "out")
    check_creatable(tmp_path)  # an existing path is the caller's rule
    assert list(tmp_path.iterdir()) == []


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match=r"file/deeper/out: cannot create its directory .*file/deeper "
                                          r"\(a file is in the way: .*file\)"):
        check_creatable(tmp_path / "file" / "deeper" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_directory_that_takes_no_entry_is_named():
    with pytest.raises(RunDirError, match=r"/proc/tfscope-x/out: cannot write in /proc "):
        check_creatable("/proc/tfscope-x/out")

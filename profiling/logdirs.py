"""The profile log directory's rules, apart from capture.py so the command line can refuse a bad
LOGDIR before TensorFlow loads: LOGDIR must be new or empty; --force replaces an earlier profile
(and nothing else)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tfscope.core.errors import RunDirError
from tfscope.core.paths import check_creatable
from tfscope.core.train.run_dir import is_run
from tfscope.profiling import hot_path


def check_logdir(logdir: Path, source: Path | None, force: bool) -> None:
    """Refuse to mix captures, changing nothing; `source` (a run directory or a model path) must not
    be LOGDIR itself."""
    if source is not None and logdir.resolve() == Path(source).resolve():
        raise RunDirError(f"{logdir}: --logdir must not be the run directory")
    if logdir.exists() and not logdir.is_dir():
        raise RunDirError(f"{logdir}: exists and is not a directory")
    check_creatable(logdir)
    if logdir.exists() and any(logdir.iterdir()):
        if not force:
            raise RunDirError(f"{logdir}: already exists; choose a new --logdir or use --force to replace it")
        ours = (logdir / hot_path.JSON_NAME).is_file() or (logdir / "plugins" / "profile").is_dir()
        if not ours or is_run(logdir):
            raise RunDirError(f"{logdir}: exists and is not a profile log directory; --force only replaces those")


def prepare_logdir(logdir: Path, source: Path | None, force: bool) -> None:
    """Check, then empty (an earlier profile, with --force) or create LOGDIR."""
    check_logdir(logdir, source, force)
    if logdir.exists() and any(logdir.iterdir()):
        shutil.rmtree(logdir)
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{logdir}: cannot create ({e.strerror})") from None

"""Whether a command may create a file or directory, checked before any heavy import: a refusal
costs nothing and touches nothing (TensorFlow alone takes seconds to load)."""

from __future__ import annotations

import os
from pathlib import Path

from tfscope.core.errors import RunDirError


def check_creatable(path: str | Path) -> None:
    """Refuse a `path` that cannot be created: its nearest existing ancestor must be a directory
    that takes a new entry (probed with an empty directory made and removed at once, so /proc,
    read-only mounts and missing permissions are all caught). An existing `path` is the caller's
    rule (--force and the like), so it passes here."""
    p = Path(path)
    if p.exists() or p.is_symlink():
        return
    ancestor = p.parent
    while not (ancestor.exists() or ancestor.is_symlink()) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"{p}: cannot create its directory {p.parent} (a file is in the way: {ancestor})")
    probe = ancestor / f".tfscope-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as e:
        raise RunDirError(f"{p}: cannot write in {ancestor} ({e.strerror})") from None
    probe.rmdir()

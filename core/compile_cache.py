"""The persistent XLA compilation cache: a second identical `tfscope train` loads its compiled programs.

TensorFlow writes and reads compiled XLA programs in the directory that
`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=DIR` names, if that is set before the process's
first XLA compilation. Its own key is a fingerprint of the function's HLO and the device, so a
different network, shape or dtype never loads another's program. What the HLO does not say (the
TensorFlow build, XLA_FLAGS such as the small-loop threshold of core/xla_flags.py, the CPU the
code was generated for) names a subdirectory here (`key`), so a change there is a different cache.

TensorFlow trusts what it reads: a truncated or garbled entry stops the run with an error, and a
same-sized garbled one could load. So every entry gets a sidecar `<entry>.sha256` (its SHA-256)
when the process that wrote it exits, and `prune` deletes, before TensorFlow may read anything,
each entry whose sidecar is missing or does not match: the program is then compiled again, never
loaded from a bad file. A cache directory that cannot be made is no cache, not an error.

Where: `$TFSCOPE_COMPILE_CACHE` if set (`off`, `0` or empty: no cache), else
`$XDG_CACHE_HOME/tfscope`, else `~/.cache/tfscope`. `tfscope train --no-compile-cache` turns it off.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import re
from collections.abc import MutableMapping
from importlib import metadata
from pathlib import Path

ENV = "TFSCOPE_COMPILE_CACHE"  # a directory, or off / 0 / empty for no cache
OFF = ("", "0", "off", "no", "false", "none")
FLAG = "--tf_xla_persistent_cache_directory"
ENTRY_GLOB = "xla_compile_cache_*.pb"  # the file names TensorFlow gives its entries
SIDECAR = ".sha256"
_FLAG_SETTING = re.compile(rf"{FLAG}=\S*")


def base_directory(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """The cache's root directory, or None when the environment turns the cache off."""
    if ENV in environ:
        value = environ[ENV].strip()
        return None if value.lower() in OFF else Path(value).expanduser()
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tfscope"


def _tensorflow_version() -> str:
    """The installed TensorFlow's version, read without importing it."""
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "tensorflow unknown"


def _cpu() -> str:
    """The CPU model and feature flags XLA generates code for (Linux), else the machine type."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return platform.machine() + "\n" + "\n".join(dict.fromkeys(lines))


def key(environ: MutableMapping[str, str] = os.environ) -> str:
    """16 hex digits over what decides a compiled program besides its HLO."""
    other_tf_flags = _FLAG_SETTING.sub("", environ.get("TF_XLA_FLAGS", "")).split()
    parts = [_tensorflow_version(), environ.get("XLA_FLAGS", ""), " ".join(other_tf_flags),
             environ.get("TF_ENABLE_ONEDNN_OPTS", ""), _cpu()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prune(directory: Path) -> list[Path]:
    """Delete every entry without a matching sidecar (and sidecars without an entry); returns the
    entries deleted. Runs before TensorFlow may read the directory."""
    gone = []
    for entry in sorted(directory.glob(ENTRY_GLOB)):
        side = entry.with_name(entry.name + SIDECAR)
        try:
            ok = side.read_text().strip() == _digest(entry)
        except (OSError, UnicodeDecodeError):
            ok = False
        if not ok:
            for p in (entry, side):
                p.unlink(missing_ok=True)
            gone.append(entry)
    for side in directory.glob("*" + SIDECAR):
        if not side.with_name(side.name[: -len(SIDECAR)]).exists():
            side.unlink(missing_ok=True)
    return gone


def seal(directory: Path) -> list[Path]:
    """Write the sidecar of every complete entry that has none; returns the entries sealed.
    TensorFlow writes an entry to a temporary name and renames it, so an entry is complete."""
    sealed = []
    for entry in sorted(directory.glob(ENTRY_GLOB)):
        side = entry.with_name(entry.name + SIDECAR)
        if side.exists():
            continue
        try:
            tmp = side.with_name(f".{side.name}.{os.getpid()}")
            tmp.write_text(_digest(entry) + "\n")
            os.replace(tmp, side)
            sealed.append(entry)
        except OSError:
            continue
    return sealed


def configured(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """The cache directory TF_XLA_FLAGS names, if any."""
    found = _FLAG_SETTING.findall(environ.get("TF_XLA_FLAGS", ""))
    return Path(found[-1].split("=", 1)[1]) if found else None


def configure(enabled: bool = True, environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point TensorFlow at this process's cache directory (pruned, sealed at exit) and return it;
    None when off. A directory the user already put in TF_XLA_FLAGS is kept as theirs (not pruned
    or sealed). Must run before the process's first XLA compilation."""
    if configured(environ) is not None:
        return configured(environ)
    base = base_directory(environ)
    if not enabled or base is None:
        return None
    directory = base / key(environ)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        prune(directory)
    except OSError:
        return None
    environ["TF_XLA_FLAGS"] = f"{environ.get('TF_XLA_FLAGS', '')} {FLAG}={directory}".strip()
    if environ.get("TF_CPP_MIN_LOG_LEVEL") == "2":
        # TensorFlow reads each entry as text before binary and logs the text attempt's failure at
        # level 2 on every load; quiet output (the command line's level 2) stays quiet.
        environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    atexit.register(seal, directory)
    return directory

"""Shared fixtures. TensorFlow's start-up chatter is silenced before anything imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def lecture_run(tmp_path_factory) -> Path:
    """A trained run of the lecture network with default settings (fused mode), shared read-only."""
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train

    out = tmp_path_factory.mktemp("lecture") / "run"
    train(TrainConfig(), out)
    return out


def tfscope(*args: str, timeout: float = 600, env: dict | None = None, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess:
    """Run the command line in a subprocess, as a user would; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tfscope", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


@pytest.fixture(scope="session")
def measured_roofs():
    """The machine's roofs (profiling/roofs.py), measured once per session with 3 runs each."""
    from tfscope.profiling import roofs

    return roofs.measure(runs=3)


# The suite's own persistent compilation cache (core/compile_cache.py), never the user's: every
# `tfscope train` a test runs inherits it; removed when the session ends.
import shutil  # noqa: E402
import tempfile  # noqa: E402

_TEST_COMPILE_CACHE = tempfile.mkdtemp(prefix="tfscope-test-compile-cache-")
os.environ["TFSCOPE_COMPILE_CACHE"] = _TEST_COMPILE_CACHE


@pytest.fixture(scope="session", autouse=True)
def _remove_test_compile_cache():
    yield
    shutil.rmtree(_TEST_COMPILE_CACHE, ignore_errors=True)

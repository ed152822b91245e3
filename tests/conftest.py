"""Shared fixtures. TensorFlow's start-up chatter is silenced before anything imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items) -> None:
    """Files marked `slow(seconds=N)` run first, the longest first, each file's tests in their own
    order: under `-n 2 --dist loadfile` (the README's command) each worker takes whole files in this
    order, so the two end together instead of one finishing a long file alone."""
    def weight(item) -> float:
        mark = item.get_closest_marker("slow")
        return -float(mark.kwargs.get("seconds", 10)) if mark else 0.0

    items.sort(key=weight)  # stable: equal weights keep the collection order


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


# The digits networks (tests/test_digits.py): one convnet and one MLP, each trained once in fused mode on
# the built-in 8x8 digits with a seeded, stratified 20% held out.
DIGITS_CONVNET = dict(net="conv:8x3,pool:2,flatten,dense", activation="relu", batch_size=64, learning_rate=0.01,
                      steps=400)
DIGITS_MLP = dict(hidden=[64], activation="relu", batch_size=64, learning_rate=0.01, steps=300)


def _digits_run(tmp_path_factory, name: str, settings: dict):
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train

    out = tmp_path_factory.mktemp(f"digits_{name}") / "run"
    cfg = TrainConfig(data="digits", task="classify", loss="cross_entropy", val_fraction=0.2, target_loss=0.0,
                      **settings)
    return train(cfg, out)


@pytest.fixture(scope="session")
def digits_convnet(tmp_path_factory):
    return _digits_run(tmp_path_factory, "convnet", DIGITS_CONVNET)


@pytest.fixture(scope="session")
def digits_mlp(tmp_path_factory):
    return _digits_run(tmp_path_factory, "mlp", DIGITS_MLP)

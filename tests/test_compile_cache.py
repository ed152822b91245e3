"""The persistent compilation cache: where it lives, that a warm run loads it and gives the same
weights, that a truncated or garbled entry is compiled again instead of loaded (same weights,
exit 0), and that another network gets its own entry."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tfscope

from tfscope.core import compile_cache as cc

# ---- where, and the environment (no TensorFlow) -----------------------------------------------


def test_directory_follows_the_environment(tmp_path):
    assert cc.base_directory({"HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/x/tfscope")
    assert cc.base_directory({cc.ENV: str(tmp_path)}) == tmp_path
    for off in ("off", "0", "", "OFF", "none"):
        assert cc.base_directory({cc.ENV: off}) is None
    assert cc.base_directory({"XDG_CACHE_HOME": ""}) == Path.home() / ".cache" / "tfscope"


def test_configure_names_a_keyed_directory_and_keeps_the_users_own(tmp_path):
    env = {cc.ENV: str(tmp_path), "XLA_FLAGS": "--a=1", "TF_XLA_FLAGS": "--tf_xla_auto_jit=0"}
    d = cc.configure(environ=env)
    assert d == tmp_path / cc.key(env) and d.is_dir()
    assert env["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {cc.FLAG}={d}"
    assert cc.configured(env) == d
    assert cc.key(env) == cc.key({**env, "TF_XLA_FLAGS": "--tf_xla_auto_jit=0"})  # our own flag is not part of it
    assert cc.key(env) != cc.key({**env, "XLA_FLAGS": "--a=2"})  # another XLA option: another cache
    mine = {cc.ENV: str(tmp_path), "TF_XLA_FLAGS": f"{cc.FLAG}=/elsewhere"}
    assert cc.configure(environ=mine) == Path("/elsewhere") and mine["TF_XLA_FLAGS"] == f"{cc.FLAG}=/elsewhere"
    for env in ({cc.ENV: "off"}, {cc.ENV: str(tmp_path)}):
        before = dict(env)
        if env[cc.ENV] == "off":
            assert cc.configure(environ=env) is None
        else:
            assert cc.configure(enabled=False, environ=env) is None
        assert env == before


def test_prune_keeps_only_entries_whose_sidecar_matches(tmp_path):
    names = [f"xla_compile_cache__{i}__XLA_CPU_JIT.pb" for i in range(5)]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(bytes(range(256)) * (i + 1))
    assert sorted(p.name for p in cc.seal(tmp_path)) == names
    assert cc.seal(tmp_path) == []  # sealed once
    entry = tmp_path / names[0]
    assert (tmp_path / (names[0] + cc.SIDECAR)).read_text().strip() == hashlib.sha256(entry.read_bytes()).hexdigest()
    (tmp_path / names[1]).write_bytes((tmp_path / names[1]).read_bytes()[:100])  # truncated
    data = bytearray((tmp_path / names[2]).read_bytes())
    data[7] ^= 1  # one bit, same size
    (tmp_path / names[2]).write_bytes(bytes(data))
    (tmp_path / (names[3] + cc.SIDECAR)).unlink()  # never sealed (its writer was killed)
    (tmp_path / "xla_compile_cache__gone__XLA_CPU_JIT.pb.sha256").write_text("0\n")  # an orphan sidecar
    assert sorted(p.name for p in cc.prune(tmp_path)) == names[1:4]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[0] + cc.SIDECAR,
                                                                 names[4], names[4] + cc.SIDECAR])


# ---- real runs (the command line, as a user runs it) ------------------------------------------

# A mini-batch run (the held permutation, the fused loop) that is short to train.
FLAGS = ["--steps", "300", "--batch-size", "5", "--target-loss", "0"]


def weights(run_dir: Path) -> list[np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(tf.train.latest_checkpoint(str(run_dir / "checkpoints"))))
    names = sorted(n for n in reader.get_variable_to_shape_map() if "model" in n or "optimizer" in n)
    return [reader.get_tensor(n) for n in names]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) > 4 and all(np.array_equal(x, y) for x, y in zip(a, b))


def entries(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in cache.rglob(cc.ENTRY_GLOB)}


def train(cache: Path | str, out: Path, *flags: str, env: dict | None = None) -> Path:
    p = tfscope("train", "--out", str(out), *FLAGS, *flags, env={cc.ENV: str(cache), **(env or {})})
    assert p.returncode == 0, p.stderr
    assert "Error parsing" not in p.stderr
    return out


@pytest.fixture(scope="module")
def cold(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """One cold run into an empty cache: (the cache directory, the run's weights)."""
    root = tmp_path_factory.mktemp("cold")
    cache = root / "cache"
    run = train(cache, root / "run")
    assert len(entries(cache)) >= 1 and all(cc.prune(d) == [] for d in cache.iterdir())  # written and sealed
    return cache, weights(run)


def test_a_warm_run_loads_the_cache_and_gives_the_same_weights(cold, tmp_path):
    """The warm run writes nothing new (it loaded every program) and its weights equal the cold run's,
    bit for bit. That TensorFlow really reads the entries: the same directory given to TensorFlow
    directly, with its entries truncated, stops a run with an error (what `prune` guards against)."""
    cache, cold_weights = cold
    shutil.copytree(cache, tmp_path / "cache")
    before = entries(tmp_path / "cache")
    assert same(weights(train(tmp_path / "cache", tmp_path / "warm")), cold_weights)
    assert entries(tmp_path / "cache") == before
    (keyed,) = (tmp_path / "cache").iterdir()
    for entry in keyed.glob(cc.ENTRY_GLOB):
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    raw = tfscope("train", "--out", str(tmp_path / "raw"), *FLAGS,
                  env={cc.ENV: "off", "TF_XLA_FLAGS": f"{cc.FLAG}={keyed}"})
    assert raw.returncode != 0


def test_corrupt_entries_are_compiled_again_with_the_same_weights(cold, tmp_path):
    """Every entry truncated or garbled (one byte, same size): the run exits 0 with the cold run's
    weights bit for bit, and the cache holds good, sealed entries again."""
    cache, cold_weights = cold
    shutil.copytree(cache, tmp_path / "cache")
    for i, entry in enumerate(sorted((tmp_path / "cache").rglob(cc.ENTRY_GLOB))):
        data = bytearray(entry.read_bytes())
        if i % 2:
            data[len(data) // 2] ^= 0xFF
            entry.write_bytes(bytes(data))
        else:
            entry.write_bytes(bytes(data[: len(data) // 3]))
    assert same(weights(train(tmp_path / "cache", tmp_path / "again")), cold_weights)
    assert entries(tmp_path / "cache").keys() == entries(cache).keys()
    assert all(cc.prune(d) == [] for d in (tmp_path / "cache").iterdir())


def test_another_network_gets_its_own_entry(cold, tmp_path):
    """Another width in the same cache: a new entry beside the first network's (the first unchanged),
    and the weights a run with --no-compile-cache computes."""
    cache, _ = cold
    shutil.copytree(cache, tmp_path / "cache")
    before = entries(tmp_path / "cache")
    other = weights(train(tmp_path / "cache", tmp_path / "wide", "--hidden", "3"))
    after = entries(tmp_path / "cache")
    assert set(before) < set(after) and all(after[k] == v for k, v in before.items())
    assert not same(other, cold[1])
    (tmp_path / "empty").mkdir()
    assert same(other, weights(train(tmp_path / "empty", tmp_path / "uncached", "--hidden", "3", "--no-compile-cache")))
    assert list((tmp_path / "empty").iterdir()) == []  # --no-compile-cache: not even a directory made

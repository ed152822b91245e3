"""The live network carried inside an export directory, so `verify` can rebuild it later without
the run directory: `live/network.json` (its architecture: sizes, activation, layer spec, input
shape, classes; dtype, names, where it came from) and `live/model` (a checkpoint of the network's
Variables, restored from the run's newest one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import tensorflow as tf

from tfscope.core.errors import RunDirError
from tfscope.core.nn.network import Regressor, rebuild

LIVE = "live"
NETWORK = "network.json"
CHECKPOINT = "model"


def save_live(model: Regressor, directory: Path, info: dict, run_config: Path | None = None) -> None:
    """Write network.json (with `info` merged in) and a checkpoint of the model's Variables."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {**model.architecture(), "dtype": model.dtype.name, **info}
    (directory / NETWORK).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    tf.train.Checkpoint(model=model).write(str(directory / CHECKPOINT))
    if run_config is not None and run_config.is_file():
        shutil.copyfile(run_config, directory / "config.json")


def load_live(directory: Path) -> tuple[Regressor, dict]:
    """Rebuild the exported network from `directory`; RunDirError when missing or unreadable."""
    path = directory / NETWORK
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        model = rebuild(meta, tf.as_dtype(meta["dtype"]))
    except FileNotFoundError:
        raise RunDirError(f"{directory.parent}: not an export directory (no {LIVE}/{NETWORK})") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    try:
        tf.train.Checkpoint(model=model).read(str(directory / CHECKPOINT)).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunDirError(f"{directory / CHECKPOINT}: corrupt or incompatible checkpoint ({first[:160]})") from None
    return model, meta

"""TrainConfig validation: every bad setting raises ConfigError whose one-line message begins with
the field it is about; the command line turns that (and a bad data file) into `tfscope: error:`
on stderr with exit status 2 and no traceback."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import tfscope

from tfscope.core.config import TrainConfig
from tfscope.core.errors import ConfigError, RunDirError

BAD = [
    # (field=value, message prefix naming the field)
    ({"activation": "nope"}, "activation: unknown activation 'nope'"),
    ({"loss": "hinge"}, "loss: unknown loss 'hinge'"),
    ({"optimizer": "rmsprop"}, "optimizer: unknown optimizer 'rmsprop'"),
    ({"mode": "turbo"}, "mode: unknown mode 'turbo'"),
    ({"grad": "magic"}, "grad: unknown grad 'magic'"),
    ({"dtype": "float16"}, "dtype: unknown dtype 'float16'"),
    ({"learning_rate": 0.0}, "learning rate: must be > 0"),
    ({"learning_rate": -0.1}, "learning rate: must be > 0"),
    ({"learning_rate": float("nan")}, "learning rate: must be > 0"),
    ({"learning_rate": float("inf")}, "learning rate: must be > 0"),
    ({"hidden": [2, 0]}, "hidden: width 2 is 0"),
    ({"hidden": [-1]}, "hidden: width 1 is -1"),
    ({"hidden": [2, "3"]}, "hidden: width 2 is '3'"),  # e.g. from a hand-edited config.json
    ({"hidden": [1.5]}, "hidden: width 1 is 1.5"),
    ({"steps": 0}, "steps: must be > 0"),
    ({"steps": -10}, "steps: must be > 0"),
    ({"steps": 2.5}, "steps: must be a whole number"),
    ({"steps_per_call": 0}, "steps per call: must be > 0"),
    ({"checkpoint_every": -1}, "checkpoint every: must be a whole number >= 0"),
    ({"keep_checkpoints": 0}, "keep checkpoints: must be > 0"),
    ({"batch_size": -1}, "batch size: must be >= 0"),
    ({"target_loss": -1.0}, "target loss: must be >= 0"),
    ({"momentum": 1.0, "optimizer": "momentum"}, "momentum: must be in [0, 1)"),
    ({"beta_1": 1.5}, "beta_1: must be in [0, 1)"),
    ({"beta_2": -0.1}, "beta_2: must be in [0, 1)"),
    ({"epsilon": 0.0}, "epsilon: must be > 0"),
    ({"shuffle": "random"}, "shuffle: unknown shuffle 'random'"),
]


@pytest.mark.parametrize("fields,prefix", BAD, ids=[",".join(f) + f"-{i}" for i, (f, _) in enumerate(BAD)])
def test_bad_setting_names_its_field(fields, prefix):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**fields).validate()
    msg = str(e.value)
    assert msg.startswith(prefix), msg
    assert "\n" not in msg


def test_defaults_are_valid_and_round_trip():
    c = TrainConfig()
    assert c.validate() is c
    again = TrainConfig.from_dict(json.loads(c.to_json()))
    assert dataclasses.asdict(again) == dataclasses.asdict(c)
    for act in ("linear", "relu", "tanh", "sigmoid"):
        for loss in ("mse", "half_mse", "mae", "huber"):
            TrainConfig(activation=act, loss=loss).validate()
    for opt in ("sgd", "momentum", "nesterov", "adam"):
        TrainConfig(optimizer=opt, hidden=[], dtype="float64").validate()


def test_from_dict_and_load(tmp_path):
    with pytest.raises(ConfigError, match="^run/config.json: unknown field 'widths'$"):
        TrainConfig.from_dict({"widths": [3]}, "run/config.json")
    with pytest.raises(ConfigError, match="^learning rate: must be > 0"):
        TrainConfig.from_dict({"learning_rate": 0})
    with pytest.raises(ConfigError, match="^hidden: width 1 is 'x'"):
        TrainConfig.from_dict({"hidden": ["x"]})
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(RunDirError) as e:
        TrainConfig.load(p)
    assert str(e.value).startswith(f"{p}: unreadable config")
    p.write_text("[1, 2]")
    with pytest.raises(RunDirError, match="not a JSON object"):
        TrainConfig.load(p)
    with pytest.raises(RunDirError, match="not a run directory"):
        TrainConfig.load(tmp_path / "nowhere" / "config.json")
    p.write_text(TrainConfig(hidden=[3, 3], activation="tanh").to_json())
    assert TrainConfig.load(p).hidden == [3, 3]


def test_a_retired_field_in_an_older_run_is_read_and_ignored():
    """Run directories written before the fused loop compiled whole hold `unroll`; they still load."""
    old = {**dataclasses.asdict(TrainConfig(seed=3)), "unroll": 4}
    assert dataclasses.asdict(TrainConfig.from_dict(old)) == dataclasses.asdict(TrainConfig(seed=3))


def test_a_config_without_shuffle_is_a_sort_run_and_a_resumption_keeps_the_recorded_order():
    """New runs take the Feistel order; a config.json written before the field means the sort order, and
    resuming it with today's defaults is no mismatch: the resumption trains in the run's order."""
    from tfscope.core.config import resume_mismatch, resumed

    assert TrainConfig().shuffle == "feistel"
    before = {k: v for k, v in dataclasses.asdict(TrainConfig(seed=3)).items() if k != "shuffle"}
    old = TrainConfig.from_dict(before)
    assert old.shuffle == "sort"
    assert TrainConfig.from_dict(json.loads(TrainConfig(seed=3).to_json())).shuffle == "feistel"
    assert resume_mismatch(old, TrainConfig(seed=3)) is None
    assert resumed(old, TrainConfig(seed=3, steps=5000)) == TrainConfig(seed=3, steps=5000, shuffle="sort")
    assert resume_mismatch(old, TrainConfig(seed=4)).startswith("seed")


# --- the command line: a few cases only, each is a subprocess that imports TensorFlow ---------------

@pytest.mark.parametrize("args,needle", [
    (["--data", "missing.csv"], "missing.csv: no such file"),
    (["--lr", "0"], "learning rate: must be > 0"),
    (["--activation", "nope"], "activation: unknown activation 'nope'"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    out = tmp_path / "run"
    proc = tfscope("train", "--out", str(out), "--steps", "10", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tfscope: error: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists() or not any(out.iterdir())  # nothing written for a refused run


def test_named_choices_match_their_implementations():
    """core.choices lists names without importing TensorFlow; each must have an implementation."""
    from tfscope.core import choices
    from tfscope.core.nn import activations, losses
    from tfscope.core.optim import optimizers

    assert set(choices.ACTIVATIONS) == set(activations.ACTIVATIONS)
    assert set(choices.LOSSES) == set(losses.LOSSES)
    for name in choices.OPTIMIZERS:
        assert optimizers.make(name, 0.1).name == name


def test_validation_does_not_import_tensorflow():
    """A bad flag is refused before TensorFlow loads (milliseconds, not seconds)."""
    import subprocess
    import sys

    code = ("import sys\nfrom tfscope.core.config import TrainConfig\nfrom tfscope.core.errors import ConfigError\n"
            "TrainConfig().validate()\ntry:\n    TrainConfig(activation='nope').validate()\n"
            "except ConfigError:\n    pass\nassert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

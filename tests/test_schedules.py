"""Learning-rate schedules (core/optim/schedules.py) and the optimiser features in the training loop.

Oracles: Keras' own schedules (keras.optimizers.schedules) evaluated at the same steps, and the
closed-form formula in float64 numpy. Then the trainer: a schedule read from the step Variable
never retraces any mode, every mode follows the same scheduled trajectory, and a run stopped and
resumed ends bit for bit where one uninterrupted run ends, AMSGrad's slot included. Last, every
schedule or feature parameter out of range is refused by TrainConfig naming its field, without
TensorFlow.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.data import tables as data
from tfscope.core.errors import ConfigError
from tfscope.core.optim import schedules
from tfscope.core.train.run import train
from tfscope.core.train.trainer import Trainer

LR = 0.1
STEPS = np.arange(0, 131)  # past every decay, warmup, clamp and boundary below

CASES = {  # id -> (our name, parameters, Keras' schedule given the initial rate's constructor f, closed form)
    "exponential": ("exponential", {"decay_steps": 10, "decay_rate": 0.8},
                    lambda f: keras.optimizers.schedules.ExponentialDecay(f(LR), 10, f(0.8)),
                    lambda s: LR * 0.8 ** (s / 10)),
    "staircase": ("exponential", {"decay_steps": 15, "decay_rate": 0.5, "staircase": True},
                  lambda f: keras.optimizers.schedules.ExponentialDecay(f(LR), 15, f(0.5), staircase=True),
                  lambda s: LR * 0.5 ** np.floor(s / 15)),
    "cosine-warmup": ("cosine", {"decay_steps": 90, "warmup_steps": 20, "alpha": 0.25},
                      lambda f: keras.optimizers.schedules.CosineDecay(f(0.0), 90, 0.25, warmup_target=f(LR),
                                                                       warmup_steps=20),
                      lambda s: np.where(s < 20, LR * s / 20, LR * (0.75 * 0.5 * (
                          1 + np.cos(np.pi * np.minimum(s - 20, 90) / 90)) + 0.25))),
    "cosine": ("cosine", {"decay_steps": 100},
               lambda f: keras.optimizers.schedules.CosineDecay(f(LR), 100),
               lambda s: LR * 0.5 * (1 + np.cos(np.pi * np.minimum(s, 100) / 100))),
    "piecewise": ("piecewise", {"boundaries": [10, 40, 41], "values": [0.5, 0.25, 0.125, 0.03]},
                  lambda f: keras.optimizers.schedules.PiecewiseConstantDecay([10, 40, 41], [f(0.5), f(0.25),
                                                                                             f(0.125), f(0.03)]),
                  lambda s: np.select([s <= 10, s <= 40, s <= 41], [0.5, 0.25, 0.125], 0.03)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_schedule_matches_keras_and_its_formula(case, dtype):
    """Ours at every step, compiled once and fed the step through a Variable (no retrace), equals Keras'
    schedule to the bit: the same ops in the same order in the same dtype (Keras computes in the
    dtype of its initial rate, so float64 gets numpy float64 constants). And it matches the closed
    form in float64 numpy within 1e-12 (float64: a few ulps of pow/cos) or 1e-6 (float32 rounding
    of the rate, the exponent and cos)."""
    name, params, ref, formula = CASES[case]
    f = np.float64 if dtype == "float64" else float
    sched, keras_sched = schedules.make(name, **params), ref(f)
    step = tf.Variable(0, dtype=tf.int64)
    lr = tf.Variable(LR, dtype=dtype)
    fn = tf.function(lambda: sched(step, lr), autograph=False)
    keras_fn = tf.function(lambda: keras_sched(step), autograph=False)  # compiled, as inside Keras' train step
    ours, theirs = [], []
    for s in STEPS:
        step.assign(int(s))
        ours.append(fn().numpy())
        theirs.append(keras_fn().numpy())
    assert fn.experimental_get_tracing_count() == 1
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == np.dtype(dtype) and theirs.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ours, theirs)
    # Against the peak rate, not elementwise: near the end of a cosine 1 + cos(x) cancels, so float32 keeps
    # ~1e-7 of the peak there, not of the (small) value.
    expected = formula(STEPS.astype(np.float64))
    np.testing.assert_allclose(ours, expected, rtol=0, atol={"float32": 1e-6, "float64": 1e-12}[dtype] * 0.5)
    assert len(np.unique(ours)) > 3  # it does change with the step


def test_constant_schedule_is_the_learning_rate_variable():
    lr = tf.Variable(0.25)
    assert float(schedules.make()(tf.constant(7, tf.int64), lr)) == 0.25
    lr.assign(0.5)
    assert float(schedules.make("constant")(tf.constant(7, tf.int64), lr)) == 0.5


# --- in the training loop ---------------------------------------------------------------------------

FEATURES = dict(schedule="cosine", decay_steps=40, warmup_steps=10, alpha=0.1, amsgrad=True, weight_decay=0.01,
                clipnorm=0.5, batch_size=5, target_loss=0.0, learning_rate=0.05, standardize=False)


def weights(trainer: Trainer) -> np.ndarray:
    return np.concatenate([v.numpy().ravel() for v in trainer.model.weights]).astype(np.float64)


@pytest.fixture(scope="module")
def mode_runs() -> dict[str, Trainer]:
    """graph, xla and fused trainers, 60 steps each with every feature on, in calls of different lengths."""
    config = TrainConfig(**FEATURES)
    out = {}
    for mode in ("graph", "xla", "fused"):
        trainer = Trainer(config, data.builtin())
        for n in (7, 13, 1, 20, 19):
            trainer.run_chunk(n, mode)
        out[mode] = trainer
    return out


def test_no_mode_retraces_and_every_mode_follows_the_schedule(mode_runs):
    """graph, xla and fused each trace once over calls of different lengths (the schedule reads
    `iterations`), and reach the same weights after 60 steps, through warmup and decay: within 1e-6
    relative in float32 (XLA fuses and may round differently; test_trainer.py holds the modes' own
    bit-level claims). Raw data, so no gradient is rounding noise that Adam would amplify."""
    ws = {}
    for mode, trainer in mode_runs.items():
        assert trainer.step == 60
        assert trainer.compiled(mode).experimental_get_tracing_count() == 1, mode
        ws[mode] = weights(trainer)
        # Past warmup (10) + decay (40) the rate sits at alpha * lr.
        assert float(trainer.optimizer.current_learning_rate()) == pytest.approx(0.1 * 0.05, rel=1e-6)
    scale = np.max(np.abs(ws["graph"]))
    for mode in ("xla", "fused"):
        assert np.max(np.abs(ws[mode] - ws["graph"])) / scale <= 1e-6, mode


def test_resume_with_schedule_and_amsgrad_equals_one_run(tmp_path, mode_runs):
    """N steps, stop, resume to N + M: the same weights and optimiser state (v_hat included), bit for
    bit, as N + M steps in one go (the fused run above). The stop (step 33) falls mid-cosine, the end
    (60) past its clamp; mini-batches, so the data position resumes too."""
    whole = mode_runs["fused"]
    config = TrainConfig(**FEATURES, steps=33, checkpoint_every=20)
    train(config, tmp_path / "split")
    resumed = train(dataclasses.replace(config, steps=60), tmp_path / "split", resume=True).trainer
    assert resumed.step == whole.step == 60
    assert np.array_equal(weights(resumed), weights(whole))
    names = [v.name for v in resumed.optimizer.variables]
    assert sum("v_hat" in n for n in names) == len(resumed.model.weights)
    for a, b in zip(resumed.optimizer.variables, whole.optimizer.variables):
        assert a.name == b.name and np.array_equal(a.numpy(), b.numpy()), a.name


# --- bad settings --------------------------------------------------------------------------------------

BAD = [
    ({"schedule": "linear"}, "schedule: unknown schedule 'linear'"),
    ({"schedule": "exponential", "decay_steps": 10, "decay_rate": -0.5}, "decay rate: must be in (0, 1]"),
    ({"schedule": "exponential", "decay_steps": 10, "decay_rate": 1.5}, "decay rate: must be in (0, 1]"),
    ({"schedule": "exponential", "decay_steps": 10}, "decay rate: the exponential schedule needs"),
    ({"schedule": "exponential", "decay_rate": 0.5}, "decay steps: the exponential schedule needs"),
    ({"schedule": "cosine", "decay_steps": -3}, "decay steps: must be a whole number >= 0"),
    ({"schedule": "cosine"}, "decay steps: the cosine schedule needs decay steps > 0"),
    ({"schedule": "cosine", "decay_steps": 10, "warmup_steps": 2000}, "warmup steps: 2000 is not below the run's"),
    ({"schedule": "cosine", "decay_steps": 10, "warmup_steps": -1}, "warmup steps: must be a whole number >= 0"),
    ({"schedule": "cosine", "decay_steps": 10, "alpha": 1.5}, "alpha: must be in [0, 1]"),
    ({"schedule": "piecewise", "boundaries": [10, 10], "values": [1.0, 0.5, 0.1]}, "boundaries: must increase"),
    ({"schedule": "piecewise", "boundaries": [10, 5], "values": [1.0, 0.5, 0.1]}, "boundaries: must increase"),
    ({"schedule": "piecewise", "boundaries": [-1], "values": [1.0, 0.5]}, "boundaries: boundary 1: must be"),
    ({"schedule": "piecewise", "boundaries": [10, 20], "values": [1.0, 0.5]},
     "values: must be one more than the boundaries (3), got 2"),
    ({"schedule": "piecewise", "boundaries": [10], "values": [1.0, 0.0]}, "values: value 2 must be a rate > 0"),
    ({"schedule": "piecewise", "values": [1.0]}, "boundaries: the piecewise schedule needs"),
    ({"warmup_steps": 5}, "warmup steps: only the cosine schedule uses it"),
    ({"schedule": "piecewise", "boundaries": [5], "values": [1.0, 0.5], "decay_rate": 0.5},
     "decay rate: only the exponential schedule uses it"),
    ({"weight_decay": -0.01}, "weight decay: must be >= 0"),
    ({"weight_decay": float("nan")}, "weight decay: must be >= 0"),
    ({"clipnorm": 0.0}, "clipnorm: must be > 0"),
    ({"clipnorm": -1.0}, "clipnorm: must be > 0"),
    ({"clipvalue": 0.0}, "clipvalue: must be > 0"),
    ({"global_clipnorm": float("inf")}, "global clipnorm: must be > 0"),
    ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "clipnorm: only one of clipnorm, clipvalue and global clipnorm"),
    ({"amsgrad": True, "optimizer": "sgd"}, "amsgrad: only Adam has it"),
    ({"rule": "delta", "hidden": [], "weight_decay": 0.1}, "rule: the delta rule updates the weights itself"),
]


@pytest.mark.parametrize("fields,prefix", BAD, ids=[f"{i}-{','.join(f)}" for i, (f, _) in enumerate(BAD)])
def test_bad_setting_names_its_field(fields, prefix):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**fields).validate()
    assert str(e.value).startswith(prefix) and "\n" not in str(e.value), str(e.value)


def test_python_api_refuses_the_same():
    with pytest.raises(ConfigError, match="^boundaries: must increase"):
        schedules.make("piecewise", boundaries=[3, 2], values=[1.0, 0.5, 0.1])
    with pytest.raises(ConfigError, match="^decay rate: must be in"):
        schedules.make("exponential", decay_steps=5, decay_rate=-1.0)


def test_cli_refuses_bad_schedule_flags_before_tensorflow_loads(tmp_path):
    """The flags reach TrainConfig's validation first: exit 2, and TensorFlow never imported."""
    import subprocess
    import sys

    code = ("import sys\nfrom tfscope.cli import main\n"
            "for a in (['--clipnorm', '0'], ['--schedule', 'piecewise', '--boundaries', '10', '--values', '1'],\n"
            "          ['--schedule', 'exponential', '--decay-steps', '5', '--decay-rate', '-1'],\n"
            "          ['--amsgrad', '--optimizer', 'sgd']):\n"
            "    try:\n        main(['train', '--out', 'never', '--steps', '5', *a])\n"
            "    except SystemExit as e:\n        assert e.code == 2, e.code\n"
            "    else:\n        raise AssertionError(a)\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[2].strip() for line in lines] == ["clipnorm", "values", "decay rate", "amsgrad"], lines
    assert not any(tmp_path.iterdir())  # nothing written

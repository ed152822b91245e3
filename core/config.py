"""Everything needed to rebuild a run, as one validated record (written to RUN_DIR/config.json)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfscope.core import choices
from tfscope.core.choices import DTYPES, GRADS, MODES, STRATEGIES  # noqa: F401  (re-exported)
from tfscope.core.errors import ConfigError, RunDirError

# Default checkpoint interval, in seconds of training: a save costs ~15 ms, so at most 0.2% of the
# time, and a kill loses at most this much work. A step-count interval made fast runs save-bound.
CHECKPOINT_SECONDS = 10.0

SHUFFLES = ("feistel", "sort")
# The order a run recorded without a `shuffle` field was trained with (every run before the field existed).
RECORDED_SHUFFLE = "sort"


@dataclass
class TrainConfig:
    data: str | None = None  # CSV path; None = the lecture's 19 built-in rows
    target: str | None = None  # target column name or index; None = the last column
    features: list[str] | None = None  # feature columns; None = every column but the target
    hidden: list[int] = field(default_factory=lambda: [2])  # hidden widths, each >= 1; [] = one Dense layer
    activation: str = "linear"  # hidden activation: linear, relu, tanh, sigmoid (output is linear)
    loss: str = "mse"  # mse, half_mse (the lecture's 1/2m), mae, huber (delta 1)
    optimizer: str = "adam"  # sgd, momentum, nesterov, adam
    learning_rate: float = 0.05  # > 0; a Variable, so changing it never retraces
    momentum: float = 0.9  # in [0, 1), for momentum and nesterov
    beta_1: float = 0.9  # Adam, in [0, 1)
    beta_2: float = 0.999  # Adam, in [0, 1)
    epsilon: float = 1e-7  # Adam, > 0
    amsgrad: bool = False  # Adam only: divide by the running maximum of v (its own slot, v_hat), Keras' amsgrad
    weight_decay: float = 0.0  # decoupled (Keras'): var -= var * weight_decay * lr before each update; >= 0, 0 = off
    clipnorm: float | None = None  # clip each Variable's gradient to this L2 norm, > 0; None = off
    clipvalue: float | None = None  # clip every gradient element to [-clipvalue, clipvalue], > 0; None = off
    global_clipnorm: float | None = None  # scale all gradients so their joint L2 norm is <= this, > 0; None = off
    #                                       (at most one of clipnorm, clipvalue, global_clipnorm)
    schedule: str = "constant"  # lr as a function of the step: constant, exponential, cosine, piecewise
    #                             (core/optim/schedules.py, Keras' formulas; the step is the optimiser's counter)
    decay_steps: int = 0  # exponential: steps per factor decay_rate; cosine: steps of the cosine phase; > 0 for
    #                       those two (0 = unset; the others refuse it)
    decay_rate: float = 0.0  # exponential: lr * decay_rate ** (step / decay_steps), in (0, 1] (0 = unset)
    staircase: bool = False  # exponential: whole decay_steps only (the exponent floored)
    warmup_steps: int = 0  # cosine: linear warmup from 0 to learning_rate first, >= 0 and < steps
    alpha: float = 0.0  # cosine: the final rate as a fraction of learning_rate, in [0, 1]
    boundaries: list[int] = field(default_factory=list)  # piecewise: the steps after which the rate changes,
    #                                                      whole numbers >= 0, strictly increasing
    values: list[float] = field(default_factory=list)  # piecewise: the rates, len(boundaries) + 1, each > 0
    #                                                  (they replace learning_rate)
    steps: int = 2000  # total step budget of the run (a resumed run continues up to it), >= 1
    batch_size: int = 0  # rows per step; 0 or >= rows = full batch; else seeded shuffle, remainder dropped
    shuffle: str = "feistel"  # the epochs' row order (core/train/shuffle.py): feistel, or sort (the order of runs
    #                           recorded before this field; a config.json without it means sort). A resumed run
    #                           keeps the order it was recorded with
    mode: str = "fused"  # eager, graph (tf.function), xla (jit_compile, 1 step/call), fused (K steps/call)
    steps_per_call: int = 100_000  # fused: the most steps one compiled call runs (its loss buffer size), >= 1
    target_loss: float = 1e-10  # stop once the training loss is <= this (0 = never); standardised units
    grad: str = "tape"  # gradient route in the step: tape (autodiff) or chain (hand-written backprop)
    rule: str = "backprop"  # backprop (any network), or one Dense layer: delta, lms, perceptron, hebbian, oja
    dtype: str = "float32"  # float32 or float64, for weights, optimiser state and data
    seed: int = 0  # initial weights and batch order; the same seed gives the same weights, bit for bit
    standardize: bool = True  # train on (x - mean) / std and (z - mean) / std; the model still maps raw x to raw z
    checkpoint_every: int = 0  # steps between checkpoints, >= 0; 0 = every CHECKPOINT_SECONDS of training
    #                            (fused: at call boundaries), and always at the end
    keep_checkpoints: int = 3  # checkpoints kept on disk, >= 1
    strategy: str = "none"  # none (one device), mirrored (GPUs or logical CPUs), multiworker (TF_CONFIG)
    devices: int = 1  # replicas on this machine, >= 1; > 1 needs strategy mirrored (or GPUs with multiworker)
    task: str = "regress"  # regress (z is a number) or classify (the target holds class labels; output = logits)
    net: str | None = None  # a layer spec (core/nn/netspec.py), e.g. conv:8x3,pool:2,flatten,dense; None = hidden
    val_fraction: float = 0.0  # rows held out for validation, in [0, 1); seeded, stratified when classifying
    classes: list[str] | None = None  # classify: the labels in index order, recorded by train (None = not yet)

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first field out of range; return self when all are valid."""
        def positive(name: str, value: float) -> None:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.replace('_', ' ')}: must be > 0, got {value}")

        positive("learning_rate", self.learning_rate)
        if not (isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0):
            raise ConfigError(f"checkpoint every: must be a whole number >= 0 (0 = every {CHECKPOINT_SECONDS:g} s), "
                              f"got {self.checkpoint_every}")
        for name in ("steps", "steps_per_call", "keep_checkpoints"):
            positive(name, getattr(self, name))
            if int(getattr(self, name)) != getattr(self, name):
                raise ConfigError(f"{name.replace('_', ' ')}: must be a whole number, got {getattr(self, name)}")
        if not (isinstance(self.devices, int) and self.devices >= 1):
            raise ConfigError(f"devices: must be a whole number >= 1, got {self.devices}")
        if self.devices > 1 and self.strategy == "none":
            raise ConfigError(f"devices: {self.devices} devices need a strategy (mirrored or multiworker)")
        if self.batch_size < 0:
            raise ConfigError(f"batch size: must be >= 0 (0 = full batch), got {self.batch_size}")
        for i, w in enumerate(self.hidden):
            if not (isinstance(w, int) and w >= 1):
                raise ConfigError(f"hidden: width {i + 1} is {w!r}; every width must be a whole number >= 1")
        if not (math.isfinite(self.target_loss) and self.target_loss >= 0):
            raise ConfigError(f"target loss: must be >= 0, got {self.target_loss}")
        for label, value in (("momentum", self.momentum), ("beta_1", self.beta_1), ("beta_2", self.beta_2)):
            if not 0 <= value < 1:
                raise ConfigError(f"{label}: must be in [0, 1), got {value}")
        if not self.epsilon > 0:
            raise ConfigError(f"epsilon: must be > 0, got {self.epsilon}")
        self._validate_optimizer_features()
        self._validate_task()
        choices.check("activation", self.activation, choices.ACTIVATIONS)
        choices.check_rule(self.rule, self.hidden, self.strategy)
        named = (("loss", self.loss, choices.LOSSES), ("optimizer", self.optimizer, choices.OPTIMIZERS),
                 ("mode", self.mode, MODES), ("grad", self.grad, GRADS), ("dtype", self.dtype, DTYPES),
                 ("strategy", self.strategy, STRATEGIES), ("shuffle", self.shuffle, SHUFFLES))
        for name, value, options in named:
            choices.check(name, value, options)
        return self

    def _validate_task(self) -> None:
        """Task, loss, net spec and held-out fraction: checked without TensorFlow."""
        choices.check("task", self.task, choices.TASKS)
        classify = self.task == "classify"
        if classify != (self.loss in choices.CLASSIFICATION_LOSSES):
            want = choices.CLASSIFICATION_LOSSES if classify else [x for x in choices.LOSSES
                                                                  if x not in choices.CLASSIFICATION_LOSSES]
            raise ConfigError(f"loss: {self.loss} does not fit task {self.task}; choose one of {', '.join(want)}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ConfigError(f"val fraction: must be in [0, 1), got {self.val_fraction}")
        if self.net is not None:
            from tfscope.core.nn import netspec

            netspec.parse(self.net)
            if self.rule != "backprop":
                raise ConfigError(f"rule: the {self.rule} rule trains a single Dense layer; drop --net")
        if (classify or self.net is not None) and self.strategy != "none":
            raise ConfigError(f"strategy: {'--task classify' if classify else '--net'} runs on one device; "
                              f"use strategy none, got {self.strategy!r}")

    def _validate_optimizer_features(self) -> None:
        if not isinstance(self.amsgrad, bool):
            raise ConfigError(f"amsgrad: must be true or false, got {self.amsgrad!r}")
        if self.amsgrad and self.optimizer != "adam":
            raise ConfigError(f"amsgrad: only Adam has it (optimizer adam), got optimizer {self.optimizer!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ConfigError(f"weight decay: must be >= 0 (0 = off), got {self.weight_decay}")
        clips = {"clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global clipnorm": self.global_clipnorm}
        for name, value in clips.items():
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be > 0 (omit it for no clipping), got {value}")
        if sum(v is not None for v in clips.values()) > 1:
            raise ConfigError("clipnorm: only one of clipnorm, clipvalue and global clipnorm can be set, got "
                              + ", ".join(f"{k} {v}" for k, v in clips.items() if v is not None))
        if self.rule != "backprop" and (self.weight_decay or any(v is not None for v in clips.values())
                                        or self.amsgrad):
            raise ConfigError(f"rule: the {self.rule} rule updates the weights itself; weight decay, clipping and "
                              "amsgrad are backprop's (rule backprop)")
        check_schedule(self.schedule, self.decay_steps, self.decay_rate, self.staircase, self.warmup_steps,
                       self.alpha, self.boundaries, self.values)
        if self.schedule == "cosine" and self.warmup_steps >= self.steps:
            raise ConfigError(f"warmup steps: {self.warmup_steps} is not below the run's {self.steps} steps, so the "
                              "cosine phase would never start")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {"shuffle": RECORDED_SHUFFLE, **{k: v for k, v in d.items() if k not in RETIRED_FIELDS}}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field {unknown[0]!r}")
        try:
            return cls(**d).validate()
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{p.parent}: not a run directory (no config.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirError(f"{p}: unreadable config ({e})") from None
        if not isinstance(d, dict):
            raise RunDirError(f"{p}: unreadable config (not a JSON object)")
        return cls.from_dict(d, str(p))


def check_schedule(schedule: str, decay_steps: int, decay_rate: float, staircase: bool, warmup_steps: int,
                   alpha: float, boundaries: list[int], values: list[float]) -> None:
    """Raise ConfigError naming the first schedule parameter out of range, or set for a schedule that
    does not use it (core/optim/schedules.py calls this too, so its Python API refuses the same)."""
    choices.check("schedule", schedule, choices.SCHEDULES)

    def whole(name: str, value: object, low: int) -> None:
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise ConfigError(f"{name}: must be a whole number >= {low}, got {value!r}")

    whole("decay steps", decay_steps, 0)
    whole("warmup steps", warmup_steps, 0)
    if not isinstance(staircase, bool):
        raise ConfigError(f"staircase: must be true or false, got {staircase!r}")
    if not (isinstance(decay_rate, (int, float)) and 0 <= decay_rate <= 1):
        raise ConfigError(f"decay rate: must be in (0, 1], got {decay_rate}")
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ConfigError(f"alpha: must be in [0, 1], got {alpha}")
    uses = {"decay steps": ("exponential", "cosine"), "decay rate": ("exponential",), "staircase": ("exponential",),
            "warmup steps": ("cosine",), "alpha": ("cosine",), "boundaries": ("piecewise",),
            "values": ("piecewise",)}
    given = {"decay steps": decay_steps != 0, "decay rate": decay_rate != 0, "staircase": staircase,
             "warmup steps": warmup_steps != 0, "alpha": alpha != 0, "boundaries": len(boundaries) > 0,
             "values": len(values) > 0}
    for name, used_by in uses.items():
        if given[name] and schedule not in used_by:
            raise ConfigError(f"{name}: only the {' and '.join(used_by)} schedule uses it, got schedule {schedule!r}")
    if schedule in ("exponential", "cosine") and decay_steps == 0:
        raise ConfigError(f"decay steps: the {schedule} schedule needs decay steps > 0")
    if schedule == "exponential" and decay_rate == 0:
        raise ConfigError("decay rate: the exponential schedule needs a decay rate in (0, 1]")
    if schedule == "piecewise":
        if not boundaries:
            raise ConfigError("boundaries: the piecewise schedule needs at least one boundary")
        for i, b in enumerate(boundaries):
            whole(f"boundaries: boundary {i + 1}", b, 0)
            if i and b <= boundaries[i - 1]:
                raise ConfigError(f"boundaries: must increase strictly, got {boundaries[i - 1]} then {b}")
        if len(values) != len(boundaries) + 1:
            raise ConfigError(f"values: must be one more than the boundaries ({len(boundaries) + 1}), "
                              f"got {len(values)}")
        for i, v in enumerate(values):
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
                raise ConfigError(f"values: value {i + 1} must be a rate > 0, got {v!r}")


# Fields older run directories hold that no longer change anything: read and ignored. `unroll` ran several
# steps per while-loop iteration, which stopped paying once XLA compiled the whole loop (core/xla_flags.py).
RETIRED_FIELDS = frozenset({"unroll"})

# Fields that may differ between a run and its resumption: they do not change the trajectory.
RESUMABLE_FIELDS = ("steps", "steps_per_call", "checkpoint_every", "keep_checkpoints", "mode", "target_loss",
                    "strategy", "devices")


# Fields a resumption takes from the run, whatever it asks: the run's own record of how it was trained.
RECORDED_FIELDS = ("shuffle",)


def resume_mismatch(old: TrainConfig, new: TrainConfig) -> str | None:
    """The first field that differs between a run's config and a resumption's, or None."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUMABLE_FIELDS or f.name in RECORDED_FIELDS:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            return f"{f.name} (run has {a!r}, resume asks {b!r})"
    return None


def resumed(old: TrainConfig, new: TrainConfig) -> TrainConfig:
    """The config a resumption of run `old` trains with: `new`, with the fields the run recorded (its row
    order: a run recorded with the sort order goes on with it)."""
    return dataclasses.replace(new, **{name: getattr(old, name) for name in RECORDED_FIELDS})

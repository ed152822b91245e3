"""Oracle tests for core.optimizers: Keras' own optimisers on the same gradient sequence.

Relative difference, here and below: max|ours - keras| / max(max|keras|, tiny), over every element
of every Variable (and slot). Tolerances from the issue: 1e-6 in float32 (a few float32 ulps of
rounding may accumulate over 100 steps) and 1e-12 in float64.

Keras keeps its learning rate in a float32 Variable whatever the model's dtype. A float64 run of
ours with lr = 0.01 would use 0.01 in float64 while Keras used float32(0.01), a relative change of
~2e-10 in every step: that is a difference of inputs, not of arithmetic. The learning rates below
are powers of two (exact in float32), so the float64 comparison tests arithmetic only.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfscope.core.errors import ConfigError
from tfscope.core.optim import optimizers, schedules

pytestmark = pytest.mark.slow(seconds=84)  # the file's test time under -n 2; see conftest

SHAPES = [(3, 4), (4,), (1,), (5, 2)]  # like w0, b0, a scalar-ish bias, w1
STEPS = 100
TOL = {"float32": 1e-6, "float64": 1e-12}
LR = 2.0**-7  # exactly representable in float32
TINY = 1e-30


def rel_diff(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    a = np.concatenate([np.ravel(x) for x in ours]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in ref]).astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), TINY))


def pair(name: str, dtype: str, **kw) -> tuple[optimizers.Optimizer, keras.optimizers.Optimizer]:
    """Our optimiser and Keras' with the same hyperparameters."""
    ours = optimizers.make(name, LR, tf.as_dtype(dtype), **kw)
    if name == "sgd":
        ref = keras.optimizers.SGD(LR)
    elif name in ("momentum", "nesterov"):
        ref = keras.optimizers.SGD(LR, momentum=kw.get("momentum", 0.9), nesterov=name == "nesterov")
    else:
        ref = keras.optimizers.Adam(LR, beta_1=kw.get("beta_1", 0.9), beta_2=kw.get("beta_2", 0.999),
                                    epsilon=kw.get("epsilon", 1e-7))
    return ours, ref


def keras_slots(ref: keras.optimizers.Optimizer) -> list[np.ndarray]:
    if isinstance(ref, keras.optimizers.Adam):
        vs = list(ref._momentums) + list(ref._velocities) + list(getattr(ref, "_velocity_hats", None) or [])
    else:
        vs = list(ref.momentums)
    return [np.asarray(v.numpy()) for v in vs]


def run_both(name: str, dtype: str, seed: int = 0, step_fn=None, **kw):
    """Apply the same seeded random gradients for STEPS steps to both; return (ours, ref, our vars, ref vars)."""
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=s) for s in SHAPES]
    mine = [tf.Variable(w, dtype=dtype, name=f"v{i}") for i, w in enumerate(init)]
    theirs = [keras.Variable(w, dtype=dtype) for w in init]
    ours, ref = pair(name, dtype, **kw)
    ours.build(mine)
    ref.build(theirs)
    apply = step_fn(ours, mine) if step_fn else (lambda g: ours.apply_gradients(g, mine))
    # Keras' step compiled (tf.function, as its fit() runs it): the same arithmetic, less dispatch time.
    ref_apply = tf.function(lambda g: ref.apply_gradients(zip(g, theirs)), autograph=False)
    for _ in range(STEPS):
        # Gradients of mixed scale (some tiny, some large) so Adam's epsilon and v both matter.
        g = [rng.normal(size=s) * rng.choice([1e-3, 1.0, 30.0]) for s in SHAPES]
        apply([tf.constant(x, dtype) for x in g])
        ref_apply([tf.constant(x, dtype) for x in g])
    return ours, ref, mine, theirs


CASES = [("sgd", {}), ("momentum", {}), ("nesterov", {}), ("adam", {}),
         ("momentum", {"momentum": 0.5}), ("adam", {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-4})]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(map(str, k.values())) or 'default'}"
                                                for n, k in CASES])
def test_matches_keras_after_100_steps(name, kw, dtype):
    ours, ref, mine, theirs = run_both(name, dtype, **kw)
    assert int(ours.iterations.numpy()) == int(ref.iterations.numpy()) == STEPS
    assert all(v.dtype == tf.as_dtype(dtype) for v in mine)
    assert rel_diff([v.numpy() for v in mine], [np.asarray(v.numpy()) for v in theirs]) <= TOL[dtype]
    # The state too, not only its effect: momentum / Adam's m and v slot by slot.
    if ours.slot_names:
        our_slots = [v.numpy() for s in ours.slot_names for v in ours.slots[s]]
        assert rel_diff(our_slots, keras_slots(ref)) <= TOL[dtype]
    # And the weights moved: a no-op optimiser would pass nothing above except by luck.
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s) for s in SHAPES]
    assert rel_diff([v.numpy() for v in mine], init) > 1e-3


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam"])
def test_compiled_step_matches_keras(name, dtype, jit):
    """The same update inside tf.function, with and without XLA (the trainer's graph, xla and fused
    modes). XLA fuses the arithmetic and may round differently (measured: 1.9e-7 in float32, 4e-16
    in float64): the same tolerances hold."""

    def compiled(opt, variables):
        return tf.function(lambda g: opt.apply_gradients(g, variables), autograph=False, jit_compile=jit)

    _, _, mine, theirs = run_both(name, dtype, seed=1, step_fn=compiled)
    assert rel_diff([v.numpy() for v in mine], [np.asarray(v.numpy()) for v in theirs]) <= TOL[dtype]


@pytest.mark.parametrize("name,slots", [("sgd", ()), ("momentum", ("momentum",)), ("nesterov", ("momentum",)),
                                        ("adam", ("m", "v"))])
def test_build_creates_named_slots_once(name, slots):
    variables = [tf.Variable(np.zeros(s), dtype=tf.float32, name=f"layer/w{i}") for i, s in enumerate(SHAPES)]
    opt = optimizers.make(name, LR)
    assert not opt.built and opt.slots == {}
    opt.build(variables)
    assert opt.built and tuple(opt.slots) == slots
    for slot in slots:
        assert len(opt.slots[slot]) == len(variables)
        for s, v in zip(opt.slots[slot], variables):
            assert s.shape == v.shape and s.dtype == v.dtype and not s.trainable
            assert np.all(s.numpy() == 0)
            # Named for the slot and the model Variable it shadows, under the optimiser's scope.
            assert s.name.startswith(f"{name}/{slot}_layer_w"), s.name
    names = [v.name for v in opt.variables]
    assert len(names) == len(set(names)), "slot Variable names must be unique"
    expected = 2 + len(slots) * len(variables)  # learning_rate, iterations, slots
    assert len(opt.variables) == expected

    # Steps (eager and compiled) update the same Variable objects in place and create none.
    before = [id(v) for v in opt.variables]
    step = tf.function(lambda g: opt.apply_gradients(g, variables), autograph=False)
    grads = [tf.ones(s) for s in SHAPES]
    opt.apply_gradients(grads, variables)
    step(grads)
    step(grads)
    assert [id(v) for v in opt.variables] == before
    assert int(opt.iterations.numpy()) == 3
    for slot in slots:
        assert all(np.any(s.numpy() != 0) for s in opt.slots[slot])

    # Inside the trace: assignments to existing Variables only, no Variable created, no slot read by value
    # and rebound: every state change is an Assign*VariableOp.
    graph = step.get_concrete_function([tf.TensorSpec(s) for s in SHAPES]).graph
    ops = {op.type for op in graph.get_operations()}
    assert "VarHandleOp" not in ops and "VariableV2" not in ops
    assigns = [op for op in graph.get_operations() if op.type.startswith("Assign")]
    # One assign per model Variable, one per slot Variable, one for the step counter.
    assert len(assigns) == len(variables) * (1 + len(slots)) + 1


def test_apply_gradients_builds_lazily_and_iterations_count():
    v = tf.Variable([1.0, 2.0])
    opt = optimizers.make("adam", LR)
    for i in range(5):
        opt.apply_gradients([tf.constant([0.5, -0.5])], [v])
        assert int(opt.iterations.numpy()) == i + 1
    assert opt.built and len(opt.slots["m"]) == 1
    assert opt.iterations.dtype == tf.int64


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_learning_rate_change_does_not_retrace(name):
    v = tf.Variable([1.0, -1.0])
    opt = optimizers.make(name, 0.5)
    opt.build([v])
    step = tf.function(lambda g: opt.apply_gradients([g], [v]), autograph=False)
    g = tf.constant([1.0, 2.0])
    step(g)
    for lr in (0.25, 2.0**-10, 3.0):
        opt.learning_rate.assign(lr)
        step(g)
    assert step.experimental_get_tracing_count() == 1
    if name == "sgd":
        # The new value was used, not the traced one: the last step moved v by exactly -3 * g.
        before = v.numpy().copy()
        step(g)
        np.testing.assert_array_equal(v.numpy(), before - 3.0 * g.numpy())


def test_sgd_first_step_by_hand():
    """Independent of Keras: one SGD step is w - lr * g exactly (lr a power of two)."""
    v = tf.Variable([1.0, -2.0, 0.5], dtype=tf.float64)
    opt = optimizers.make("sgd", 0.25, tf.float64)
    opt.apply_gradients([tf.constant([4.0, 1.0, -2.0], tf.float64)], [v])
    np.testing.assert_array_equal(v.numpy(), [0.0, -2.25, 1.0])


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_state_spec(name, dtype):
    variables = [tf.Variable(tf.zeros(s, dtype), name=f"w{i}") for i, s in enumerate(SHAPES)]
    opt = optimizers.make(name, LR, dtype)
    opt.build(variables)
    spec = opt.state_spec()
    assert spec[0] == optimizers.SlotSpec("iterations", (), "int64")
    assert spec[1] == optimizers.SlotSpec("learning_rate", (), dtype.name)
    slots = spec[2:]
    assert len(slots) == len(opt.slot_names) * len(variables)
    actual = [v for s in opt.slot_names for v in opt.slots[s]]
    for rec, var in zip(slots, actual):
        assert isinstance(rec, optimizers.SlotSpec)
        assert rec.name == var.name.split(":")[0]
        assert rec.shape == tuple(var.shape) and rec.dtype == dtype.name
    assert [r.shape for r in slots] == [tuple(s) for _ in opt.slot_names for s in SHAPES]


@pytest.mark.parametrize("kwargs,field", [
    ({"name": "sgd", "learning_rate": 0.0}, "learning rate"),
    ({"name": "adam", "learning_rate": -1e-3}, "learning rate"),
    ({"name": "sgd", "learning_rate": float("nan")}, "learning rate"),
    ({"name": "momentum", "learning_rate": 0.1, "momentum": 1.0}, "momentum"),
    ({"name": "nesterov", "learning_rate": 0.1, "momentum": -0.1}, "momentum"),
    ({"name": "adam", "learning_rate": 0.1, "beta_1": 1.0}, "beta_1"),
    ({"name": "adam", "learning_rate": 0.1, "beta_2": -0.5}, "beta_2"),
    ({"name": "adam", "learning_rate": 0.1, "epsilon": 0.0}, "epsilon"),
    ({"name": "rmsprop", "learning_rate": 0.1}, "optimizer"),
    ({"name": "adam", "learning_rate": 0.1, "weight_decay": -0.1}, "weight decay"),
    ({"name": "sgd", "learning_rate": 0.1, "clipnorm": 0.0}, "clipnorm"),
    ({"name": "sgd", "learning_rate": 0.1, "clipvalue": -1.0}, "clipvalue"),
    ({"name": "sgd", "learning_rate": 0.1, "global_clipnorm": float("nan")}, "global_clipnorm"),
    ({"name": "sgd", "learning_rate": 0.1, "clipnorm": 1.0, "clipvalue": 1.0}, "clipnorm"),
    ({"name": "momentum", "learning_rate": 0.1, "amsgrad": True}, "amsgrad"),
])
def test_bad_hyperparameters_raise_config_error(kwargs, field):
    with pytest.raises(ConfigError) as e:
        optimizers.make(**kwargs)
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg


def test_slot_names_unique_for_a_real_network():
    """Slots are named after the model Variables they shadow, so those names must be unique too."""
    from tfscope.core.nn.network import Regressor

    model = Regressor([2, 3, 3, 1], "relu")
    opt = optimizers.make("adam", LR)
    opt.build(model.weights)
    names = [r.name for r in opt.state_spec()]
    assert len(names) == len(set(names)) == 2 + 2 * len(model.weights)
    assert "adam/m_regressor_mlp_dense_1_w" in names


# --- Keras' optional features and learning-rate schedules --------------------------------------------

# Schedules as (name, parameters), over the 100 steps: several decays, a staircase, the warmup and the
# clamp at alpha after warmup + decay_steps, every piece of a piecewise schedule.
SCHEDULES = {
    "exponential": ("exponential", {"decay_steps": 10, "decay_rate": 0.8}),
    "staircase": ("exponential", {"decay_steps": 15, "decay_rate": 0.5, "staircase": True}),
    "cosine-warmup": ("cosine", {"decay_steps": 60, "warmup_steps": 10, "alpha": 0.1}),
    "cosine": ("cosine", {"decay_steps": 80}),
    "piecewise": ("piecewise", {"boundaries": [20, 50], "values": [LR, LR / 2, LR / 8]}),
}


def keras_schedule(name: str, params: dict, dtype: str, lr: float):
    """Keras' schedule for ours, its constants in `dtype` (Keras computes a schedule in the dtype of its
    initial rate: a Python float is float32, so float64 needs numpy float64 constants)."""
    f = np.float64 if dtype == "float64" else float
    s = keras.optimizers.schedules
    if name == "exponential":
        return s.ExponentialDecay(f(lr), params["decay_steps"], f(params["decay_rate"]), params.get("staircase", False))
    if name == "cosine":
        if params.get("warmup_steps", 0):
            return s.CosineDecay(f(0.0), params["decay_steps"], params.get("alpha", 0.0), warmup_target=f(lr),
                                 warmup_steps=params["warmup_steps"])
        return s.CosineDecay(f(lr), params["decay_steps"], params.get("alpha", 0.0))
    return s.PiecewiseConstantDecay(params["boundaries"], [f(v) for v in params["values"]])


def feature_pair(name: str, dtype: str, schedule: str | None, **features):
    """Our optimiser and Keras' with the same features (Keras' names) and schedule."""
    sched = None
    lr = LR
    if schedule is not None:
        sname, params = SCHEDULES[schedule]
        sched = schedules.make(sname, **params)
        lr = keras_schedule(sname, params, dtype, LR)
    ours = optimizers.make(name, LR, tf.as_dtype(dtype), schedule=sched, **features)
    kw = {k: v for k, v in features.items() if k != "amsgrad"}
    if name == "sgd":
        ref = keras.optimizers.SGD(lr, **kw)
    elif name in ("momentum", "nesterov"):
        ref = keras.optimizers.SGD(lr, momentum=0.9, nesterov=name == "nesterov", **kw)
    else:
        ref = keras.optimizers.Adam(lr, amsgrad=features.get("amsgrad", False), **kw)
    return ours, ref


def gradient_sequence(seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Seeded initial values and STEPS gradients of mixed scale (some tiny, some large)."""
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=s) for s in SHAPES]
    return init, [[rng.normal(size=s) * rng.choice([1e-3, 1.0, 30.0]) for s in SHAPES] for _ in range(STEPS)]


def run_ours(opt: optimizers.Optimizer, dtype: str, seed: int, jit: bool = False) -> list[tf.Variable]:
    """Our optimiser over the seeded sequence, its step compiled once (and never retraced)."""
    init, grads = gradient_sequence(seed)
    mine = [tf.Variable(w, dtype=dtype, name=f"v{i}") for i, w in enumerate(init)]
    opt.build(mine)
    apply = tf.function(lambda g: opt.apply_gradients(g, mine), autograph=False, jit_compile=jit)
    for g in grads:
        apply([tf.constant(x, dtype) for x in g])
    assert apply.experimental_get_tracing_count() == 1  # the schedule is read from `iterations`, not traced
    return mine


def run_features(name: str, dtype: str, schedule: str | None, jit: bool = False, seed: int = 0, **features):
    """STEPS steps of the same seeded gradients through ours and Keras'."""
    ours, ref = feature_pair(name, dtype, schedule, **features)
    mine = run_ours(ours, dtype, seed, jit)
    init, grads = gradient_sequence(seed)
    theirs = [keras.Variable(w, dtype=dtype) for w in init]
    ref.build(theirs)
    ref_apply = tf.function(lambda g: ref.apply_gradients(zip(g, theirs)), autograph=False)
    for g in grads:
        ref_apply([tf.constant(x, dtype) for x in g])
    return ours, ref, mine, theirs, init


# Every feature and every schedule in at least one case; the clip thresholds are below the gradients'
# norms (elements up to ~100), so clipping acts on most steps, and weight decay is large enough to matter.
FEATURE_CASES = [
    ("sgd", "exponential", {"weight_decay": 0.5, "clipnorm": 1.0}),
    ("momentum", "piecewise", {"clipvalue": 0.5}),
    ("nesterov", "staircase", {"global_clipnorm": 2.0, "weight_decay": 0.25}),
    ("adam", "cosine-warmup", {"amsgrad": True, "weight_decay": 0.5}),
    ("adam", "cosine", {"amsgrad": True, "global_clipnorm": 3.0}),
    ("adam", None, {"clipnorm": 0.5, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,schedule,features", FEATURE_CASES,
                         ids=[f"{n}-{s}-{'-'.join(f)}" for n, s, f in FEATURE_CASES])
def test_features_and_schedules_match_keras_after_100_steps(name, schedule, features, dtype):
    ours, ref, mine, theirs, init = run_features(name, dtype, schedule, **features)
    assert int(ours.iterations.numpy()) == int(ref.iterations.numpy()) == STEPS
    assert rel_diff([v.numpy() for v in mine], [np.asarray(v.numpy()) for v in theirs]) <= TOL[dtype]
    if ours.slot_names:
        our_slots = [v.numpy() for s in ours.slot_names for v in ours.slots[s]]
        assert rel_diff(our_slots, keras_slots(ref)) <= TOL[dtype]
    assert rel_diff([v.numpy() for v in mine], init) > 1e-3
    if dtype == "float64":  # the features acted: without them (and the schedule) ours ends far from Keras
        plain = run_ours(optimizers.make(name, LR, tf.float64), dtype, 0)
        assert rel_diff([v.numpy() for v in plain], [np.asarray(v.numpy()) for v in theirs]) > 1e-4


def test_features_under_xla_match_keras():
    """The same update XLA-compiled (the trainer's xla and fused modes): schedule, AMSGrad, decay, clipping,
    in float64, where 1e-12 shows XLA changed no arithmetic (measured 7.9e-17). float32 under XLA is
    covered through the trainer: its xla and fused modes stay within 1e-6 of graph (test_schedules.py),
    and graph matches Keras (the test above); this case XLA-compiled in float32 measured 4.2e-8."""
    _, _, mine, theirs, _ = run_features("adam", "float64", "cosine-warmup", jit=True, seed=3, amsgrad=True,
                                         weight_decay=0.5, global_clipnorm=3.0)
    assert rel_diff([v.numpy() for v in mine], [np.asarray(v.numpy()) for v in theirs]) <= TOL["float64"]


# --- Keras' own published expectations (keras/src/optimizers/*_test.py, Keras 3.15), through our API ---


def test_keras_sgd_single_step():
    """keras/src/optimizers/sgd_test.py, test_single_step: SGD(0.5), grads [1, 6, 7, 2] on [1, 2, 3, 4].
    Keras asserts rtol = atol = 1e-4; every value here is exact in float32, so we assert equality."""
    v = tf.Variable([1.0, 2.0, 3.0, 4.0])
    opt = optimizers.make("sgd", 0.5)
    opt.build([v])
    assert len(opt.variables) == 2  # Keras: iterations and learning_rate, no slots
    opt.apply_gradients([tf.constant([1.0, 6.0, 7.0, 2.0])], [v])
    np.testing.assert_array_equal(v.numpy(), [0.5, -1.0, -0.5, 3.0])
    assert int(opt.iterations.numpy()) == 1 and float(opt.learning_rate.numpy()) == 0.5


def test_keras_adam_single_step():
    """keras/src/optimizers/adam_test.py, test_single_step: Adam(0.5), grads [1, 6, 7, 2] on [1, 2, 3, 4]
    -> [0.5, 1.5, 2.5, 3.5] at Keras' rtol = atol = 1e-4 (the first Adam step is lr * g / (|g| + eps))."""
    v = tf.Variable([1.0, 2.0, 3.0, 4.0])
    optimizers.make("adam", 0.5).apply_gradients([tf.constant([1.0, 6.0, 7.0, 2.0])], [v])
    np.testing.assert_allclose(v.numpy(), [0.5, 1.5, 2.5, 3.5], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
def test_keras_weight_decay(name):
    """keras/src/optimizers/adam_test.py (and sgd_test.py), test_weight_decay: three optimisers with
    weight_decay 0.004 at lr 1 each step var1 once, on a zero gradient: 2 * 0.996**3 = 1.9760959
    (Keras: 6 decimals). The second excludes a Variable by name, the third by identity: those stay 2."""
    zero = tf.zeros(())
    var1, var2, var3 = tf.Variable(2.0), tf.Variable(2.0, name="exclude"), tf.Variable(2.0)
    optimizers.make(name, 1.0, weight_decay=0.004).apply_gradients([zero], [var1])
    opt2 = optimizers.make(name, 1.0, weight_decay=0.004)
    opt2.exclude_from_weight_decay(var_names=["exclude"])
    opt2.apply_gradients([zero, zero], [var1, var2])
    opt3 = optimizers.make(name, 1.0, weight_decay=0.004)
    opt3.exclude_from_weight_decay(var_list=[var3])
    opt3.apply_gradients([zero, zero], [var1, var3])
    np.testing.assert_almost_equal(var1.numpy(), 1.9760959, decimal=6)
    # Independently: the float32 recurrence var -= var * 0.004 * 1, three times, to the bit.
    x = np.float32(2.0)
    for _ in range(3):
        x = np.float32(x - x * np.float32(0.004) * np.float32(1.0))
    assert var1.numpy() == x
    assert var2.numpy() == 2.0 and var3.numpy() == 2.0


def test_keras_amsgrad_golden():
    """keras/src/optimizers/adam_test.py, test_correctness_with_golden: Adam(amsgrad=True) at its
    defaults, one step of 0.01 then steps of [0.1, ..., 1.0], at Keras' rtol = atol = 5e-4."""
    x = tf.Variable(np.ones([10], np.float32))
    opt = optimizers.make("adam", 0.001, amsgrad=True)
    grads = tf.range(0.1, 1.1, 0.1)  # (10,), as keras.ops.arange(0.1, 1.1, 0.1)
    golden = np.tile([[0.999], [0.9982], [0.9974], [0.9965], [0.9955]], (1, 10))
    opt.apply_gradients([tf.fill([10], 0.01)], [x])
    for i in range(5):
        np.testing.assert_allclose(x.numpy(), golden[i], rtol=5e-4, atol=5e-4)
        opt.apply_gradients([grads], [x])
    assert tuple(opt.slot_names) == ("m", "v", "v_hat")
    # v_hat is the running maximum of v, elementwise (v itself decays once the gradients stop growing).
    assert np.all(opt.slots["v_hat"][0].numpy() >= opt.slots["v"][0].numpy())


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_keras_clip_norm_value_and_global(name):
    """keras/src/optimizers/optimizer_test.py (and adam_test.py): test_clip_norm (clipnorm 1 on
    [100, 100] -> [sqrt(2)/2, sqrt(2)/2]), test_clip_value (clipvalue 1 -> [1, 1]) and
    test_global_clip_norm (global_clipnorm 1 on [50, 100] -> g / ||g||), at Keras' default
    assertAllClose tolerance (1e-6); then the clipped gradient is the one a step uses."""
    g = tf.constant([100.0, 100.0])
    clipped = optimizers.make(name, 1.0, clipnorm=1.0).clip_gradients([g])[0]
    np.testing.assert_allclose(clipped.numpy(), [2**0.5 / 2, 2**0.5 / 2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(optimizers.make(name, 1.0, clipvalue=1.0).clip_gradients([g])[0].numpy(), [1.0, 1.0],
                               rtol=1e-6, atol=1e-6)
    g2 = np.array([50.0, 100.0], np.float32)
    clipped = optimizers.make(name, 1.0, global_clipnorm=1.0).clip_gradients([tf.constant(g2)])[0]
    np.testing.assert_allclose(clipped.numpy(), g2 / np.linalg.norm(g2), rtol=1e-6, atol=1e-6)
    # Per Variable vs global: two gradients of norms 5 and 12 (joint norm 13) under a limit of 1.
    a, b = tf.constant([3.0, 4.0]), tf.constant([12.0])
    per = optimizers.make(name, 1.0, clipnorm=1.0).clip_gradients([a, b])
    joint = optimizers.make(name, 1.0, global_clipnorm=1.0).clip_gradients([a, b])
    np.testing.assert_allclose([float(tf.norm(x)) for x in per], [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([x.numpy() for x in joint]), [3 / 13, 4 / 13, 12 / 13], rtol=1e-6)
    if name == "sgd":  # the step moves by lr * the clipped gradient
        v = tf.Variable([0.0, 0.0])
        optimizers.make("sgd", 0.5, clipvalue=1.0).apply_gradients([g], [v])
        np.testing.assert_array_equal(v.numpy(), [-0.5, -0.5])


def test_global_clipnorm_of_a_nonfinite_gradient_is_nan():
    """Keras' rule: an inf in any gradient makes every clipped gradient NaN (the trainer then skips the step)."""
    out = optimizers.make("sgd", 1.0, global_clipnorm=1.0).clip_gradients([tf.constant([np.inf, 1.0]),
                                                                        tf.constant([2.0])])
    assert all(np.all(np.isnan(x.numpy())) for x in out)


def test_amsgrad_slot_is_built_named_and_in_the_state_spec():
    variables = [tf.Variable(np.zeros(s), dtype=tf.float32, name=f"layer/w{i}") for i, s in enumerate(SHAPES)]
    opt = optimizers.make("adam", LR, amsgrad=True, weight_decay=0.1, clipnorm=1.0)
    opt.build(variables)
    assert tuple(opt.slots) == ("m", "v", "v_hat")
    assert [s.name for s in opt.slots["v_hat"]][0].startswith("adam/v_hat_layer_w0")
    assert sum(r.name.startswith("adam/v_hat_") for r in opt.state_spec()) == len(variables)
    step = tf.function(lambda g: opt.apply_gradients(g, variables), autograph=False)
    graph = step.get_concrete_function([tf.TensorSpec(s) for s in SHAPES]).graph
    assigns = [op for op in graph.get_operations() if op.type.startswith("Assign")]
    # Per model Variable: the decay, the update, m, v, v_hat; plus the step counter. No Variable created.
    assert len(assigns) == 5 * len(variables) + 1
    assert "VarHandleOp" not in {op.type for op in graph.get_operations()}


GUARD_CASES = [("sgd", {}), ("momentum", {}), ("nesterov", {}), ("adam", {}), ("adam", {"amsgrad": True}),
               ("adam", {"weight_decay": 0.004})]


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name,kw", GUARD_CASES,
                         ids=[f"{n}-{'-'.join(map(str, k)) or 'plain'}" for n, k in GUARD_CASES])
def test_guarded_step_is_the_step_or_nothing_bit_for_bit(name, kw, jit):
    """apply_gradients(when=True) is the unguarded step to the bit (every Variable, slot and the step
    counter, over 5 steps); when=False leaves all of them as they were. Exact equality, no tolerance:
    a select of the same computed value changes no bit."""
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[tf.constant(rng.standard_normal(s).astype(np.float32)) for s in SHAPES] for _ in range(5)]

    def run(when: bool | None) -> list[np.ndarray]:
        opt = optimizers.make(name, LR, tf.float32, **kw)
        variables = [tf.Variable(a) for a in init]
        guard = None if when is None else tf.constant(when)
        step = tf.function(lambda g: opt.apply_gradients(g, variables, when=guard), autograph=False, jit_compile=jit)
        for g in grads:
            step(g)
        return [v.numpy() for v in variables] + [s.numpy() for vs in opt.slots.values() for s in vs] + \
            [opt.iterations.numpy()]

    plain, guarded, skipped = run(None), run(True), run(False)
    assert all(np.array_equal(a, b) for a, b in zip(plain, guarded))
    assert all(np.array_equal(a, b) for a, b in zip(skipped[:len(init)], init))
    assert all(not np.any(s) for s in skipped[len(init):])  # slots still zero, iterations still 0

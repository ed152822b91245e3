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
from tfscope.core.optim import optimizers

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
        vs = list(ref._momentums) + list(ref._velocities)
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

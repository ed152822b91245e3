"""The training step and the four ways of running it.

One plain `train_step` holds the maths: take the batch for the current step, compute the loss
and its gradient (tape or hand-written chain rule), and apply the optimiser unless the loss is
non-finite. It is wrapped once, by mode, and cached:

- eager: called as is (debugging, the baseline);
- graph: `tf.function`;
- xla:   `tf.function(jit_compile=True)`, one step per call;
- fused: up to K steps inside one XLA-compiled `tf.while_loop` per call; each step's loss goes
  into a preallocated buffer and the loop stops early at the target loss or a non-finite loss.

The step counter is the optimiser's `iterations` Variable, and the batch for step s is a pure
function of (seed, s), so a checkpoint of the network and optimiser is the whole training state.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfscope.core.config import TrainConfig
from tfscope.core.data.tables import Dataset
from tfscope.core.errors import ConfigError
from tfscope.core.nn import gradients, netspec
from tfscope.core.nn.network import Classifier, Regressor
from tfscope.core.optim import optimizers, rules
from tfscope.core.train import shuffle

DIVERGED, TARGET, STEPS, INTERRUPTED = "diverged", "target", "steps", "interrupted"


@dataclass
class Chunk:
    """What one call of the compiled step (or fused loop) did."""

    start: int  # global step index of the first step run
    losses: np.ndarray  # loss of each step run, in order (the last may be non-finite)
    stopped: str | None  # DIVERGED or TARGET when the loop stopped itself, else None


def apply_if_finite(loss: tf.Tensor, update: Callable[..., object], selects: bool = False) -> tf.Tensor:
    """Run `update` (the step's assigns) only when `loss` is finite: a diverging step changes
    nothing, so the state stays the last finite one. Returns whether it ran (a bool tensor).

    A `tf.cond` around the update, except with `selects` in a function XLA compiles: there
    `update(when=finite)` guards each of its assignments itself (`Optimizer.apply_gradients`), see
    `compiling_with_xla`."""
    finite = tf.math.is_finite(loss)
    if selects and compiling_with_xla():
        update(when=finite)
        return finite

    def run() -> tf.Tensor:
        update()
        return tf.constant(True)

    tf.cond(finite, run, lambda: tf.constant(False))
    return finite


def compiling_with_xla() -> bool:
    """Whether the function being traced is compiled by XLA (`jit_compile=True`). There a step guards its
    update with selects (`Optimizer.apply_gradients(when=...)`): XLA turns a `tf.cond` into selects anyway,
    but in a shape that copies every slot each step. Elsewhere a `tf.cond` skips the update for free, where
    selects cost a pass over every Variable (graph mode, 16-1024-1024-1, batch 32: 5.5 ms a step against
    4.6). Both give the same weights bit for bit."""
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def build_model(config: TrainConfig, n_in: int, n_out: int, data: Dataset | None = None) -> Regressor:
    """The run's network: an MLP Regressor of the hidden widths, or, given `data`, the network that fits
    it: a Sequential for a --net spec or images (an MLP after a flatten), a Classifier for class labels
    (one logit per class; one in all for two classes under cross_entropy or binary_ce)."""
    dtype = tf.as_dtype(config.dtype)
    image = data is not None and data.x.ndim == 4
    if data is None or not (data.classes or image or config.net):
        return Regressor([n_in, *config.hidden, n_out], config.activation, config.seed, dtype)
    net = config.net or (netspec.from_hidden(config.hidden, image=True) if image else None)
    kw = dict(net=net, in_shape=data.x.shape[1:])
    flat = int(np.prod(data.x.shape[1:]))
    if not data.classes:
        return Regressor([flat, *config.hidden, n_out], config.activation, config.seed, dtype, **kw)
    k = len(data.classes)
    if config.loss == "binary_ce" and k != 2:
        raise ConfigError(f"loss: binary_ce takes two classes; {data.source} has {k} (use cross_entropy)")
    width = 1 if k == 2 and config.loss in ("cross_entropy", "binary_ce") else k
    return Classifier([flat, *config.hidden, width], config.activation, config.seed, dtype, classes=data.classes, **kw)


def build_optimizer(config: TrainConfig) -> optimizers.Optimizer:
    return optimizers.from_config(config)


class Trainer:
    """A network, its optimiser and its data, with the compiled step of every mode."""

    def __init__(self, config: TrainConfig, data: Dataset, model: Regressor | None = None,
                 optimizer: optimizers.Optimizer | None = None) -> None:
        self.config = config.validate()
        self.data = data
        dtype = tf.as_dtype(config.dtype)
        self.model = model or build_model(config, data.x.shape[1], data.z.shape[1], data)
        if model is None and config.standardize:
            self.model.fit_standardizer(data.x.astype(np.float64), data.z.astype(np.float64))
        self.optimizer = optimizer or build_optimizer(config)
        if not self.optimizer.built:
            self.optimizer.build(self.model.weights)
        # Standardised training data as Variables: captured by reference, never baked into a trace.
        xs = self.model.norm.x_in(tf.constant(data.x, dtype))
        zs = self.model.norm.z_in(tf.constant(data.z, dtype))
        self.x = tf.Variable(xs, trainable=False, name="x")  # (rows, n_in)
        self.z = tf.Variable(zs, trainable=False, name="z")  # (rows, n_out)
        self.rows = data.rows
        bs = config.batch_size
        self.batch_size = self.rows if bs == 0 or bs >= self.rows else bs
        self.batches_per_epoch = self.rows // self.batch_size  # remainder rows are dropped each epoch
        self.target = tf.Variable(config.target_loss, dtype=dtype, trainable=False, name="target_loss")
        self._grad = gradients.ROUTES[config.grad]
        self.rule = (None if config.rule == "backprop"  # backprop, or a local rule's state (one Dense layer)
                     else rules.make(config.rule, self.model.mlp.layers, config.loss, zs.numpy()))
        self._compiled: dict[str, Callable] = {}
        # Runs recorded with the sort order (core/train/shuffle.py) hold each epoch's order between steps
        self.sorted_order = config.shuffle == "sort" and self.batch_size < self.rows
        if self.sorted_order:  # held_permutation's cache: the row order of epoch `_perm_epoch` (-1: none yet)
            self._perm = tf.Variable(tf.zeros([self.rows], tf.int32), trainable=False, name="epoch_perm")  # (rows,)
            self._perm_epoch = tf.Variable(tf.constant(-1, tf.int64), trainable=False, name="perm_epoch")
        # A Feistel run's rows of a step as one XLA-compiled call, for eager steps and graph steps on a row count
        # other than a power of two: there the plain ops are ~100 small ops plus a While op of them per
        # cycle-walk (graph steps on 4,097 rows took 0.8-1.2 ms with the ops, 0.5-0.7 with the call, batch
        # 32-1,024, 16-16-16-1). Inlined into the xla and fused steps; see batch_rows for the rest.
        self._rows_of_step = tf.function(lambda step: shuffle.batch_rows(step, self.rows, self.batch_size, config.seed),
                                         jit_compile=True, autograph=False)
        self.steps_per_call = int(config.steps_per_call)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def epoch_permutation(self, step: tf.Tensor) -> tf.Tensor:
        """The `sort` order of the epoch that holds global step `step`: a pure function of (seed, epoch)
        that every mode computes alike (core/train/shuffle.py). (rows,) int32."""
        return shuffle.permutation(self.rows, self.config.seed, step // self.batches_per_epoch)

    def batch_rows(self, step: tf.Tensor) -> tf.Tensor:
        """A Feistel run's row indices for global step `step` (core/train/shuffle.py). (batch,) int64.

        Traced into a graph-mode step for a power-of-two row count (no cycle-walking While), the rows are
        plain ops of the step's graph: 16-w-w-1 on 4,096 rows, graph steps 485-586 us with them against
        575-665 with the compiled call (batch 256-1,024, one process). Otherwise one compiled call."""
        step = tf.convert_to_tensor(step, tf.int64)
        if not shuffle.cycle_walks(self.rows) and tf.inside_function() and not compiling_with_xla():
            return shuffle.batch_rows(step, self.rows, self.batch_size, self.config.seed)
        return self._rows_of_step(step)

    def batch(self, step: tf.Tensor, given: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Rows for global step `step`: all rows, or slice `step % nb` of its epoch's order. `given`, when the
        caller holds it: a sort run's epoch permutation."""
        if self.batch_size == self.rows:
            return self.x, self.z
        if not self.sorted_order:
            idx = self.batch_rows(step)  # (batch,)
        else:
            perm = self.epoch_permutation(step) if given is None else given
            # A gather, not tf.slice: XLA needs a slice's start at compile time and would recompile every step.
            idx = tf.gather(perm, shuffle.positions(step, self.batch_size, self.batches_per_epoch))  # (batch,)
        return self.gather_rows(idx)

    def gather_rows(self, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The training rows at indices `idx` (batch,): (batch, n_in), (batch, n_out)."""
        return tf.gather(self.x, idx), tf.gather(self.z, idx)

    def train_step(self) -> tf.Tensor:
        """One step: loss at the current weights, then the update unless that loss is non-finite.
        Takes no arguments (tfscope hlo and profile compile it as is)."""
        return self._step(self.held_permutation() if self.sorted_order else None)[0]

    def held_permutation(self) -> tf.Tensor:
        """A `sort` run's current epoch order, kept in a Variable between steps: sorted again only when the
        step counter enters an epoch other than the one held (a new epoch, a resume, a first call).
        Outside the checkpoint on purpose: a cache of a pure function of (seed, step). (rows,) int32."""
        it = self.optimizer.iterations
        epoch = it // self.batches_per_epoch

        def fresh() -> tf.Tensor:
            perm = self.epoch_permutation(it)
            self._perm.assign(perm)
            self._perm_epoch.assign(epoch)
            return perm

        return tf.cond(tf.equal(self._perm_epoch, epoch), self._perm.read_value, fresh)

    def _step(self, given: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """`train_step`, given a sort run's epoch order when the caller holds it (`batch`);
        returns the loss and whether it was finite (the fused loop's stop test reuses it: one IsFinite
        op fewer, and XLA lowers each through its own MLIR pipeline, ~5 ms apiece on a warm cache)."""
        return self._step_on(*self.batch(self.optimizer.iterations, given))

    def _step_on(self, x: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The step on its batch (x, z): (loss, whether it was finite and so applied)."""
        if self.rule is not None:  # a local learning rule (core/optim/rules.py): its value and proposed weights
            loss, new_w, new_b = self.rule.propose(x, z, tf.cast(self.optimizer.current_learning_rate(), x.dtype))

            def update() -> None:
                self.rule.assign(new_w, new_b)
                self.optimizer.iterations.assign_add(1)

            return loss, apply_if_finite(loss, update)
        loss, grads = self._grad(self.model.mlp, self.config.loss, x, z)
        return loss, apply_if_finite(loss, functools.partial(self.optimizer.apply_gradients, grads, self.model.weights),
                                     selects=True)

    def fused_steps(self, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Run up to `n` (<= K) steps in one compiled call; return (steps run, loss buffer of size K).

        The loop stops after the first step whose loss is non-finite (that step changed nothing) or is
        at most the target. A Feistel run's step is a loop of its own (of one step) inside the loop over
        steps, which gathers its rows. XLA:CPU compiles a loop into one function only when its cost
        analysis finds an iteration small (core/xla_flags.py) and counts a gather as reading all of the
        dataset (4,096 rows of 16 features: 256 KiB, the threshold alone), so a small step beside its
        gathers paid a runtime call per instruction (16-16-16-1, batch 32: 13.9 us a step; 6.3 us so,
        the plain loop on a fixed batch 5.6, shuffled 14.6: `tfscope bench`, part 5). The outer loop
        computes each step's rows one step ahead: computed beside the gathers that read them, XLA fused
        the hash into both gathers and recomputed it per element gathered (the hash and the two gathers
        alone, batch 1,024 of 16 features: 26.7 us per step, 15.5 with the rows carried). A sort run has
        an outer loop once per epoch touched: it takes the epoch's row order (`held_permutation`: a sort
        of all rows only when the epoch is new) and an inner loop runs that epoch's steps."""
        k = self.steps_per_call
        n = tf.minimum(n, k)
        it = self.optimizer.iterations
        nan = tf.constant(float("nan"), self.target.dtype)

        def steps(state: tuple, until: tf.Tensor, run: Callable[[tf.Tensor], tuple]) -> tuple:
            """Steps from state (i, hist, done) while i < until and no step stopped the loop; `run(i)` runs
            step i and returns its (loss, finite)."""
            def step(i, hist, done):
                loss, finite = run(i)
                hist = tf.tensor_scatter_nd_update(hist, [[i]], [loss])
                stop = tf.logical_or(tf.logical_not(finite), loss <= self.target)
                return i + 1, hist, stop

            return tf.while_loop(lambda i, hist, done: tf.logical_and(i < until, tf.logical_not(done)), step, state)

        def outer(body: Callable[..., tuple], start: tuple) -> tuple:
            return tf.while_loop(lambda i, hist, done, *_: tf.logical_and(i < n, tf.logical_not(done)), body, start)

        state = (tf.constant(0, tf.int32), tf.fill([k], nan), tf.constant(False))  # hist: (K,)
        if self.batch_size == self.rows:
            i, hist, _ = steps(state, n, lambda i: self._step(None))
            return i, hist
        if not self.sorted_order:
            first = it.read_value()  # step i is global step first + i: a step that does not count stops the loop

            def rows_of(i: tf.Tensor) -> tf.Tensor:
                return self.batch_rows(first + tf.cast(i, tf.int64))

            def gathered(i, hist, done, rows):
                batch = self.gather_rows(rows)
                i, hist, done = steps((i, hist, done), i + 1, lambda _: self._step_on(*batch))
                return i, hist, done, rows_of(i)

            i, hist, _, _ = outer(gathered, (*state, rows_of(state[0])))
            return i, hist
        nb = self.batches_per_epoch

        def epoch(i, hist, done):
            left = tf.cast(nb - it % nb, tf.int32)  # steps left in the current epoch
            order = self.held_permutation()
            return steps((i, hist, done), tf.minimum(n, i + left), lambda j: self._step(order))

        i, hist, _ = outer(epoch, state)
        return i, hist

    def compiled(self, mode: str | None = None) -> Callable:
        """The step function of `mode` (default: the config's), built once and cached."""
        mode = mode or self.config.mode
        if mode not in self._compiled:
            if mode == "eager":
                fn = self.train_step
            elif mode == "graph":
                fn = tf.function(self.train_step, autograph=False)
            elif mode == "xla":
                fn = tf.function(self.train_step, jit_compile=True, autograph=False)
            elif mode == "fused":
                fn = tf.function(self.fused_steps, jit_compile=True, autograph=False)
            else:
                raise ValueError(mode)
            self._compiled[mode] = fn
        return self._compiled[mode]

    def run_chunk(self, n: int, mode: str | None = None) -> Chunk:
        """Run up to `n` steps (one compiled call in fused mode, `n` calls otherwise)."""
        mode = mode or self.config.mode
        start = self.step
        target = float(self.target.numpy())
        fn = self.compiled(mode)
        if mode == "fused":
            ran, hist = fn(tf.constant(min(n, self.steps_per_call), tf.int32))
            losses = hist.numpy()[: int(ran)]
        else:
            out = []
            for _ in range(n):
                loss = float(fn())
                out.append(loss)
                if not math.isfinite(loss) or loss <= target:
                    break
            losses = np.asarray(out, dtype=self.config.dtype)
        stopped = None
        if len(losses) and not np.isfinite(losses[-1]):
            stopped = DIVERGED
        elif len(losses) and losses[-1] <= target:
            stopped = TARGET
        return Chunk(start, losses, stopped)

"""The same custom loop on TensorFlow's own distribution engine (`tf.distribute`).

`make_strategy` builds a MirroredStrategy (the GPUs, else N logical CPU devices) or a
MultiWorkerMirroredStrategy (from TF_CONFIG). `DistributedTrainer` is the `Trainer` with its
network and optimiser slots created under `strategy.scope()`, so each Variable is mirrored on every
replica, and with a step that works like this:

1. the dataset, built by `distribute_datasets_from_function`, hands each replica its slice of the
   global batch of step s: the very rows the single-device `Trainer.batch(s)` picks, split into
   contiguous parts (the sizes may differ by one row);
2. each replica computes the loss and gradient of its slice (XLA-compiled in xla and fused modes)
   and scales both by local rows / global rows;
3. one SUM all-reduce, outside the compiled part (compiling it is a known failure), turns these
   into the mean loss and gradient of the whole global batch: sum_r (n_r / N) mean_r = mean;
4. every replica applies the same reduced gradient to its own copy with the unchanged optimiser
   (in replica context, a Variable with aggregation NONE updates only the local copy), so the
   copies stay identical and the step counter advances on each.

Because the global batch and the gradient are the single-device ones, the weights follow the
single-device trajectory up to rounding, and checkpoints move freely between the two.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfscope.core import choices
from tfscope.core.config import TrainConfig
from tfscope.core.data.tables import Dataset
from tfscope.core.errors import ConfigError
from tfscope.core.train import shuffle
from tfscope.core.train.trainer import Trainer, apply_if_finite, build_model, build_optimizer

_strategies: dict[tuple[str, int], tf.distribute.Strategy] = {}


def _initialised() -> bool:
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None  # noqa: SLF001 (no public query exists)


def read_tf_config() -> dict:
    """TF_CONFIG as a dict; ConfigError when it is missing or not the JSON TensorFlow expects."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        raise ConfigError("strategy multiworker: TF_CONFIG is not set (see the README for an example)")
    try:
        cfg = json.loads(text)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        task["type"], int(task["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"TF_CONFIG: not a cluster spec with cluster.worker and task.type/index ({e})") from None
    if not isinstance(workers, list) or not workers:
        raise ConfigError("TF_CONFIG: cluster.worker must be a non-empty list of host:port")
    return cfg


def configure_logical_cpus(n: int) -> None:
    """Split the CPU into `n` logical devices; possible only before TensorFlow initialises."""
    cpus = tf.config.list_physical_devices("CPU")
    have = tf.config.get_logical_device_configuration(cpus[0])
    if have is not None and len(have) >= n:
        return
    if _initialised():
        now = len(tf.config.list_logical_devices("CPU"))
        if now >= n:
            return
        raise ConfigError(f"devices: {n} logical CPU devices asked for, but TensorFlow is already running with "
                          f"{now}; call core.distributed.make_strategy before any TensorFlow op")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


def make_strategy(kind: str, devices: int = 1) -> tf.distribute.Strategy:
    """The strategy for `kind` (cached per process): the default one for "none"; for "mirrored" the
    first `devices` GPUs, or `devices` logical CPUs when there is no GPU; for "multiworker" one
    replica per worker (per GPU with GPUs) from TF_CONFIG. Call it before any other TensorFlow op."""
    choices.check("strategy", kind, choices.STRATEGIES)
    if not (isinstance(devices, int) and devices >= 1):
        raise ConfigError(f"devices: must be a whole number >= 1, got {devices}")
    if kind == "none":
        return tf.distribute.get_strategy()
    key = (kind, devices)
    if key in _strategies:
        return _strategies[key]
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "mirrored":
        if gpus:
            if len(gpus) < devices:
                raise ConfigError(f"devices: {devices} asked for, but this machine has {len(gpus)} GPU(s)")
            names = [f"/gpu:{i}" for i in range(devices)]
        else:
            configure_logical_cpus(devices)
            names = [f"/cpu:{i}" for i in range(devices)]
        strategy = tf.distribute.MirroredStrategy(names)
    else:
        cfg = read_tf_config()
        if not gpus and devices != 1:
            raise ConfigError(f"devices: {devices} asked for with --strategy multiworker, but without GPUs each "
                              "worker is one CPU replica; use --devices 1 (or add workers to TF_CONFIG)")
        workers = len(cfg["cluster"]["worker"]) + len(cfg["cluster"].get("chief", []))
        if not _initialised():
            # Each worker's collective ops need their own inter-op threads, or a worker can hang.
            threads = max(workers + 1, os.cpu_count() or 1)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        elif 0 < tf.config.threading.get_inter_op_parallelism_threads() <= workers:
            raise ConfigError("strategy multiworker: TensorFlow is already running with too few inter-op threads; "
                              "call core.distributed.make_strategy before any TensorFlow op")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _strategies[key] = strategy
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one worker that writes checkpoints and exports (always true without multiworker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    spec = resolver.cluster_spec().as_dict()
    return "chief" not in spec and resolver.task_type == "worker" and int(resolver.task_id) == 0


def worker_name(strategy: tf.distribute.Strategy) -> str:
    """'worker-1' style name of this process in the cluster ('local' without multiworker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}-{resolver.task_id}"


def split_points(global_batch: int, replicas: int) -> list[int]:
    """Row offsets that cut a global batch into `replicas` contiguous parts, sizes differing by <= 1."""
    base, extra = divmod(global_batch, replicas)
    sizes = [base + (1 if r < extra else 0) for r in range(replicas)]
    return [int(v) for v in np.concatenate([[0], np.cumsum(sizes)])]


class DistributedTrainer(Trainer):
    """A `Trainer` whose Variables are mirrored and whose step runs on every replica of `strategy`.

    Modes: eager (everything eager), graph (one tf.function per step), xla (one tf.function per
    step around an XLA-compiled per-replica gradient), fused (a tf.function with a tf.while_loop of
    up to K steps; each step's per-replica gradient is XLA-compiled, the loop and the all-reduce
    are not, because the all-reduce cannot be compiled).
    """

    def __init__(self, config: TrainConfig, data: Dataset, strategy: tf.distribute.Strategy | None = None) -> None:
        config.validate()
        self.strategy = strategy or make_strategy(config.strategy, config.devices)
        with self.strategy.scope():
            model = build_model(config, data.x.shape[1], data.z.shape[1])
            if config.standardize:
                model.norm.fit(data.x.astype(np.float64), data.z.astype(np.float64))
            optimizer = build_optimizer(config)
            optimizer.build(model.weights)
        super().__init__(config, data, model, optimizer)
        self.replicas = int(self.strategy.num_replicas_in_sync)
        if self.batch_size < self.replicas:
            raise ConfigError(f"batch size: {self.batch_size} rows cannot be split over {self.replicas} replicas; "
                              f"use at least {self.replicas}")
        self.bounds = split_points(self.batch_size, self.replicas)
        self._iterator = None
        self._iterator_step = -1  # the step whose rows the iterator yields next

    # -- data ---------------------------------------------------------------------------------------
    def batch_rows(self, step: tf.Tensor) -> tf.Tensor:
        """The Feistel rows of global step `step` as plain ops: they run inside tf.data's map, where the
        single-device Trainer's XLA-compiled call doubled tests/mirrored_check.py's time (55 against 28 s)."""
        return shuffle.batch_rows(step, self.rows, self.batch_size, self.config.seed)

    def _dataset_fn(self, start: int) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        bounds = tf.constant(self.bounds, tf.int32)  # (replicas + 1,)

        def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            k = ctx.num_replicas_in_sync // ctx.num_input_pipelines  # replicas fed by this pipeline
            first = ctx.input_pipeline_id * k  # global index of this pipeline's first replica

            def part(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                step = i // k
                r = first + tf.cast(i % k, tf.int32)
                x, z = self.batch(step)  # (global batch, n_in), (global batch, n_out)
                lo, hi = bounds[r], bounds[r + 1]
                return x[lo:hi], z[lo:hi]  # (rows of replica r, n_in), (rows of replica r, n_out)

            # Element i is replica (first + i % k)'s part of step i // k; replicas take elements in turn.
            return tf.data.Dataset.range(start * k, np.iinfo(np.int64).max).map(part)

        return fn

    def _next_iterator(self):
        """The distributed iterator positioned at the current step (rebuilt if the two disagree)."""
        if self._iterator is None or self._iterator_step != self.step:
            dist = self.strategy.distribute_datasets_from_function(self._dataset_fn(self.step))
            self._iterator = iter(dist)
            self._iterator_step = self.step
        return self._iterator

    # -- the step -----------------------------------------------------------------------------------
    def local_gradient(self, x: tf.Tensor, z: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """This replica's loss and gradient on its rows, weighted by its share of the global batch."""
        loss, grads = self._grad(self.model.mlp, self.config.loss, x, z)
        share = tf.cast(tf.shape(x)[0], loss.dtype) / tf.cast(self.batch_size, loss.dtype)
        return loss * share, [g * share for g in grads]

    def _replica_step(self, local_gradient: Callable, x: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        """Runs on each replica: gradient, all-reduce (not compiled), the same update everywhere."""
        loss, grads = local_gradient(x, z)
        ctx = tf.distribute.get_replica_context()
        loss, *grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [loss, *grads])
        apply_if_finite(loss, lambda: self.optimizer.apply_gradients(grads, self.model.weights))
        return loss

    def _one_step(self, local_gradient: Callable, iterator) -> tf.Tensor:
        x, z = next(iterator)
        out = self.strategy.run(self._replica_step, args=(local_gradient, x, z))
        return self.strategy.experimental_local_results(out)[0]  # the same on every replica

    def _fused(self, local_gradient: Callable, iterator, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        k = self.steps_per_call

        def cond(i, hist, done):
            return tf.logical_and(i < n, tf.logical_not(done))

        def body(i, hist, done):
            loss = self._one_step(local_gradient, iterator)
            hist = tf.tensor_scatter_nd_update(hist, [[i]], [loss])
            done = tf.logical_or(tf.logical_not(tf.math.is_finite(loss)), loss <= self.target)
            return i + 1, hist, done

        hist0 = tf.fill([k], tf.constant(float("nan"), tf.as_dtype(self.config.dtype)))  # (K,)
        i, hist, _ = tf.while_loop(cond, body, (tf.constant(0, tf.int32), hist0, tf.constant(False)),
                                   maximum_iterations=k)
        return i, hist

    def train_step(self) -> tf.Tensor:
        """One eager step on every replica (the debugging baseline)."""
        return self.compiled("eager")()

    def compiled(self, mode: str | None = None) -> Callable:
        """The step function of `mode` under the strategy, built once and cached. Each call takes
        the rows of the current step from the distributed dataset."""
        mode = mode or self.config.mode
        if mode not in self._compiled:
            if mode == "eager":
                inner, outer = self.local_gradient, self._one_step
            elif mode == "graph":
                inner, outer = self.local_gradient, tf.function(self._one_step, autograph=False)
            elif mode == "xla":
                inner = tf.function(self.local_gradient, jit_compile=True, autograph=False)
                outer = tf.function(self._one_step, autograph=False)
            elif mode == "fused":
                inner = tf.function(self.local_gradient, jit_compile=True, autograph=False)
                outer = tf.function(self._fused, autograph=False)
            else:
                raise ValueError(mode)
            self._compiled[mode] = self._advancing(mode, inner, outer)
        return self._compiled[mode]

    def _advancing(self, mode: str, inner: Callable, outer: Callable) -> Callable:
        """Wrap a step function so that it is fed the iterator and keeps count of the rows it used."""
        if mode == "fused":
            def call(n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                ran, hist = outer(inner, self._next_iterator(), n)
                self._iterator_step += int(ran)
                return ran, hist
        else:
            def call() -> tf.Tensor:
                loss = outer(inner, self._next_iterator())
                self._iterator_step += 1
                return loss
        return call

    def replica_values(self, variable: tf.Variable) -> list[np.ndarray]:
        """Every local replica's copy of a mirrored Variable (they stay equal)."""
        return [v.numpy() for v in self.strategy.experimental_local_results(variable)]


def make_trainer(config: TrainConfig, data: Dataset) -> Trainer:
    """The single-device Trainer, or the DistributedTrainer when the config names a strategy."""
    if config.strategy == "none":
        return Trainer(config, data)
    return DistributedTrainer(config, data)

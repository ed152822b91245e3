"""`tfscope bench`: the harness's statistics, the FLOP formula, the baselines being what they claim
to be, and the command's output shape and refusals. Speed itself is never asserted."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from conftest import tfscope

pytestmark = pytest.mark.slow(seconds=93)  # the file's test time under -n 2; see conftest


class FakeClock:
    """A clock that moves only when the timed function says so: exact, noise-free timings."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_measure_excludes_warmup_and_reports_median_and_range_per_unit():
    from tfscope.profiling.bench import measure

    clock = FakeClock()
    durations = iter([100.0, 7.0, 3.0, 5.0, 11.0, 4.0])  # the first call is the warm-up

    def fn():
        clock.now += next(durations)

    t = measure(fn, per=2, warmup=1, repeats=5, clock=clock)
    per_unit = [7.0 / 2, 3.0 / 2, 5.0 / 2, 11.0 / 2, 4.0 / 2]
    # Oracle: the statistics recomputed by numpy from the known durations (exact: small halves).
    assert t.samples == per_unit
    assert t.median == np.median(per_unit) == 2.5
    assert (t.low, t.high) == (min(per_unit), max(per_unit))
    assert t.spread_pct == pytest.approx(100 * (5.5 - 1.5) / 2.5, rel=1e-12)
    d = t.to_dict(1e6)
    assert d["median"] == pytest.approx(2.5e6) and d["samples"][0] == pytest.approx(3.5e6)


def test_measure_rejects_empty_windows():
    from tfscope.profiling.bench import measure

    with pytest.raises(ValueError):
        measure(lambda: None, per=0)
    with pytest.raises(ValueError):
        measure(lambda: None, repeats=0)


def _flops_by_op(concrete) -> dict[str, int]:
    """TensorFlow's own per-op FLOP statistics (the ones its v1 profiler sums) over a traced graph."""
    from tensorflow.python.framework import ops

    out: dict[str, int] = {}
    for op in concrete.graph.get_operations():
        try:
            value = ops.get_stats_for_node_def(concrete.graph, op.node_def, "flops").value
        except ValueError:
            value = None
        if value:
            out[op.type] = out.get(op.type, 0) + int(value)
    return out


def test_flop_formula_matches_tensorflows_own_count_of_the_traced_step():
    """Forward matmuls = 2B sum(in*out) exactly; the gradient step's matmuls = 3F less the first
    layer's input gradient, which autodiff never builds. Integer counts: exact equality."""
    import tensorflow as tf

    from tfscope.core.nn import gradients
    from tfscope.core.train.trainer import Trainer
    from tfscope.profiling import bench_compute as bc

    trainer = Trainer(bc.project_config("graph"), bc.random_data(rows=bc.BATCH))
    mlp = trainer.model.mlp
    assert mlp.sizes == list(bc.SIZES) and trainer.batch_size == bc.BATCH
    x_spec = tf.TensorSpec([bc.BATCH, bc.SIZES[0]], tf.float32)
    z_spec = tf.TensorSpec([bc.BATCH, bc.SIZES[-1]], tf.float32)
    forward = tf.function(lambda x: mlp(x)).get_concrete_function(x_spec)
    step = tf.function(lambda x, z: gradients.tape_gradients(mlp, "mse", x, z)).get_concrete_function(x_spec, z_spec)
    assert _flops_by_op(forward)["MatMul"] == bc.forward_flops()
    assert _flops_by_op(step)["MatMul"] == bc.matmul_step_flops()
    assert bc.step_flops() == 3 * bc.forward_flops()
    assert bc.matmul_flops(2048) == 2 * 2048**3


def test_lecture_loop_step_is_keras_adam_on_mse_by_hand():
    """One step of the lecture's loop equals a numpy forward pass, MSE gradient by the chain rule and
    Keras' Adam update (lr 0.001, betas 0.9/0.999, eps 1e-7). float32 throughout: atol 1e-6."""
    from tfscope.profiling.bench_lecture import LectureLoop

    loop = LectureLoop(seed=3)
    w1, b1, w2, b2 = [v.numpy().astype(np.float64) for v in loop.model.trainable_weights]
    x, z = loop.x.astype(np.float64), loop.z.astype(np.float64)
    h = x @ w1 + b1  # (19, 2)
    y = h @ w2 + b2  # (19, 1)
    dy = 2 * (y - z) / y.size  # d mean((y - z)^2) / dy
    grads = [x.T @ (dy @ w2.T), (dy @ w2.T).sum(0), h.T @ dy, dy.sum(0)]
    lr, b_1, b_2, eps = 0.001, 0.9, 0.999, 1e-7
    expected = []
    for w, g in zip((w1, b1, w2, b2), grads):
        m, v = (1 - b_1) * g, (1 - b_2) * g * g
        alpha = lr * math.sqrt(1 - b_2) / (1 - b_1)
        expected.append(w - alpha * m / (np.sqrt(v) + eps))
    stop = loop.run_epoch()
    assert stop is False  # the first loss is far above the lecture's 0.01 threshold
    for got, want in zip(loop.model.trainable_weights, expected):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert loop.metric.count.numpy() == 0  # the lecture resets its MAE metric every epoch


def test_keras_fit_on_repeated_rows_follows_the_lecture_loop():
    """The time-to-solution projection rests on this: fit (batch 19, rows repeated, no shuffle) runs
    the lecture's algorithm step for step. 100 Adam steps in float32, graph vs eager: rtol 1e-4."""
    from tfscope.profiling import bench_lecture as bl

    loop = bl.LectureLoop(seed=0)
    loop.steps(100)
    model = bl.keras_fit_model(jit_compile=False, steps_per_execution=100, seed=0)
    x, z = bl.repeated_rows(100)
    model.fit(x, z, batch_size=19, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loop.model.trainable_weights, model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert int(model.optimizer.iterations.numpy()) == 100


def _positive_finite(value, where: str) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    assert math.isfinite(value) and value > 0, f"{where} = {value}"


def _check_timing(row: dict, where: str) -> None:
    for key in ("median", "low", "high", "per"):
        _positive_finite(row[key], f"{where}.{key}")
    assert row["low"] <= row["median"] <= row["high"], where
    assert len(row["samples"]) == row["repeats"] >= 1, where
    assert row["median"] == pytest.approx(statistics.median(row["samples"])), where
    assert math.isfinite(row["spread_pct"]) and row["spread_pct"] >= 0, where


def test_quick_bench_writes_a_complete_json_and_chart_then_refuses_to_overwrite(tmp_path):
    out = tmp_path / "bench"
    proc = tfscope("bench", "--quick", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "bench.json").read_text())
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert doc["quick"] is True and doc["machine"]["cores"] >= 1 and doc["machine"]["tensorflow"]
    # progress: one stderr line per benchmark
    assert sum(line.startswith("bench: ") for line in proc.stderr.splitlines()) >= 16

    part1 = doc["per_step"]
    assert part1["unit"] == "us/step"
    names = [row["name"] for row in part1["rows"]]
    assert len(names) == 9 and names[0].startswith("lecture loop") and names[-1].startswith("tfscope fused")
    assert sum(name.startswith("Keras fit") for name in names) == 4
    for row in part1["rows"]:
        _check_timing(row, row["name"])
        _positive_finite(row["ratio_to_fused"], row["name"])
        assert row["ratio_to_fused"] == pytest.approx(row["median"] / part1["rows"][-1]["median"])

    code = part1["fused_step_hlo"]
    # The parser's per-step count and the opcodes of the loop's computations, counted apart, agree.
    assert code["per_step"] == sum(code["step_by_opcode"].values()) > 0 and code["compiled_whole"] is True
    assert code["ns_per_instruction"] == pytest.approx(part1["rows"][-1]["median"] * 1e3 / code["per_step"])
    floors = part1["fused_step_floors"]  # the stripped Adam step, flat, and the minimal SGD step: an XLA loop each
    assert len(floors) == 3
    for row in floors:
        _check_timing(row, row["name"])
        assert row["ratio_to_fused"] == pytest.approx(row["median"] / part1["rows"][-1]["median"])

    part2 = doc["time_to_solution"]
    assert part2["unit"] == "s" and part2["truth"] == 14.0 and part2["tolerance"] == 1e-3
    assert len(part2["rows"]) == 3
    for row in part2["rows"]:
        _positive_finite(row["seconds"], row["name"])
        assert isinstance(row["reached"], bool) and math.isfinite(row["prediction"])
        assert row["reached"] == (abs(row["prediction"] - 14.0) <= 1e-3)
    own = part2["rows"][-1]
    assert own["reached"] is True  # the default config solves the lecture problem

    part3 = doc["compute_bound"]
    assert part3["unit"] == "ms/step" and part3["sizes"] == [784, 1024, 1024, 10] and part3["batch"] == 512
    _check_timing(part3["ceiling"], "ceiling")
    assert part3["ceiling"]["gflops"] == pytest.approx(part3["ceiling"]["flops"] / (part3["ceiling"]["median"] / 1e3)
                                                       / 1e9)
    for row in part3["rows"]:
        _check_timing(row, row["name"])
        assert row["gflops"] == pytest.approx(part3["flops_per_step"] / (row["median"] / 1e3) / 1e9)
        _positive_finite(row["pct_of_ceiling"], row["name"])

    part4 = doc["inference"]
    assert part4["unit"] == "us/call"
    assert {(r["runtime"], r["batch"]) for r in part4["rows"]} == {(rt, b) for rt in ("savedmodel", "onnxruntime")
                                                                   for b in (1, 1024)}
    for row in part4["rows"]:
        _check_timing(row, row["runtime"])
        assert row["calls_per_s"] == pytest.approx(1e6 / row["median"])
        assert row["rows_per_s"] == pytest.approx(row["batch"] * 1e6 / row["median"])

    cli = {row["name"]: row for row in part2["cli"]}  # two new `tfscope train` processes: cold, then warm cache
    assert len(cli) == 2
    for row in cli.values():
        assert row["reached"] is True and 0 < row["compile_seconds"] < row["seconds"] < row["process_seconds"]
        # the row is its median process (--quick runs one warm process; the full bench three)
        median = sorted(row["runs"], key=lambda r: r["seconds"])[len(row["runs"]) // 2]
        assert median.items() <= row.items() and row["low"] <= row["seconds"] <= row["high"]

    from tfscope.profiling.bench_compute import step_flops

    part5 = doc["scaling"]
    (point,) = part5["rows"]  # --quick: one point
    assert (point["width"], point["batch"]) == (16, 32) and point["flops_per_step"] == step_flops((16, 16, 16, 1), 32)
    for method in part5["methods"]:
        _check_timing(point[method], method)
        assert point[method]["gflops"] == pytest.approx(point["flops_per_step"] / point[method]["median"] / 1e3)
    assert point["fused_vs_floor"] == pytest.approx(point["floor_xla_loop"]["median"] / point["fused"]["median"])
    assert point["fused_vs_shuffled_floor"] == pytest.approx(point["shuffled_floor_xla_loop"]["median"]
                                                             / point["fused"]["median"])
    assert point["graph_over_shuffled_floor"] == pytest.approx(point["graph"]["median"]
                                                               / point["shuffled_floor_tf_function"]["median"])
    assert point["fused_pct_of_ceiling"] == pytest.approx(100 * point["fused"]["gflops"] / part5["ceiling_gflops"])
    assert part5["ceiling_gflops"] == part3["ceiling"]["gflops"]
    assert (out / "bench_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    names = [f["figure"] for f in doc["figures"]]
    assert len(names) == len(set(names))
    mine = [n for n in names if n.startswith("scaling:") or "warm cache" in n or "(issue 17)" in n]
    assert len(mine) == 6  # the 0.1 us step, the warm cache, 4 scaling goals (--quick has no w1024 point)
    for f in doc["figures"]:
        _positive_finite(f["goal"], f["figure"])
        if f["figure"] in mine or not math.isnan(f["got"]):
            _positive_finite(f["got"], f["figure"])
        else:  # a figure --quick does not measure (NaN) is never met and says why
            assert f["met"] is False and f["note"], f["figure"]
            continue
        assert f["met"] == (f["got"] <= f["goal"] if f.get("at_most") else f["got"] >= f["goal"])
    by_name = {f["figure"]: f for f in doc["figures"]}
    for goal in (0.5, 0.1):
        per_step_goal = next(f for f in doc["figures"] if f["figure"].startswith("fused mode") and f["goal"] == goal)
        assert per_step_goal["at_most"] and per_step_goal["got"] == part1["rows"][-1]["median"]
    warm = by_name["time to solution, warm cache: training wall time (s)"]
    assert warm["got"] == cli["tfscope train process, warm compile cache"]["seconds"] and warm["goal"] == 0.25
    assert by_name["scaling: floor time / fused time, worst point"]["got"] == point["fused_vs_floor"]
    assert "tfscope fused" in proc.stdout and "Figures" in proc.stdout

    before = (out / "bench.json").read_bytes()
    again = tfscope("bench", "--quick", "--out", str(out), timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"tfscope: error: bench: --out {out}: bench.json already exists; use --force to replace it"]
    assert (out / "bench.json").read_bytes() == before


def test_bench_refuses_an_out_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    proc = tfscope("bench", "--quick", "--out", str(target), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tfscope: error: bench: --out {target}: exists and is not a directory"]
    assert target.read_text() == "not a directory"


def test_scaling_floor_is_the_projects_adam_step_written_plainly():
    """The floor the sweep holds the project to computes the same training: from the same weights on
    the same full batch, 30 Adam steps of PlainStep and of the project's fused mode agree within 1e-5
    relative to the largest weight (float32; two programs may sum in different orders, and Adam's
    division by sqrt(v) amplifies last-bit differences of small gradients over the steps)."""
    import tensorflow as tf

    from tfscope.core.config import TrainConfig
    from tfscope.core.train.trainer import Trainer
    from tfscope.profiling import bench_scaling as bs

    width, batch = 8, 32
    config = TrainConfig(hidden=[width, width], activation="relu", optimizer="adam", learning_rate=bs.LEARNING_RATE,
                         mode="fused", target_loss=0.0, standardize=False)
    d = bs.random_data()
    trainer = Trainer(config, type(d)(d.x[:batch], d.z[:batch], d.features, d.targets, d.source))
    initial = [v.numpy() for v in trainer.model.weights]
    plain = bs.PlainStep(width, batch, init=initial)
    loop = tf.function(plain.loop, jit_compile=True, autograph=False)
    assert int(loop(tf.constant(30))) == 30
    assert len(trainer.run_chunk(30).losses) == 30
    ours = np.concatenate([v.numpy().ravel() for v in trainer.model.weights])
    floor = np.concatenate([v.numpy().ravel() for v in plain.params])
    moved = np.max(np.abs(ours - np.concatenate([a.ravel() for a in initial])))
    assert np.max(np.abs(ours - floor)) <= 1e-5 * np.max(np.abs(floor)) < moved / 100  # and it trained


def test_flat_lecture_floor_is_the_projects_adam_step():
    """The flat-buffer floor of the lecture step (one Variable of the 9 weights, one per slot) trains
    as the project does: 200 full-batch Adam steps from the same weights agree with the project's xla
    mode within 1e-5 relative to the largest weight (float32: the two programs round the gradient's
    sums in their own orders, which Adam's division by sqrt(v) carries into the steps)."""
    import tensorflow as tf

    from tfscope.profiling import bench_lecture

    ours, floor_trainer = bench_lecture.project_trainer(), bench_lecture.project_trainer()
    initial = np.concatenate([v.numpy().ravel() for v in ours.model.weights])
    loop, flat = bench_lecture.flat_adam_floor(floor_trainer)
    assert int(tf.function(loop, jit_compile=True, autograph=False)(tf.constant(200))) == 200
    assert len(ours.run_chunk(200, "xla").losses) == 200
    got = np.concatenate([v.numpy().ravel() for v in ours.model.weights])
    moved = np.max(np.abs(got - initial))
    assert np.max(np.abs(got - flat.numpy())) <= 1e-5 * np.max(np.abs(got)) < moved / 100


@pytest.mark.parametrize("compiled", ["xla loop", "tf.function"])
def test_shuffled_floor_takes_the_projects_rows_and_steps(compiled):
    """The shuffled floors do the modes' work written plainly: from the same weights, 40 steps of batch 32
    on all 4,096 rows (the Feistel order of seed 0, an epoch of 128 steps) give the project's weights
    within 1e-5 relative to the largest (float32, as for the fixed-batch floor); a fixed batch does not."""
    import tensorflow as tf

    from tfscope.core.config import TrainConfig
    from tfscope.core.train.trainer import Trainer
    from tfscope.profiling import bench_scaling as bs

    width, batch, steps = 8, 32, 40
    config = TrainConfig(hidden=[width, width], activation="relu", optimizer="adam", learning_rate=bs.LEARNING_RATE,
                         batch_size=batch, mode="fused", target_loss=0.0, standardize=False, seed=0)
    trainer = Trainer(config, bs.random_data())
    initial = [v.numpy() for v in trainer.model.weights]
    assert len(trainer.run_chunk(steps).losses) == steps
    ours = np.concatenate([v.numpy().ravel() for v in trainer.model.weights])

    def floor(**extras: bool) -> np.ndarray:
        plain = bs.PlainStep(width, batch, init=initial, **extras)
        if compiled == "xla loop":
            tf.function(plain.loop, jit_compile=True, autograph=False)(tf.constant(steps))
        else:
            step = tf.function(plain.step, autograph=False)
            for _ in range(steps):
                step()
        return np.concatenate([v.numpy().ravel() for v in plain.params])

    scale = np.max(np.abs(ours))
    assert np.max(np.abs(ours - floor(shuffled=True, guarded=True))) <= 1e-5 * scale
    assert np.max(np.abs(ours - floor())) > 1e-3 * scale  # the rows matter: the fixed batch trains elsewhere

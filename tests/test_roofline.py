"""FLOPs, bytes and roofs of the roofline report, each against a count made without its code.

Hand counts come from the shapes the test itself chose (2MNK for a dot, 2 * output elements *
kernel volume * in-channels per group for a convolution); the Dense training step is checked
against the analytic 3F count of profiling/bench_compute.py; the roofs against the ordering
any machine must show. Counts are integers and compared exactly: they are products of shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfscope.profiling import flops, hlo, roofline
from tfscope.profiling.roofs import Roofs

HAND_HLO = """HloModule hand, is_scheduled=true

%fused_computation (p0: f32[64,32], p1: f32[]) -> f32[64,32] {
  %p0 = f32[64,32]{1,0} parameter(0)
  %p1 = f32[] parameter(1)
  %b = f32[64,32]{1,0} broadcast(%p1), dimensions={}
  %m = f32[64,32]{1,0} multiply(%p0, %b)
  ROOT %e = f32[64,32]{1,0} exponential(%m)
}

ENTRY %main (a: f32[3,64,128], b: f32[3,128,32], x: f32[2,16,16,12], k: f32[3,3,4,24], s: f32[]) -> f32[3,64,32] {
  %a = f32[3,64,128]{2,1,0} parameter(0)
  %b = f32[3,128,32]{2,1,0} parameter(1)
  %x = f32[2,16,16,12]{3,2,1,0} parameter(2)
  %k = f32[3,3,4,24]{3,2,1,0} parameter(3)
  %s = f32[] parameter(4)
  %dot.1 = f32[3,64,32] dot(%a, %b), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_contracting_dims={1}
  %conv.1 = f32[2,14,14,24] convolution(%x, %k), window={size=3x3}, dim_labels=b01f_01io->b01f, feature_group_count=3
  %slice.1 = f32[64,32]{1,0} slice(%dot.1), slice={[0:1], [0:64], [0:32]}
  %fusion.1 = f32[64,32]{1,0} fusion(%slice.1, %s), kind=kLoop, calls=%fused_computation
  ROOT %r = f32[3,64,32]{2,1,0} copy(%dot.1)
}
"""


def test_hand_written_hlo_counts():
    module = hlo.parse(HAND_HLO)
    insts = module.instructions
    assert insts["dot.1"].operands == ["a", "b"]
    # dot: batch 3, M 64, N 32, K 128
    assert flops.instruction_flops(insts["dot.1"], module) == 2 * 3 * 64 * 32 * 128
    assert flops.instruction_bytes(insts["dot.1"], module) == 4 * (3 * 64 * 128 + 3 * 128 * 32 + 3 * 64 * 32)
    # convolution: 12 in-channels in 3 groups = 4 per group (the kernel's i dimension), 3x3 window, no padding
    assert flops.instruction_flops(insts["conv.1"], module) == 2 * (2 * 14 * 14 * 24) * 9 * 4
    # fusion: a multiply and an exponential per element; the broadcast moves data only
    assert flops.instruction_flops(insts["fusion.1"], module) == 2 * 64 * 32
    assert flops.instruction_bytes(insts["fusion.1"], module) == 4 * (64 * 32 + 1 + 64 * 32)
    assert flops.instruction_flops(insts["r"], module) == 0  # a copy computes nothing
    assert flops.nbytes("(f32[2,3], s32[], pred[4])") == 24 + 4 + 4


def _compiled(fn, *args):
    import tensorflow as tf

    f = tf.function(fn, jit_compile=True)
    return hlo.parse(f.experimental_get_compiler_ir(*args)(stage="optimized_hlo"))


def _by_opcode(module, opcode):
    return [i for i in module.scheduled() if i.opcode == opcode]


def test_xla_dot_is_2mnk():
    import tensorflow as tf

    a, b = tf.ones((4, 24, 40)), tf.ones((4, 40, 56))  # (batch, M, K), (batch, K, N)
    module = _compiled(lambda a, b: tf.matmul(a, b), a, b)
    (dot,) = _by_opcode(module, "dot")
    assert flops.instruction_flops(dot, module) == 2 * 4 * 24 * 56 * 40
    assert flops.instruction_bytes(dot, module) == 4 * (4 * 24 * 40 + 4 * 40 * 56 + 4 * 24 * 56)


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_xla_convolution_is_2_outputs_kernel_in_per_group(groups):
    """Plain, grouped and depthwise (groups = in-channels) 3x3 convolutions, 'same' padding."""
    import tensorflow as tf

    cin, cout = 6, 12
    x = tf.ones((2, 10, 10, cin))  # (batch, height, width, in-channels)
    k = tf.ones((3, 3, cin // groups, cout))  # (kh, kw, in-channels per group, out-channels)
    module = _compiled(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"), x, k)
    convs = _by_opcode(module, "convolution")
    assert len(convs) == 1
    assert flops.instruction_flops(convs[0], module) == 2 * (2 * 10 * 10 * cout) * 9 * (cin // groups)
    assert flops.module_flops(module) == 2 * (2 * 10 * 10 * cout) * 9 * (cin // groups)


def test_elementwise_fusion_counts_each_op_per_element():
    import tensorflow as tf

    n = 1000
    x = tf.ones((n,))
    module = _compiled(lambda x, a, b: tf.tanh(x * a + b), x, tf.constant(2.0), tf.constant(1.0))
    (fusion,) = _by_opcode(module, "fusion")
    assert flops.instruction_flops(fusion, module) == 3 * n  # multiply, add, tanh
    assert flops.instruction_bytes(fusion, module) == 4 * (n + 1 + 1 + n)


def test_dense_training_step_matches_the_bench_3f_count():
    """All FLOPs of one XLA-compiled SGD step of a Dense net against bench_compute's analytic count:
    the dots are exactly the matmuls a step runs (3F less the first layer's input gradient); bias
    adds, relu, the loss and the update add O(batch * width), under 2% here."""
    from tfscope.core.config import TrainConfig
    from tfscope.core.data.tables import Dataset
    from tfscope.core.train.trainer import Trainer
    from tfscope.profiling.bench_compute import matmul_step_flops, step_flops

    sizes, batch = (48, 64, 32, 4), 32
    rng = np.random.default_rng(0)
    data = Dataset(rng.standard_normal((batch, sizes[0])).astype(np.float32),
                   rng.standard_normal((batch, sizes[-1])).astype(np.float32),
                   tuple(f"x{i}" for i in range(sizes[0])), tuple(f"z{i}" for i in range(sizes[-1])), "random")
    config = TrainConfig(hidden=list(sizes[1:-1]), activation="relu", optimizer="sgd", learning_rate=0.01,
                         loss="mse", batch_size=batch, mode="xla", target_loss=0.0, standardize=False)
    trainer = Trainer(config, data)
    fn = trainer.compiled("xla")
    module = hlo.parse(hlo.compiler_ir(fn, hlo.step_args(trainer, "xla"), "optimized_hlo"))
    table = module.instructions
    dots = [i for i in module.scheduled() if i.opcode == "dot"]
    fused_dots = [i for c in module.fused() for i in module.computations.get(c, []) if i.opcode == "dot"]
    dot_flops = sum(flops.instruction_flops(i, module, table) for i in dots + fused_dots)
    assert dot_flops == matmul_step_flops(sizes, batch)
    total = flops.module_flops(module)
    assert matmul_step_flops(sizes, batch) < total < 1.02 * step_flops(sizes, batch)


def test_roofs_order_an_elementwise_pass_below_the_ridge_and_a_big_dot_above(measured_roofs):
    import tensorflow as tf

    roofs = measured_roofs
    assert roofs.peak_gflops > 0 and roofs.bandwidth_gbs > 0 and roofs.threads >= 1
    assert roofs.peak_spread[0] <= roofs.peak_gflops <= roofs.peak_spread[1]
    # the buffer (half the bytes of a pass) is 8x the L3, or at least twice it where that would pass 1 GiB
    assert roofs.stream_bytes // 2 >= min(8 * roofs.llc_bytes, max(2**30, 2 * roofs.llc_bytes))
    n = 1 << 16
    stream = _compiled(lambda x: x * 2.0 + 1.0, tf.ones((n,)))
    (ew,) = _by_opcode(stream, "fusion")
    ew_intensity = flops.instruction_flops(ew, stream) / flops.instruction_bytes(ew, stream)
    big = _compiled(lambda a, b: tf.matmul(a, b), tf.ones((1024, 1024)), tf.ones((1024, 1024)))
    (dot,) = _by_opcode(big, "dot")
    dot_intensity = flops.instruction_flops(dot, big) / flops.instruction_bytes(dot, big)
    assert ew_intensity < roofs.ridge < dot_intensity
    # the peak is the faster kernel's, and the convolution's FLOPs are the ones the report's rule counts
    assert roofs.peak_gflops == max(roofs.matmul_gflops, roofs.conv_gflops)
    assert roofs.peak_kernel == ("matmul" if roofs.matmul_gflops >= roofs.conv_gflops else "convolution")
    from tfscope.profiling.roofs import CONV_INPUT, CONV_KERNEL

    conv = _compiled(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"), tf.ones(CONV_INPUT), tf.ones(CONV_KERNEL))
    (c,) = _by_opcode(conv, "convolution")
    assert flops.instruction_flops(c, conv) == 2 * np.prod(CONV_INPUT[:3]) * CONV_KERNEL[3] * np.prod(CONV_KERNEL[:3])
    assert flops.instruction_flops(c, conv) / flops.instruction_bytes(c, conv) > roofs.ridge
    # at the roofs themselves, the classes follow
    assert roofline.classify(ew_intensity, roofs.bandwidth_gbs * ew_intensity, roofs.bandwidth_gbs,
                             roofs) == "memory"
    assert roofline.classify(dot_intensity, roofs.peak_gflops, roofs.peak_gflops / dot_intensity,
                             roofs) == "compute"
    assert roofline.classify(dot_intensity, 1e-6, 1e-6, roofs) == "overhead"


def test_roofs_survive_json():
    r = Roofs(100.0, (90.0, 110.0), 1024, 10.0, (9.0, 11.0), 1 << 27, 1 << 23, 5, 2)
    assert Roofs.from_dict(r.to_dict()) == r
    assert r.ridge == 10.0 and r.attainable(1.0) == 10.0 and r.attainable(100.0) == 100.0


# --- bytes where the operands-once rule would count memory never touched ---------------------------

SLICED_HLO = """HloModule sliced, is_scheduled=true

%fused_slice (p0: f32[1000,16], p1: s32[]) -> f32[4,16] {
  %p0 = f32[1000,16]{1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %z = s32[] constant(0)
  %ds = f32[4,16]{1,0} dynamic-slice(%p0, %p1, %z), dynamic_slice_sizes={4,16}
  ROOT %n = f32[4,16]{1,0} negate(%ds)
}

%fused_update (q0: f32[500], q1: f32[], q2: s32[]) -> f32[500] {
  %q0 = f32[500]{0} parameter(0)
  %q1 = f32[] parameter(1)
  %q2 = s32[] parameter(2)
  %r = f32[1]{0} reshape(%q1)
  ROOT %dus = f32[500]{0} dynamic-update-slice(%q0, %r, %q2)
}

ENTRY %main (data: f32[1000,16], hist: f32[500], loss: f32[], i: s32[]) -> (f32[4,16], f32[500]) {
  %data = f32[1000,16]{1,0} parameter(0)
  %hist = f32[500]{0} parameter(1)
  %loss = f32[] parameter(2)
  %i = s32[] parameter(3)
  %batch = f32[4,16]{1,0} fusion(%data, %i), kind=kLoop, calls=%fused_slice
  %logged = f32[500]{0} fusion(%hist, %loss, %i), kind=kLoop, calls=%fused_update
  %row = f32[1,16]{1,0} slice(%data), slice={[0:1], [0:16]}
  ROOT %out = (f32[4,16]{1,0}, f32[500]{0}) tuple(%batch, %logged)
}
"""


def test_sliced_and_updated_buffers_count_only_what_moves():
    """A batch taken from a dataset reads the batch, not the dataset; a loss written into a history
    writes one value in place, not the history: hand counts from the shapes."""
    module = hlo.parse(SLICED_HLO)
    insts = module.instructions
    assert flops.instruction_bytes(insts["batch"], module) == 4 * (4 * 16) + 4 + 4 * (4 * 16)  # slice, index, result
    assert flops.instruction_bytes(insts["logged"], module) == 4 + 4 + 4  # the loss in, its index, one value out
    assert flops.instruction_bytes(insts["row"], module) == 2 * 4 * 16
    assert flops.instruction_flops(insts["batch"], module) == 4 * 16  # the negate


@pytest.mark.parametrize("case", ["conv_same_stride2", "conv_valid", "conv_dilated", "conv_grouped", "depthwise_x2",
                                  "depthwise_stride2", "conv1d", "batch_matmul", "matmul"])
def test_convolution_and_dot_flops_match_tensorflows_own_count(case):
    """TensorFlow's graph statistics (`flops` of Conv2D, DepthwiseConv2dNative, MatMul, BatchMatMul:
    its own implementation, per output element the filter volume times in-channels per group, x2)
    against the roofline's count of the optimized HLO's convolutions and dots: padding, stride,
    dilation, groups, channel multipliers and batch dimensions, exactly."""
    import tensorflow as tf
    from tensorflow.python.framework import ops

    x4 = tf.ones((2, 11, 9, 6))  # (batch, height, width, channels)
    cases = {
        "conv_same_stride2": (lambda x, k: tf.nn.conv2d(x, k, 2, "SAME"), x4, tf.ones((3, 3, 6, 5))),
        "conv_valid": (lambda x, k: tf.nn.conv2d(x, k, 1, "VALID"), x4, tf.ones((4, 2, 6, 7))),
        "conv_dilated": (lambda x, k: tf.nn.conv2d(x, k, 1, "SAME", dilations=2), x4, tf.ones((3, 3, 6, 4))),
        "conv_grouped": (lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"), x4, tf.ones((3, 3, 2, 9))),  # 3 groups
        "depthwise_x2": (lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME"), x4, tf.ones((3, 3, 6, 2))),
        "depthwise_stride2": (lambda x, k: tf.nn.depthwise_conv2d(x, k, [1, 2, 2, 1], "VALID"), x4,
                              tf.ones((3, 3, 6, 1))),
        "conv1d": (lambda x, k: tf.nn.conv1d(x, k, 2, "SAME"), tf.ones((3, 17, 4)), tf.ones((5, 4, 6))),
        "batch_matmul": (lambda a, b: tf.matmul(a, b), tf.ones((2, 3, 5, 7)), tf.ones((2, 3, 7, 4))),
        "matmul": (lambda a, b: tf.matmul(a, b, transpose_b=True), tf.ones((6, 10)), tf.ones((8, 10))),
    }
    fn, a, b = cases[case]
    graph = tf.function(fn).get_concrete_function(a, b).graph
    theirs = sum(ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0 for op in graph.get_operations()
                 if op.type in ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "BatchMatMulV3"))
    assert theirs > 0
    module = _compiled(fn, a, b)
    table = module.instructions
    ours = sum(flops.instruction_flops(i, module, table) for c in [module.entry, *module.fused()]
               for i in module.computations.get(c, []) if i.opcode in ("convolution", "dot"))
    assert ours == theirs


def _synthetic_capture(logdir, events, hlo_text):
    """Write a one-plane XSpace holding `events` (line, name, start_us, end_us, {stat: value}) as a
    capture in LOGDIR, with the HLO text beside it, as profile_run leaves them."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from tfscope.profiling import hot_path

    space = xplane_pb2.XSpace()
    plane = space.planes.add(id=1, name="/host:CPU")
    names, stats, lines = {}, {}, {}
    for line, name, start, end, st in events:
        if name not in names:
            names[name] = len(names) + 1
            plane.event_metadata[names[name]].id = names[name]
            plane.event_metadata[names[name]].name = name
        if line not in lines:
            lines[line] = plane.lines.add(id=len(lines) + 1, name=line, timestamp_ns=0)
        e = lines[line].events.add(metadata_id=names[name], offset_ps=int(start * 1e6),
                                   duration_ps=int((end - start) * 1e6))
        for k, v in st.items():
            if k not in stats:
                stats[k] = len(stats) + 1
                plane.stat_metadata[stats[k]].id = stats[k]
                plane.stat_metadata[stats[k]].name = k
            s = e.stats.add(metadata_id=stats[k])
            if isinstance(v, str):
                s.str_value = v
            else:
                s.int64_value = v
    session = logdir / "plugins" / "profile" / "2025_01_01_00_00_00"
    session.mkdir(parents=True)
    (session / "host.xplane.pb").write_bytes(space.SerializeToString())
    (logdir / hot_path.HLO_NAME).write_text(hlo_text)


CHAIN_HLO = """HloModule m, is_scheduled=true

ENTRY %main (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  %a = f32[8]{0} exponential(%p)
  %b = f32[8]{0} negate(%p)
  ROOT %c = f32[8]{0} add(%a, %b)
}
"""


def test_explained_share_is_the_union_of_instructions_in_flight(tmp_path):
    """A hand-made timeline (us) of one call on two threads: `a` dispatches its work (event 10-20)
    and completes later; its completion marker comes at 60, after the continuation that ran its
    consumer `c` (50-70), so its work ended by 50. `b` runs meanwhile (22-40) on the dispatching
    thread. In flight: a 10-50 (40 us, 30 of them after its event), b 18 us, c 20 us; their union
    10-70 is 60 us of the executable's 90 (5-95) and the step's 100; summed, 78 us: 1.3x the union."""
    from tfscope.profiling import hot_path

    events = [("main", "train", 0, 100, {"step_num": 0}),
              ("main", "CpuExecutable::ExecuteAsyncOnStream", 5, 95, {}),
              ("pool1", "a", 10, 20, {"hlo_op": "a", "_p": 1}),
              ("pool1", "b", 22, 40, {"hlo_op": "b", "_p": 2}),
              ("pool1", "end: b", 39, 39.5, {"_c": 2}),
              ("pool2", "c", 50, 70, {"hlo_op": "c", "_p": 3}),
              ("pool2", "end: c", 69, 69.5, {"_c": 3}),
              ("pool2", "end: a", 60, 60.5, {"_c": 1})]
    _synthetic_capture(tmp_path, events, CHAIN_HLO)
    report = hot_path.from_logdir(tmp_path)
    times = {r["name"]: r["total_us"] for r in report["ops"]}
    assert times == pytest.approx({"a": 40.0, "b": 18.0, "c": 20.0}, abs=1e-9)
    assert report["async_tail_us"] == pytest.approx(30.0, abs=1e-9)
    assert report["covered_us"] == pytest.approx(60.0, abs=1e-9)
    assert report["explained_share_of_executable"] == pytest.approx(60 / 90, rel=1e-12)
    assert report["explained_share_of_step"] == pytest.approx(60 / 100, rel=1e-12)
    assert report["concurrency"] == pytest.approx(78 / 60, rel=1e-12)
    # rates: an instruction's FLOPs over its time in flight; overall, a call's FLOPs over the union
    r = roofline.build(report, CHAIN_HLO, Roofs(100.0, (90.0, 110.0), 1024, 10.0, (9.0, 11.0), 1 << 27, 1 << 23, 5, 2))
    assert {p["name"]: p["gflops"] for p in r["points"]} == pytest.approx(
        {"a": 8 / 40e-6 / 1e9, "b": 8 / 18e-6 / 1e9, "c": 8 / 20e-6 / 1e9}, rel=1e-9)
    assert r["flops_per_call"] == 3 * 8 and r["achieved_gflops_overall"] == pytest.approx(24 / 60e-6 / 1e9, rel=1e-9)
    # no consumer: the marker ends it; no marker after its event (work done inline): its event does
    alone = CHAIN_HLO.replace("add(%a, %b)", "add(%b, %b)")
    _synthetic_capture(tmp_path / "alone", events, alone)
    assert {r["name"]: r["total_us"] for r in hot_path.from_logdir(tmp_path / "alone")["ops"]}["a"] == \
        pytest.approx(50.0, abs=1e-9)
    inline = [e if e[1] != "end: a" else ("pool1", "end: a", 19, 19.5, {"_c": 1}) for e in events]
    _synthetic_capture(tmp_path / "inline", inline, CHAIN_HLO)
    assert {r["name"]: r["total_us"] for r in hot_path.from_logdir(tmp_path / "inline")["ops"]}["a"] == \
        pytest.approx(10.0, abs=1e-9)


# --- the roofline of a run's profile, against the analytic 3F of profiling/bench_compute.py ---------

SIZES, BATCH = (48, 64, 32, 1), 32


def dense(d: Path, batch_size: int = 0, rows: int = BATCH) -> Path:
    """A Dense regressor 48-64-32-1 (relu, SGD, MSE) on `rows` random rows, trained briefly in d / "run":
    full batch, or mini-batches of `batch_size`."""
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train

    rng = np.random.default_rng(0)
    table = rng.standard_normal((rows, SIZES[0] + 1))
    header = ",".join([f"x{i}" for i in range(SIZES[0])] + ["z"])
    np.savetxt(d / "data.csv", table, delimiter=",", header=header, comments="", fmt="%.6f")
    config = TrainConfig(data=str(d / "data.csv"), hidden=list(SIZES[1:-1]), activation="relu", optimizer="sgd",
                         learning_rate=0.01, loss="mse", batch_size=batch_size, steps=20, target_loss=0.0,
                         standardize=False)
    train(config, d / "run")
    return d / "run"


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    return dense(tmp_path_factory.mktemp("dense"))


@pytest.fixture(scope="module")
def run_profiles(dense_run, measured_roofs, tmp_path_factory):
    """The run profiled in xla mode (one step per call) and in the default fused mode (4 steps per
    call; this loop touches too much per iteration for XLA to compile it whole, so each instruction
    of its body is timed, 4 times a call), 2 calls each."""
    from tfscope.profiling import capture

    d = tmp_path_factory.mktemp("dense_profiles")
    xla = capture.profile_run(dense_run, d / "xla", mode="xla", calls=2, roofs=measured_roofs)
    fused = capture.profile_run(dense_run, d / "fused", calls=2, steps_per_call=4, roofs=measured_roofs)
    return xla, fused, d


def test_run_profile_flops_match_the_bench_3f_count(run_profiles):
    """Summed over the report's instructions, the FLOPs of one training step lie between the
    matmuls a step runs and 3F (profiling/bench_compute.py) plus 2% for bias adds, relu, the loss and
    the update, whether a call is one step (xla) or a loop of 4 (fused, per instruction)."""
    from tfscope.profiling.bench_compute import matmul_step_flops, step_flops

    xla, fused, d = run_profiles
    lo, hi = matmul_step_flops(SIZES, BATCH), 1.02 * step_flops(SIZES, BATCH)
    r = xla["roofline"]
    assert r["steps_per_call"] == 1 and lo < r["flops_per_step"] < hi
    module = hlo.parse((d / "xla" / "optimized_hlo.txt").read_text())
    assert r["flops_per_call"] == flops.module_flops(module)  # every instruction listed, each once per call
    assert r["note"] is None

    f = fused["roofline"]
    assert not fused["loops_compiled_whole"] and f["note"] is None
    dots = [p for p in f["points"] if p["opcode"] == "dot"]
    assert dots and {p["calls"] for p in dots} == {2 * 4}
    assert f["steps_per_call"] == 4 and lo < f["flops_per_step"] < hi


def test_run_profile_writes_the_roofline_files_and_summary(run_profiles):
    import json

    from tfscope.profiling import hot_path

    xla, fused, d = run_profiles
    for report, name in ((xla, "xla"), (fused, "fused")):
        saved = json.loads((d / name / "roofline.json").read_text())
        assert saved["points"] == report["roofline"]["points"]
        assert (d / name / "roofline.csv").read_text().count("\n") == len(saved["points"]) + 1
        assert (d / name / "roofline.png").stat().st_size > 10_000
        assert list((d / name / "roofline").glob("events.out.tfevents.*"))
        assert "roofline" not in json.loads((d / name / hot_path.JSON_NAME).read_text())
        assert [p["name"] for p in saved["points"]] == [r["name"] for r in report["ops"]]
    text = roofline.format_report(fused)
    assert "roofs:" in text and "totals:" in text and fused["roofline"]["points"][0]["name"] in text


def test_a_step_loop_compiled_whole_counts_one_step_per_execution(measured_roofs, tmp_path):
    """On mini-batches the fused loop gathers each step's rows and runs the step in a loop of its own,
    which XLA compiles whole and the outer loop executes once a step (2,048 rows of 48 features: too
    much for XLA to compile the outer loop whole): that call's point carries one step's FLOPs, not a
    call's (the same network, 8 rows a step, against the 3F count of bench_compute)."""
    from tfscope.profiling import capture
    from tfscope.profiling.bench_compute import matmul_step_flops, step_flops

    report = capture.profile_run(dense(tmp_path, batch_size=8, rows=2048), tmp_path / "log", calls=2, steps_per_call=4,
                                 roofs=measured_roofs)
    r = report["roofline"]
    (call,) = [p for p in r["points"] if p["opcode"] == "call"]
    assert len(report["loops_compiled_whole"]) == 1 and call["calls"] == 2 * 4 and r["note"]
    assert matmul_step_flops(SIZES, 8) < r["flops_per_step"] < 1.02 * step_flops(SIZES, 8)
    assert call["flops"] == pytest.approx(r["flops_per_step"], rel=0.02)

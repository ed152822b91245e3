"""FLOPs, bytes and roofs of the roofline report, each against a count made without its code.

Hand counts come from the shapes the test itself chose (2MNK for a dot, 2 * output elements *
kernel volume * in-channels per group for a convolution); the Dense training step is checked
against the analytic 3F count of profiling/bench_compute.py; the roofs against the ordering
any machine must show. Counts are integers and compared exactly: they are products of shapes.
"""

from __future__ import annotations

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
    assert roofs.stream_bytes // 2 >= 8 * roofs.llc_bytes  # the buffer (half the bytes of a pass) dwarfs the L3
    n = 1 << 16
    stream = _compiled(lambda x: x * 2.0 + 1.0, tf.ones((n,)))
    (ew,) = _by_opcode(stream, "fusion")
    ew_intensity = flops.instruction_flops(ew, stream) / flops.instruction_bytes(ew, stream)
    big = _compiled(lambda a, b: tf.matmul(a, b), tf.ones((1024, 1024)), tf.ones((1024, 1024)))
    (dot,) = _by_opcode(big, "dot")
    dot_intensity = flops.instruction_flops(dot, big) / flops.instruction_bytes(dot, big)
    assert ew_intensity < roofs.ridge < dot_intensity
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

"""XLA IR inspection on the lecture network: the text parser against the HloProto of the same
compilation (an independent reading of the same module), the files each stage writes, the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import tfscope


@pytest.fixture(scope="module")
def trainer(lecture_run):
    from tfscope.core.train.run import load_run

    t = load_run(lecture_run)
    t.steps_per_call = 50  # a small loss buffer; the loop's code is the same for any K
    return t


def proto_and_text(trainer, mode):
    from tensorflow.compiler.xla.service import hlo_pb2

    from tfscope.profiling import hlo

    fn, args = trainer.compiled(mode), hlo.step_args(trainer, mode)
    proto = hlo_pb2.HloProto()
    proto.ParseFromString(hlo.compiler_ir(fn, args, "optimized_hlo_proto_serialized"))
    return proto.hlo_module, hlo.compiler_ir(fn, args, "optimized_hlo")


def proto_shape(shape) -> str:
    from tensorflow.compiler.xla import xla_data_pb2

    if shape.tuple_shapes:
        return "(" + ", ".join(proto_shape(s) for s in shape.tuple_shapes) + ")"
    return f"{xla_data_pb2.PrimitiveType.Name(shape.element_type).lower()}[{','.join(map(str, shape.dimensions))}]"


@pytest.mark.parametrize("mode", ["xla", "fused"])
def test_parser_agrees_with_the_hlo_proto(trainer, mode):
    from tfscope.profiling import hlo

    proto, text = proto_and_text(trainer, mode)
    module = hlo.parse(text)
    by_name = {i.name: i for c in proto.computations for i in c.instructions}
    parsed = module.instructions
    assert set(parsed) == set(by_name)
    for name, inst in parsed.items():
        p = by_name[name]
        assert inst.opcode == p.opcode, name
        assert inst.shape.replace(" ", "") == proto_shape(p.shape).replace(" ", ""), name
        if p.opcode == "fusion":
            assert inst.fusion_kind == p.fusion_kind, name
    entry = next(c for c in proto.computations if c.id == proto.entry_computation_id)
    assert module.entry == entry.name


def test_summary_counts_match_the_hlo_proto(trainer):
    """Instructions by opcode outside fused/reducer computations, and the while body's opcodes."""
    from tfscope.profiling import hlo

    proto, text = proto_and_text(trainer, "fused")
    s = hlo.summary(hlo.parse(text))
    comps = {c.id: c for c in proto.computations}
    inner = {cid for c in proto.computations for i in c.instructions if i.opcode not in ("while", "conditional", "call")
             for cid in i.called_computation_ids}
    outer = [i for cid, c in comps.items() if cid not in inner for i in c.instructions]
    assert s["by_opcode"] == dict(Counter(i.opcode for i in outer))
    assert s["fusions_by_kind"] == dict(Counter(i.fusion_kind for i in outer if i.opcode == "fusion"))
    whiles = [i for i in outer if i.opcode == "while"]
    assert len(s["while_loops"]) == len(whiles) == 1
    for loop in s["while_loops"]:
        w = next(w for w in whiles if w.name == loop["instruction"])
        body = next(comps[c] for c in w.called_computation_ids if comps[c].name == loop["body"])
        assert loop["body_by_opcode"] == dict(Counter(i.opcode for i in body.instructions
                                                      if i.opcode not in hlo.NO_CODE))
        # forward x@W0 and the W0 gradient, once per step
        assert loop["body_by_opcode"].get("dot") == 2 and loop["compiled_whole"]


@pytest.mark.parametrize("stage,marker", [("stablehlo", "stablehlo."), ("optimized_hlo_dot", "digraph"),
                                          ("hlo", "HloModule")])
def test_each_stage_writes_its_ir(trainer, tmp_path, stage, marker):
    from tfscope.profiling import hlo

    report = hlo.write_ir(trainer, tmp_path, stage, ("fused",))
    path = tmp_path / hlo.ir_filename("fused", stage)
    assert report["modes"]["fused"]["ir_file"] == str(path)
    assert marker in path.read_text()
    assert (tmp_path / "fused_loop.graph.pbtxt").stat().st_size > 0


def test_tf_graph_counts_include_the_loop_body(trainer):
    """The fused function's graph is a While whose body is a library function: the counts reach
    into it, so the body's MatMuls (forward and backward) are there as in the one-step graph."""
    from tfscope.profiling import hlo

    step = hlo.graph_op_counts(trainer.compiled("xla"), ())
    loop = hlo.graph_op_counts(trainer.compiled("fused"), hlo.step_args(trainer, "fused"))
    assert loop.get("While") == 1
    assert loop.get("MatMul") == step.get("MatMul") > 0


def test_unknown_stage_is_one_line_listing_the_valid_ones(lecture_run, tmp_path):
    from tfscope.profiling import hlo

    r = tfscope("hlo", str(lecture_run), "--stage", "hlo_text", "--out", str(tmp_path / "ir"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "'hlo_text'" in r.stderr and all(s in r.stderr for s in hlo.STAGES)
    assert not (tmp_path / "ir").exists()


def test_cli_writes_both_modes_prints_the_loop_and_refuses_to_overwrite(lecture_run, tmp_path):
    out = tmp_path / "ir"
    r = tfscope("hlo", str(lecture_run), "--stage", "optimized_hlo", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "while loop" in r.stdout and "fusions by kind" in r.stdout
    summary = json.loads((out / "summary.optimized_hlo.json").read_text())
    assert set(summary["modes"]) == {"xla", "fused"}
    body = summary["modes"]["fused"]["optimized_hlo"]["while_loops"][0]["body_instructions"]
    assert all(line.split(" = ")[0] in r.stdout for line in body)
    before = (out / "step.optimized_hlo.txt").read_text()
    again = tfscope("hlo", str(lecture_run), "--stage", "optimized_hlo", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (out / "step.optimized_hlo.txt").read_text() == before


def test_fused_adam_loop_copies_no_optimizer_slot():
    """A guarded Adam step reads the slots it just stored, so XLA updates each slot in place: in the fused
    loop of a 16-64-64-1 net on mini-batches no (64, 64) slot is copied per step. The one (64, 64) copy
    allowed is the hidden weight, which the backward pass reads after its update is computed (the plain
    floor loop in profiling/bench_scaling.py copies it too). Under a tf.cond around the step all three
    were copied: 2 x 16 KiB more traffic a step, 4 MiB a step at width 1,024."""
    from tfscope.profiling import bench_scaling, hlo

    config = bench_scaling.TrainConfig(hidden=[64, 64], activation="relu", optimizer="adam", batch_size=32,
                                       mode="fused", target_loss=0.0, standardize=False, steps_per_call=50)
    trainer = bench_scaling.Trainer(config, bench_scaling.random_data())
    fn = trainer.compiled("fused")
    module = hlo.parse(hlo.compiler_ir(fn, hlo.step_args(trainer, "fused"), "optimized_hlo"))
    loop = step_loop(module)
    copies = Counter(i.shape for i in module.computations[loop.body] if i.opcode == "copy")
    assert copies["f32[64,64]"] <= 1, copies
    assert copies["f32[16,64]"] == 0 and copies["f32[64]"] <= 1, copies


def step_loop(module):
    """The fused loop whose body is a training step (the one with the dots): a mini-batch run's steps
    run in a loop of their own inside the loop that gathers their rows."""
    return max(module.whiles(), key=lambda w: sum(i.opcode == "dot" for i in module.computations[w.body]))


def test_a_small_step_on_a_large_dataset_is_compiled_whole():
    """XLA:CPU's cost analysis counts a gather as reading all of the dataset (4,096 x 16 float32: the
    256 KiB threshold of core/xla_flags.py alone), so a step loop holding its gathers paid a runtime call
    per instruction. The gathers sit outside the step's loop, which XLA compiles into one function; the
    loop around it, which gathers, does not qualify and keeps its few runtime calls."""
    from tfscope.profiling import bench_scaling, hlo

    config = bench_scaling.TrainConfig(hidden=[16, 16], activation="relu", optimizer="adam", batch_size=32,
                                       mode="fused", target_loss=0.0, standardize=False, steps_per_call=50)
    trainer = bench_scaling.Trainer(config, bench_scaling.random_data())
    module = hlo.parse(hlo.compiler_ir(trainer.compiled("fused"), hlo.step_args(trainer, "fused"), "optimized_hlo"))
    loop = step_loop(module)
    assert module.compiled_whole(loop)
    (outer,) = [w for w in module.whiles() if w is not loop]
    assert not module.compiled_whole(outer)
    assert not any(i.opcode == "gather" or "gather" in i.name for i in module.computations[loop.body])

"""Profiler capture, summaries and the hot-path report on the lecture network.

The report's numbers are checked against routes that do not go through its code: the raw XSpace
protobuf read here directly, the HloProto of the executed module that the capture itself carries
(/host:metadata), the loop structure of the optimized HLO, finite-difference gradients, and a
live TensorBoard serving the log directory.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import tfscope

pytestmark = pytest.mark.slow(seconds=80)  # the file's test time under -n 2; see conftest


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def raw_space(report: dict):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(report["xplane"]).read_bytes())
    return space


def raw_events(space):
    """(plane, name, start_ps, duration_ps, {stat: value}) for every event: written here, not
    taken from tfscope.profiling.xplane, so the report is compared with an independent reading."""
    for plane in space.planes:
        md = plane.stat_metadata
        for line in plane.lines:
            for e in line.events:
                stats = {}
                for s in e.stats:
                    kind = s.WhichOneof("value")
                    stats[md[s.metadata_id].name] = md[s.ref_value].name if kind == "ref_value" else getattr(s, kind)
                yield (plane.name, plane.event_metadata[e.metadata_id].name, line.timestamp_ns * 1000 + e.offset_ps,
                       e.duration_ps, stats)


def read_events(logdir: Path):
    import tensorflow as tf

    for f in sorted((logdir / "train").glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(f)):
            yield tf.compat.v1.Event.FromString(record.numpy())


def scalars(logdir: Path) -> dict[str, dict[int, float]]:
    import tensorflow as tf

    out: dict[str, dict[int, float]] = {}
    for e in read_events(logdir):
        for v in e.summary.value:
            if v.metadata.plugin_data.plugin_name == "scalars":
                out.setdefault(v.tag, {})[e.step] = float(tf.make_ndarray(v.tensor))
    return out


@pytest.fixture(scope="module")
def fused(lecture_run, tmp_path_factory):
    """The per-instruction capture (fused mode) of the lecture run, with the run directory's state
    before: made by `tfscope profile --per-instruction` in a fresh process, as XLA reads the option
    at the first compilation of a process (this one compiles the loop whole)."""
    before = snapshot(lecture_run)
    logdir = tmp_path_factory.mktemp("profile") / "log"
    p = tfscope("profile", str(lecture_run), "--logdir", str(logdir), "--per-instruction")
    assert p.returncode == 0, p.stderr
    report = json.loads((logdir / "hot_path.json").read_text())
    assert report["kind"] == "hlo" and not report["loops_compiled_whole"]
    assert "roofs:" in p.stdout and "roofline.png" in p.stdout
    report["roofline"] = json.loads((logdir / "roofline.json").read_text())
    return logdir, report, before, [line for line in p.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def whole(lecture_run, measured_roofs, tmp_path_factory):
    """The default capture, in this process: the fused loop as training runs it, one compiled function."""
    from tfscope.profiling import capture

    logdir = tmp_path_factory.mktemp("profile_whole") / "log"
    warnings: list[str] = []
    return logdir, capture.profile_run(lecture_run, logdir, warn=warnings.append, roofs=measured_roofs), warnings


def test_one_step_marker_per_captured_call(fused):
    logdir, report, _, _ = fused
    markers = sorted(s["step_num"] for _, name, _, _, s in raw_events(raw_space(report)) if name == "train")
    assert markers == list(range(report["window"]["calls"]))
    assert report["step_numbers"] == markers and report["calls"] == len(markers)


def test_every_reported_instruction_is_in_the_optimized_hlo(fused):
    logdir, report, _, _ = fused
    text = (logdir / "optimized_hlo.txt").read_text()
    assert report["kind"] == "hlo" and report["ops"]
    for row in report["ops"]:
        assert re.search(rf"^\s*(ROOT )?%?{re.escape(row['name'])} = ", text, re.M), row["name"]


def test_opcodes_match_the_executed_modules_hlo_proto(fused):
    """The capture carries the HloProto of the module that ran: names and opcodes must agree with
    the report's join (which came from experimental_get_compiler_ir's text)."""
    from tensorflow.compiler.xla.service import hlo_pb2

    _, report, _, _ = fused
    opcodes = {}
    space = raw_space(report)
    meta = next(p for p in space.planes if p.name == "/host:metadata")
    for md in meta.event_metadata.values():
        for s in md.stats:
            if meta.stat_metadata[s.metadata_id].name == "Hlo Proto":
                proto = hlo_pb2.HloProto()
                proto.ParseFromString(s.bytes_value)
                if proto.hlo_module.name.split("__")[0] in report["hlo_module"]:
                    opcodes.update({i.name: i.opcode for c in proto.hlo_module.computations for i in c.instructions})
    assert opcodes, "no HloProto of the profiled module in /host:metadata"
    for row in report["ops"]:
        assert opcodes[row["name"]] == row["opcode"], row


def test_listed_ops_explain_at_least_half_of_the_executable(fused):
    _, report, _, _ = fused
    assert report["executable_us"] > 0
    assert 0.5 <= report["explained_share_of_executable"] <= 1.0 + 1e-9
    assert 0 < report["explained_share_of_step"] <= 1.0 + 1e-9


def test_instruction_counts_follow_the_loop_structure(fused):
    """Per call the loop's body runs once per step (k), its condition once more, the update branch
    (where XLA keeps the guard a conditional) once per step, the entry once. The event counts must
    say exactly that (target loss 0 keeps every loop full)."""
    from tfscope.profiling import hlo

    logdir, report, _, _ = fused
    module = hlo.parse((logdir / "optimized_hlo.txt").read_text())
    n, k = report["calls"], report["steps_per_call"]
    (loop,) = module.whiles()
    expected = {module.entry: n, loop.body: n * k, loop.condition: n * (k + 1)}
    expected.update({g.true_computation: n * k for g in module.guards(loop.body)})
    where = {i.name: i.computation for i in module.scheduled()}
    assert report["steps_captured"] == n * k
    for row in report["ops"]:
        assert row["calls"] == expected[where[row["name"]]], row


def test_self_times_add_up_to_the_top_level_instructions(fused):
    """Self time moves a while loop's body out of the loop's own time but creates or loses none:
    the listed total equals the summed raw duration of the entry computation's instructions."""
    from tfscope.profiling import hlo

    logdir, report, _, _ = fused
    module = hlo.parse((logdir / "optimized_hlo.txt").read_text())
    entry = {i.name for i in module.computations[module.entry]}
    steps = [(s, s + d) for _, name, s, d, st in raw_events(raw_space(report)) if name == "train" and "step_num" in st]
    total_ps = sum(d for _, _, s, d, st in raw_events(raw_space(report))
                   if st.get("hlo_op") in entry and any(a <= s < b for a, b in steps))
    assert report["listed_us"] == pytest.approx(total_ps / 1e6, rel=1e-9)


def test_default_capture_is_bounded(fused):
    from tfscope.profiling import capture

    _, report, _, warnings = fused
    size = Path(report["xplane"]).stat().st_size
    assert size == report["xplane_bytes"]
    # The capture also carries, in /host:metadata, the HLO of every XLA module this process has
    # compiled: a fresh `tfscope profile` holds only the run's, a test process after other tests
    # holds many. The window's own planes are what the default bounds.
    space = raw_space(report)
    metadata = sum(p.ByteSize() for p in space.planes if p.name == "/host:metadata")
    assert size - metadata < capture.SIZE_LIMIT_BYTES
    assert report["window"]["estimated_events"] <= capture.DEFAULT_EVENT_BUDGET
    assert not warnings
    # The instruction-count estimate must not undercount what was recorded.
    assert report["events_in_window"] <= 1.25 * report["window"]["estimated_events"]


def test_default_capture_times_the_loop_as_one_call(whole):
    """As trained, the loop is one compiled function: the report holds the call that runs it (once
    per captured call, most of the executable's time), no instruction of its body, and says so."""
    from tfscope.profiling import hlo, hot_path

    logdir, report, warnings = whole
    module = hlo.parse((logdir / "optimized_hlo.txt").read_text())
    loops = [w for w in module.whiles() if module.compiled_whole(w)]
    assert report["loops_compiled_whole"] == [w.name for w in loops] and loops
    calls = [r for r in report["ops"] if r["opcode"] == "call"]
    assert len(calls) == 1 and calls[0]["calls"] == report["calls"]
    assert calls[0]["share"] == max(r["share"] for r in report["ops"])
    inside = {c for w in loops for c in module.loop_parts()}
    where = {i.name: i.computation for i in module.scheduled()}
    assert not [r for r in report["ops"] if where[r["name"]] in inside]
    assert report["steps_captured"] == report["calls"] * report["steps_per_call"]
    assert report["events_in_window"] <= 1.25 * report["window"]["estimated_events"] and not warnings
    assert "--per-instruction" in hot_path.format_top(report)


def test_roofline_counts_the_loop_the_same_whole_or_instruction_by_instruction(fused, whole):
    """The loop compiled whole is one roofline point whose FLOPs are its steps per call times a step's;
    timed instruction by instruction, the same step is the sum over its body's points. Two routes
    through the HLO (the loop's computation times its iterations; each executed instruction times its
    events) must agree up to the instructions outside the loop, spread over the steps of a call
    (under 0.1% here)."""
    from tfscope.profiling import roofline

    _, per_instruction, _, _ = fused
    logdir, report, _ = whole
    r = report["roofline"]
    (loop,) = [p for p in r["points"] if p["opcode"] == "call"]
    assert loop["calls"] == report["calls"] and loop["flops"] > 0
    assert r["flops_per_step"] == pytest.approx(per_instruction["roofline"]["flops_per_step"], rel=1e-3)
    assert loop["flops"] == pytest.approx(report["steps_per_call"] * r["flops_per_step"], rel=1e-3)
    assert "one compiled function" in r["note"] and "--per-instruction" in roofline.format_report(report)
    assert json.loads((logdir / "roofline.json").read_text())["points"] == r["points"]


def test_profiling_leaves_the_run_directory_unchanged(fused, lecture_run):
    _, _, before, _ = fused
    assert snapshot(lecture_run) == before


def test_json_and_csv_hold_the_report(fused):
    logdir, report, _, _ = fused
    assert json.loads((logdir / "hot_path.json").read_text())["ops"] == report["ops"]
    rows = list(csv.DictReader((logdir / "hot_path.csv").open()))
    assert [r["name"] for r in rows] == [r["name"] for r in report["ops"]]
    totals = [float(r["total_us"]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert sum(totals) == pytest.approx(report["listed_us"], rel=1e-9)


def test_report_rebuilds_from_the_log_directory_alone(fused):
    from tfscope.profiling import hot_path

    logdir, report, _, _ = fused
    again = hot_path.from_logdir(logdir)
    assert again["ops"] == report["ops"] and again["steps_per_call"] == report["steps_per_call"]


def test_summaries_cover_every_step_run(fused, lecture_run):
    from tfscope.core.config import TrainConfig
    from tfscope.profiling import capture

    logdir, report, _, _ = fused
    sc = scalars(logdir)
    k = report["steps_per_call"]
    start = report["first_captured_step"] - capture.WARM_UP_CALLS * k
    steps = list(range(start, start + (capture.WARM_UP_CALLS + report["calls"]) * k))
    assert sorted(sc["loss"]) == steps
    lr = TrainConfig.load(lecture_run / "config.json").learning_rate
    assert sorted(sc["learning_rate"]) == steps
    assert all(v == pytest.approx(lr, rel=1e-7) for v in sc["learning_rate"].values())
    assert sorted(sc["gradient_norm/global"]) == [start, steps[-1] + 1]
    tags = {v.tag for e in read_events(logdir) for v in e.summary.value}
    assert {"weights/dense_0/w", "gradients/dense_1/b"} <= tags
    assert any(e.graph_def for e in read_events(logdir))


def test_logged_loss_matches_an_eager_evaluation(fused, lecture_run):
    """The first logged loss is the restored network's loss: evaluate it eagerly in float64.
    Tolerance 1e-3 relative: the trained loss is ~1e-10 in standardised units, residuals ~1e-5,
    and float32 rounding of residuals of that size is ~1e-7 absolute, about 1e-2 relative on each
    residual but averaging out over 19 rows to well under 1e-3 on the mean of squares."""
    from tfscope.core.nn import gradients
    from tfscope.core.train.run import load_run

    logdir, report, _, _ = fused
    sc = scalars(logdir)["loss"]
    t = load_run(lecture_run)
    weights = [v.numpy().astype(np.float64) for v in t.model.weights]
    expected = gradients.loss_at(t.model.mlp, t.config.loss, weights, t.x.numpy(), t.z.numpy())
    assert sc[min(sc)] == pytest.approx(expected, rel=1e-3)


def test_gradient_norm_summary_matches_finite_differences(tmp_path):
    """Gradient norms written at fresh (untrained) weights vs central differences in float64:
    float32 tape gradients of O(1) agree with float64 differences to ~1e-6 relative; 1e-4 holds.
    The biases' gradients are exactly 0 at the start (standardised data, zero biases: the
    residuals sum to 0), so there float32 leaves ~1e-7 of rounding: hence abs 1e-6."""
    from tfscope.core.config import TrainConfig
    from tfscope.core.data.tables import load
    from tfscope.core.nn import gradients
    from tfscope.core.train.trainer import Trainer
    from tfscope.profiling import summaries

    config = TrainConfig()
    t = Trainer(config, load(None, None, None, config.dtype))
    w = summaries.writer(tmp_path)
    norms = summaries.write_state(w, t, step=0)
    w.flush()
    fd = gradients.finite_difference_gradients(t.model.mlp, config.loss, t.x.numpy(), t.z.numpy())
    written = scalars(tmp_path)
    for tag, g in zip(summaries.weight_tags(t), fd):
        assert written[f"gradient_norm/{tag}"][0] == pytest.approx(np.linalg.norm(g), rel=1e-4, abs=1e-6)
    assert written["gradient_norm/global"][0] == pytest.approx(np.sqrt(sum(np.sum(g * g) for g in fd)), rel=1e-4)
    assert norms["gradient_norm/global"] == pytest.approx(written["gradient_norm/global"][0], rel=1e-7)  # float32


def test_graph_mode_reports_tf_ops_of_the_step_graph(lecture_run, tmp_path):
    from tfscope.core.train.run import load_run
    from tfscope.profiling import capture

    report = capture.profile_run(lecture_run, tmp_path / "log", mode="graph", calls=3)
    assert report["kind"] == "tf_op" and report["step_numbers"] == [0, 1, 2]
    t = load_run(lecture_run)
    graph = t.compiled("graph").get_concrete_function().graph
    names = set()  # op names of the function and of the functions it calls (cond branches)
    for op in graph.get_operations():
        names.add(op.name)
    for f in graph.as_graph_def().library.function:
        names.update(n.name for n in f.node_def)
    for row in report["ops"]:
        name, op_type = row["name"].rsplit(":", 1)
        assert op_type == row["opcode"]
        assert name.rsplit("/", 1)[-1] in {n.rsplit("/", 1)[-1] for n in names}, row["name"]


def test_eager_mode_reports_each_op_type(lecture_run, tmp_path):
    from tfscope.profiling import capture

    report = capture.profile_run(lecture_run, tmp_path / "log", mode="eager", calls=2)
    assert report["kind"] == "tf_op" and report["step_numbers"] == [0, 1]
    types = {r["opcode"] for r in report["ops"]}
    assert {"MatMul", "ReadVariableOp"} <= types
    assert all(r["calls"] % 2 == 0 for r in report["ops"])  # every op runs the same number of times per call


def test_xla_mode_runs_each_instruction_once_per_call(lecture_run, measured_roofs, tmp_path):
    from tfscope.profiling import capture

    report = capture.profile_run(lecture_run, tmp_path / "log", mode="xla", calls=4, roofs=measured_roofs)
    assert report["kind"] == "hlo" and report["steps_per_call"] == 1
    assert {r["calls"] for r in report["ops"]} == {4}
    # One step per call: the executable's launch is a large part of it, so no floor on the share.
    assert 0 < report["explained_share_of_executable"] <= 1.0 + 1e-9
    assert [p["name"] for p in report["roofline"]["points"]] == [r["name"] for r in report["ops"]]


def test_oversized_window_is_flagged_in_one_line(lecture_run):
    from tfscope.core.train.run import load_run
    from tfscope.profiling import capture

    t = load_run(lecture_run)
    big = capture.plan_window(t, "fused", calls=10_000, steps_per_call=100_000)
    assert big.over_budget and big.estimated_events > capture.DEFAULT_EVENT_BUDGET
    line = capture.window_warning(big)
    assert line and "\n" not in line and "100,000" in line
    assert capture.window_warning(capture.plan_window(t, "fused")) is None


def test_cli_refuses_an_existing_logdir_in_one_line(lecture_run, tmp_path):
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "keep.txt").write_text("mine")
    r = tfscope("profile", str(lecture_run), "--logdir", str(logdir))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert (logdir / "keep.txt").read_text() == "mine"


def test_cli_profile_prints_the_report_and_how_to_open_it(lecture_run, tmp_path):
    logdir = tmp_path / "log"
    r = tfscope("profile", str(lecture_run), "--logdir", str(logdir), "--calls", "2", "--steps-per-call", "5",
                "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "optimized-HLO instruction" in r.stdout and "tensorboard --logdir" in r.stdout
    report = json.loads((logdir / "hot_path.json").read_text())
    assert report["calls"] == 2 and report["steps_per_call"] == 5
    for row in report["ops"][:3]:
        assert row["name"] in r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read()
        if resp.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    return json.loads(body)


def test_tensorboard_serves_the_profile_and_the_scalars(fused):
    logdir, report, _, _ = fused
    exe = Path(sys.executable).with_name("tensorboard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorboard.main"]
    port = _free_port()
    proc = subprocess.Popen([*cmd, "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/data"
    try:
        deadline, runs = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                runs = _get_json(f"{base}/plugin/profile/runs")
                if runs:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
        session = Path(report["xplane"]).parent.name
        assert runs and session in runs
        tools = _get_json(f"{base}/plugin/profile/run_tools?run={session}")
        assert "trace_viewer@" in tools or "trace_viewer" in tools
        tags = _get_json(f"{base}/plugin/scalars/tags")
        assert {"loss", "learning_rate", "gradient_norm/global"} <= set(tags["train"])
        assert "weights/dense_0/w" in _get_json(f"{base}/plugin/histograms/tags")["train"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_gpu_device_plane_lands_in_the_same_capture(lecture_run, tmp_path):
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU on this machine")
    from tfscope.profiling import capture

    report = capture.profile_run(lecture_run, tmp_path / "log", calls=2, steps_per_call=5)
    assert any(p.startswith("/device:GPU") for p in report["planes"])
    assert report["kind"] == "hlo" and report["ops"]


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_a_minibatch_step_outside_xla_stays_a_tf_op_report(tmp_path, mode):
    """A mini-batch graph or eager step computes its rows in one nested XLA-compiled call, whose
    instructions the capture also records: the report is still of the step's TF ops (that call one row
    among them), not of the nested call's instructions alone. Its matmuls are listed whatever grappler
    made of them (with oneDNN on, graph mode runs MatMul + BiasAdd as _MklNativeFusedMatMul)."""
    from tfscope.core.config import TrainConfig
    from tfscope.core.train.run import train
    from tfscope.profiling import capture

    run = tmp_path / "run"
    train(TrainConfig(batch_size=8, steps=20, mode=mode), run)
    report = capture.profile_run(run, tmp_path / "log", mode=mode, calls=3)
    opcodes = {row["opcode"] for row in report["ops"]}
    assert report["kind"] == "tf_op", opcodes
    assert "ResourceGather" in opcodes and any("MatMul" in o for o in opcodes), opcodes

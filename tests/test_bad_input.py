"""Bad input, one table over every command: broken CSV files, bad flags, wrong predict rows, a
RUN_DIR that is not a run, corrupt checkpoints and exports, outputs that exist or cannot be written.

Each case runs the command line in a subprocess, as a user would, in its own copy of one small
world (a trained run, an export, data files), and must: exit with status 2 (1 for a verify
mismatch), print exactly one line on stderr that names the culprit, print no traceback, and leave
the world exactly as it was: every file byte-identical, no file or directory added or removed
(hashes of the whole tree before and after). Cases run two at a time (one per core).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow(seconds=120)  # the file's test time under -n 2; see conftest

GOOD = "x,y,z\n1,2,10\n2,1,9\n3,3,17\n0,1,5\n"
CSV = {  # name -> contents (bytes are written as they are)
    "good.csv": GOOD,
    "empty.csv": "",
    "header.csv": "x,y,z\n",
    "ragged.csv": "x,y,z\n1,2,10\n2,1\n3,3,17\n",
    "text.csv": "x,y,z\n1,2,10\n2,one,9\n3,3,17\n",
    "nan.csv": "x,y,z\n1,2,10\n2,1,nan\n3,3,17\n",
    "inf.csv": "x,y,z\n1,2,10\n2,1,9\n3,-inf,17\n",
    "dup.csv": "x,x,z\n1,2,10\n2,1,9\n3,3,17\n",
    "garbage.bin": bytes(range(256)) * 4,
    "bad_predict.csv": "x,y\n1,2\n3\n",
    "big.csv": "x,y\n3,2\n1e39,2\n",
}

# (case id, argv, exit status, text the stderr line must contain: the culprit)
# Paths are relative to the case's own copy of the world (the subprocess's working directory):
# run/ a trained run, export/ its export, file a regular file (nothing can be created under it).
TRAIN = ("train", "--out", "new", "--steps", "5")
CASES = [
    # malformed CSV files
    ("csv empty", (*TRAIN, "--data", "empty.csv"), 2, "empty.csv: the file is empty"),
    ("csv header only", (*TRAIN, "--data", "header.csv"), 2, "header.csv"),
    ("csv ragged row", (*TRAIN, "--data", "ragged.csv"), 2, "ragged.csv: row 3: has 2 fields"),
    ("csv non-numeric", (*TRAIN, "--data", "text.csv"), 2, "text.csv: row 3"),
    ("csv nan", (*TRAIN, "--data", "nan.csv"), 2, "nan.csv: row 3"),
    ("csv -inf", (*TRAIN, "--data", "inf.csv"), 2, "inf.csv: row 4"),
    ("csv duplicate column", (*TRAIN, "--data", "dup.csv"), 2, "dup.csv: row 1: column name 'x' appears twice"),
    ("csv missing target", (*TRAIN, "--data", "good.csv", "--target", "w"), 2, "good.csv: target column 'w'"),
    ("csv binary garbage", (*TRAIN, "--data", "garbage.bin"), 2, "garbage.bin: row 3: not UTF-8 text"),
    ("csv is a directory", (*TRAIN, "--data", "run"), 2, "run: is a directory"),
    ("csv missing", (*TRAIN, "--data", "nowhere.csv"), 2, "nowhere.csv: no such file"),
    # bad training flags
    ("lr negative", (*TRAIN, "--lr", "-0.1"), 2, "learning rate"),
    ("lr zero", (*TRAIN, "--lr", "0"), 2, "learning rate"),
    ("lr not a number", (*TRAIN, "--lr", "fast"), 2, "--lr"),
    ("steps zero", ("train", "--out", "new", "--steps", "0"), 2, "steps"),
    ("steps negative", ("train", "--out", "new", "--steps", "-3"), 2, "steps"),
    ("width zero", (*TRAIN, "--hidden", "0"), 2, "hidden"),
    ("width negative", (*TRAIN, "--hidden", "4,-2"), 2, "hidden"),
    ("width not a number", (*TRAIN, "--hidden", "4,two"), 2, "--hidden"),
    ("activation unknown", (*TRAIN, "--activation", "swish"), 2, "swish"),
    ("loss unknown", (*TRAIN, "--loss", "hinge"), 2, "hinge"),
    ("optimizer unknown", (*TRAIN, "--optimizer", "rmsprop"), 2, "rmsprop"),
    ("mode unknown", (*TRAIN, "--mode", "turbo"), 2, "turbo"),
    ("strategy unknown", (*TRAIN, "--strategy", "tpu"), 2, "--strategy"),
    ("steps per call zero", (*TRAIN, "--steps-per-call", "0"), 2, "steps per call"),
    ("batch size negative", (*TRAIN, "--batch-size", "-4"), 2, "batch size"),
    ("checkpoint every negative", (*TRAIN, "--checkpoint-every", "-1"), 2, "checkpoint every"),
    ("weight decay negative", (*TRAIN, "--weight-decay", "-0.1"), 2, "weight decay: must be >= 0"),
    ("clipnorm zero", (*TRAIN, "--clipnorm", "0"), 2, "clipnorm: must be > 0"),
    ("decay rate negative", (*TRAIN, "--schedule", "exponential", "--decay-steps", "10", "--decay-rate", "-0.5"), 2,
     "decay rate: must be in (0, 1]"),
    ("warmup not below steps", (*TRAIN, "--schedule", "cosine", "--decay-steps", "10", "--warmup-steps", "5"), 2,
     "warmup steps: 5 is not below the run's 5 steps"),
    ("boundaries not increasing", (*TRAIN, "--schedule", "piecewise", "--boundaries", "10,5", "--values", "1,.5,.1"),
     2, "boundaries: must increase strictly, got 10 then 5"),
    ("values count", (*TRAIN, "--schedule", "piecewise", "--boundaries", "10", "--values", "1,.5,.1"), 2,
     "values: must be one more than the boundaries (2), got 3"),
    ("unknown flag", (*TRAIN, "--epochs", "3"), 2, "--epochs"),
    # train's run directory
    ("train over a run", ("train", "--out", "run", "--steps", "5"), 2, "run: already exists"),
    ("train under a file", ("train", "--out", "file/run", "--steps", "5"), 2, "file/run"),
    ("train resume a non-run", ("train", "--out", "notarun", "--resume"), 2, "notarun: not a run directory"),
    ("train resume other lr", ("train", "--out", "run", "--resume", "--lr", "0.01"), 2, "learning_rate"),
    ("train resume a corrupt checkpoint", ("train", "--out", "corrupt", "--resume", "--steps", "3000"), 2,
     "corrupt/checkpoints/ckpt-"),
    ("train force over a non-run", ("train", "--out", "notarun", "--force", "--steps", "5"), 2, "notarun"),
    ("train force with bad data", ("train", "--out", "run", "--force", "--data", "ragged.csv"), 2, "ragged.csv"),
    # predict
    ("predict wrong arity", ("predict", "run", "3,2", "3"), 2, "row 2 '3' has 1 values"),
    ("predict non-numeric row", ("predict", "run", "3,two"), 2, "row 1 '3,two' is not numeric"),
    ("predict non-finite row", ("predict", "run", "3,inf"), 2, "row 1 '3,inf' is not finite"),
    ("predict no rows", ("predict", "run"), 2, "predict"),
    ("predict bad csv", ("predict", "run", "--csv", "bad_predict.csv"), 2, "bad_predict.csv: row 3"),
    ("predict csv beyond float32", ("predict", "run", "--csv", "big.csv"), 2, "big.csv: row 3, column 'x'"),
    ("predict row not plain decimal", ("predict", "run", "3,1_0"), 2, "row 1 '3,1_0' is not plain decimal"),
    ("predict not a run", ("predict", "notarun", "3,2"), 2, "notarun"),
    ("predict corrupt checkpoint", ("predict", "corrupt", "3,2"), 2, "corrupt/checkpoints/ckpt-"),
    ("predict garbage checkpoint index", ("predict", "badindex", "3,2"), 2, "badindex/checkpoints/checkpoint"),
    # export
    ("export opset 19", ("export", "run", "--out", "exp2", "--opset", "19"), 2, "--opset: 19"),
    ("export opset 12", ("export", "run", "--out", "exp2", "--opset", "12"), 2, "--opset: 12"),
    ("export existing dir", ("export", "run", "--out", "export"), 2, "export: already exists"),
    ("export force over a non-export", ("export", "run", "--out", "run", "--force"), 2, "run: exists and is not"),
    ("export under a file", ("export", "run", "--out", "file/exp"), 2, "file/exp: cannot create its directory file"),
    ("export into /proc", ("export", "run", "--out", "/proc/tfscope-export"), 2, "/proc/tfscope-export"),
    ("export not a run", ("export", "notarun", "--out", "exp2"), 2, "notarun"),
    ("export corrupt checkpoint", ("export", "corrupt", "--out", "exp2"), 2, "corrupt/checkpoints/ckpt-"),
    # verify
    ("verify truncated savedmodel", ("verify", "sm_cut"), 2, "sm_cut/saved_model: unreadable SavedModel"),
    ("verify truncated onnx", ("verify", "onnx_cut"), 2, "onnx_cut/model.onnx: unreadable ONNX model"),
    ("verify not an export", ("verify", "run"), 2, "run: not a complete export directory"),
    ("verify negative atol", ("verify", "export", "--atol", "-1"), 2, "--atol"),
    ("verify mismatch", ("verify", "onnx_off"), 1, None),
    # profile
    ("profile mode unknown", ("profile", "run", "--logdir", "prof", "--mode", "turbo"), 2, "turbo"),
    ("profile calls zero", ("profile", "run", "--logdir", "prof", "--calls", "0"), 2, "--calls"),
    ("profile steps per call zero", ("profile", "run", "--logdir", "prof", "--steps-per-call", "0"), 2,
     "--steps-per-call"),
    ("profile existing logdir", ("profile", "run", "--logdir", "notarun"), 2, "notarun: already exists"),
    ("profile logdir under a file", ("profile", "run", "--logdir", "file/prof"), 2, "file/prof"),
    ("profile not a run", ("profile", "notarun", "--logdir", "prof"), 2, "notarun"),
    # hlo
    ("hlo stage unknown", ("hlo", "run", "--out", "ir", "--stage", "llvm"), 2, "--stage: unknown stage 'llvm'"),
    ("hlo mode eager", ("hlo", "run", "--out", "ir", "--mode", "eager"), 2, "--mode: 'eager'"),
    ("hlo existing files", ("hlo", "run", "--out", "ir_done"), 2, "ir_done/"),
    ("hlo out under a file", ("hlo", "run", "--out", "file/ir"), 2, "file/ir"),
    ("hlo not a run", ("hlo", "notarun", "--out", "ir"), 2, "notarun"),
    # bench
    ("bench out is a file", ("bench", "--quick", "--out", "file"), 2, "--out file: exists and is not a directory"),
    ("bench out under a file", ("bench", "--quick", "--out", "file/b"), 2, "file/b"),
    ("bench existing results", ("bench", "--quick", "--out", "bench_done"), 2, "bench.json already exists"),
    # the command itself
    ("unknown command", ("fly",), 2, "fly"),
]


def tree(root: Path) -> dict[str, str]:
    """Every path under `root` -> its SHA-256 (files), 'dir' or the link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(lecture_run, tmp_path_factory) -> Path:
    """One directory holding every input a case may name (copied whole for each case)."""
    import onnx

    from tfscope.core.train.checkpoints import CHECKPOINT_DIR, INDEX
    from tfscope.export.writer import export_run

    w = tmp_path_factory.mktemp("world")
    for name, text in CSV.items():
        (w / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    (w / "file").write_text("a regular file\n")
    (w / "notarun").mkdir()
    (w / "notarun" / "notes.txt").write_text("not a run\n")
    shutil.copytree(lecture_run, w / "run")
    shutil.copytree(lecture_run, w / "corrupt")
    data = sorted((w / "corrupt" / CHECKPOINT_DIR).glob("ckpt-*.data-*"))[-1]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # the newest checkpoint cut in half
    shutil.copytree(lecture_run, w / "badindex")
    (w / "badindex" / CHECKPOINT_DIR / INDEX).write_bytes(b"\x00\xffnot a checkpoint state\n")
    export_run(w / "run", w / "export")
    for name in ("sm_cut", "onnx_cut", "onnx_off"):
        shutil.copytree(w / "export", w / name)
    pb = w / "sm_cut" / "saved_model" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 3])
    model = w / "onnx_cut" / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    proto = onnx.load(str(w / "onnx_off" / "model.onnx"))
    init = next(i for i in proto.graph.initializer if i.name.startswith("layer_0/") and len(i.dims) == 2)
    weights = onnx.numpy_helper.to_array(init).copy()
    weights.flat[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(weights, init.name))
    onnx.save(proto, str(w / "onnx_off" / "model.onnx"))
    (w / "ir_done").mkdir()
    (w / "ir_done" / "summary.optimized_hlo.json").write_text("{}\n")
    (w / "bench_done").mkdir()
    (w / "bench_done" / "bench.json").write_text("{}\n")
    # the export records the run's absolute path; the copies below move, so keep it honest:
    # every case gets its own copy of this whole directory
    return w


def run_case(world: Path, root: Path, case: tuple) -> dict:
    name, argv, status, needle = case
    here = root / name.replace(" ", "_")
    shutil.copytree(world, here, symlinks=True)
    before = tree(here)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, "-m", "tfscope", *argv], capture_output=True, text=True, timeout=300,
                       cwd=here, env=env)
    after = tree(here)
    return {"returncode": r.returncode, "stdout": r.stdout, "stderr": r.stderr, "before": before, "after": after}


@pytest.fixture(scope="module")
def results(world, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(2) as pool:
        futures = {case[0]: pool.submit(run_case, world, root, case) for case in CASES}
        return {name: f.result() for name, f in futures.items()}


def test_the_table_covers_every_command_with_at_least_25_cases():
    commands = {argv[0] for _, argv, _, _ in CASES}
    assert {"train", "predict", "export", "verify", "profile", "hlo", "bench"} <= commands
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit_and_touches_nothing(results, case):
    name, argv, status, needle = case
    r = results[name]
    assert "Traceback" not in r["stderr"] + r["stdout"]
    assert r["returncode"] == status, (r["stdout"][-2000:], r["stderr"][-2000:])
    changed = {k for k in set(r["before"]) | set(r["after"]) if r["before"].get(k) != r["after"].get(k)}
    if status == 1:  # a verify mismatch: the report says which runtime, input and layer, in parity.json too
        assert r["stderr"] == ""
        assert any(line.startswith("FAIL: ") and "layer_0" in line for line in r["stdout"].splitlines())
        assert changed == {"onnx_off/parity.json"}
        return
    lines = r["stderr"].splitlines()
    assert len(lines) == 1, r["stderr"]
    assert lines[0].startswith("tfscope: error: ") and needle in lines[0], lines[0]
    assert not changed, sorted(changed)

"""`export_run`: a trained run to EXPORT_DIR (saved_model/, model.onnx, inputs.npz, live/,
export.json, parity.json), written atomically.

Everything is written into a temporary directory beside EXPORT_DIR and renamed into place only
once complete and checked, so a crash or a kill never leaves a half export at EXPORT_DIR. An
existing EXPORT_DIR is refused unless `force`, and even then replaced only after the new export
is complete. Temporary directories left by a killed export are removed by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tensorflow as tf

from tfscope.core.errors import RunDirError
from tfscope.core.nn.network import Regressor
from tfscope.export.inputs import INPUTS, make_inputs, save_inputs
from tfscope.export.live import LIVE, save_live
from tfscope.export.parity import ONNX_FILE, PARITY, SAVED_MODEL, Report, verify, write_json, write_report
from tfscope.export.preflight import DEFAULT_OPSET, MARKER, check_opset, check_target
from tfscope.export.serving import INPUT, LAYERS, OUTPUT, SERVING, ExportModule, output_names

BATCH = "batch"  # the symbolic batch dimension's name in the ONNX graph
PARTIAL = ".partial-"
OLD = ".old-"  # an export being replaced (--force) waits under this name until the new one is in place


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(out: Path) -> None:
    """Delete temporary directories of earlier exports to `out` whose process has died. An export
    that a --force replacement moved aside is put back if that process died before the new one
    took its place (between the two renames of `commit`), else deleted."""
    for kind in (OLD, PARTIAL):
        for p in out.parent.glob(f".{out.name}{kind}*"):
            try:
                pid = int(p.name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if _pid_alive(pid):
                continue
            if kind == OLD and not out.exists():
                os.replace(p, out)
            else:
                shutil.rmtree(p, ignore_errors=True)


@contextmanager
def staged(out: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside EXPORT_DIR to write the export into: EXPORT_DIR's parent is
    created and dead exports' leftovers cleared first; when the block completes, the export is
    moved into place (EXPORT_DIR checked again: --force rules); whatever happens, no temporary
    directory is left behind."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        raise RunDirError(f"{out}: cannot create its directory {out.parent} ({why})") from None
    remove_stale(out)
    tmp = out.parent / f".{out.name}{PARTIAL}{os.getpid()}"
    try:
        try:
            tmp.mkdir()
        except OSError as e:
            raise RunDirError(f"{out}: cannot write in {out.parent} ({e.strerror})") from None
        yield tmp
        check_target(out, force)
        commit(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_onnx(module: ExportModule, path: Path, opset: int) -> None:
    """Convert `serve` with tf2onnx, name the batch dimension, check the model fully, save it."""
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(module.serve, input_signature=module.serve.input_signature,
                                             opset=opset)
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    expected = ([INPUT], output_names(module.model))
    if names != expected:
        raise RuntimeError(f"ONNX graph has inputs {names[0]} and outputs {names[1]}; expected {expected[0]} and "
                           f"{expected[1]}")
    for value in (proto.graph.input[0], *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def write_export(model: Regressor, x_train, directory: Path, opset: int, info: dict,
                 run_config: Path | None = None) -> None:
    """Write every export file of `model` into `directory` (not atomic by itself)."""
    module = ExportModule(model)
    save_live(model, directory / LIVE, info, run_config)
    save_inputs(directory / INPUTS, make_inputs(x_train))
    tf.saved_model.save(module, str(directory / SAVED_MODEL),
                        signatures={SERVING: module.serve, LAYERS: module.layers})
    write_onnx(module, directory / ONNX_FILE, opset)
    from tfscope.export.graph_verdict import digest

    meta = {"format": "tfscope-export", "version": 1, "opset": opset, "input": INPUT, "output": OUTPUT,
            "outputs": output_names(model), "files": [SAVED_MODEL, ONNX_FILE, INPUTS, LIVE, PARITY],
            "onnx_sha256": digest(directory / ONNX_FILE), **info}
    (directory / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def commit(tmp: Path, out: Path) -> None:
    """Move the complete export into place; an old one is removed only after the swap."""
    if out.exists():
        old = out.parent / f".{out.name}{OLD}{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_run(run_dir: str | Path, out_dir: str | Path, opset: int = DEFAULT_OPSET, force: bool = False,
               atol: float | None = None, rtol: float | None = None) -> Report:
    """Export the run's newest checkpoint to `out_dir`, verify it, and return the equivalence report."""
    from tfscope.core.train.run import CONFIG, load_run

    check_opset(opset)
    run_dir, out = Path(run_dir), Path(out_dir)
    check_target(out, force)
    trainer = load_run(run_dir)
    info = {"run_dir": str(run_dir.resolve()), "step": trainer.step, "features": list(trainer.data.features),
            "targets": list(trainer.data.targets), "tensorflow": tf.__version__}
    with staged(out, force) as tmp:
        write_export(trainer.model, trainer.data.x, tmp, opset, info, run_dir / CONFIG)
        report = verify(tmp, atol, rtol, write=False)
        report.export_dir = str(out)
        parity = getattr(report, "parity", None)  # a classifier or convnet: every named output, fixed rule
        if parity is not None:
            write_json(tmp / PARITY, parity())
        else:
            write_report(tmp / PARITY, report)
    return report


def _save_keras_savedmodel(source, path: Path) -> None:
    """The Keras model's serving function (named inputs, dict of named outputs) as a SavedModel."""
    module = tf.Module()
    module.variables_ = list(source.model.variables)  # tracked, so SavedModel saves them
    module.serve = source.function()
    tf.saved_model.save(module, str(path), signatures={SERVING: module.serve})


def write_model_export(source, directory: Path, opset: int, sets: dict, meta: dict, source_file: Path | None
                       ) -> None:
    """Every file of a model export into `directory` (not atomic by itself): the source (a copy of
    the .keras file, or of the whole SavedModel directory), saved_model/, model.onnx, inputs.npz,
    export.json. The ONNX file is converted from the export's own SavedModel signature, so the
    graph verify localises against is the graph that was converted."""
    import onnx

    from tfscope.core.sources.source import load_saved_model
    from tfscope.export.convert import to_onnx
    from tfscope.export.inputs import save_feed_sets
    from tfscope.export.model_parity import KERAS_FILE, SOURCE_DIR

    if meta["source"]["kind"] == "keras":
        (directory / SOURCE_DIR).mkdir()
        shutil.copyfile(source_file, directory / SOURCE_DIR / KERAS_FILE)
        _save_keras_savedmodel(source, directory / SAVED_MODEL)
        signature = SERVING
    else:
        shutil.copytree(source_file, directory / SAVED_MODEL, symlinks=False)
        signature = meta["source"]["signature"]
    graph = load_saved_model(directory / SAVED_MODEL, signature)
    proto = to_onnx(graph, opset)
    onnx.save(proto, str(directory / ONNX_FILE))
    save_feed_sets(directory / INPUTS, sets)
    files = [SAVED_MODEL, ONNX_FILE, INPUTS, PARITY] + ([SOURCE_DIR] if meta["source"]["kind"] == "keras" else [])
    from tfscope.export.graph_verdict import digest

    meta = {"format": "tfscope-export", "version": 2, "opset": opset, "files": files, **meta,
            "onnx_sha256": digest(directory / ONNX_FILE), "tensorflow": tf.__version__}
    (directory / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def export_model(out_dir: str | Path, keras: str | Path | None = None, saved_model: str | Path | None = None,
                 signature: str = SERVING, opset: int = DEFAULT_OPSET, force: bool = False,
                 shapes: dict | None = None, ranges: dict | None = None, batch_sizes=None,
                 npz: str | Path | None = None, atol: float | None = None, rtol: float | None = None,
                 deep: bool = True, reference: bool = True) -> Report:
    """Export a .keras file or one signature of a SavedModel to `out_dir` (SavedModel + ONNX +
    inputs + parity.json), verify it and return the report; as atomic as `export_run`. A bad
    input, an unconvertible op or a rejected ONNX model raises before anything is at `out_dir`."""
    from tfscope.core.sources import feeds
    from tfscope.core.sources.source import load_keras, load_saved_model
    from tfscope.export.model_parity import read_meta, report_dict
    from tfscope.export.parity import verify, write_json

    check_opset(opset)
    out = Path(out_dir)
    check_target(out, force)
    if (keras is None) == (saved_model is None):
        raise RunDirError("export: give exactly one of --keras MODEL.keras and --saved-model DIR")
    if keras is not None:
        from tfscope.core.sources.source import KerasSource
        from tfscope.export.rewrites import unroll_recurrent

        source = loaded = load_keras(keras)
        origin = {"kind": "keras", "path": str(Path(keras).resolve())}
        model, unrolled = unroll_recurrent(source.model)
        if unrolled:
            source = KerasSource(model, source.description)
            origin["rewrites"] = [f"unroll=True for {name}" for name in unrolled]
        source_file = Path(keras)
    else:
        source = load_saved_model(saved_model, signature)
        loaded = None  # verify loads the export's copy: the source directory is not read again
        origin = {"kind": "saved_model", "path": str(Path(saved_model).resolve()), "signature": signature}
        source_file = Path(saved_model)
    sizes = feeds.parse_batch_sizes(batch_sizes) if not isinstance(batch_sizes, tuple) else batch_sizes
    sets = feeds.generate(source.inputs, shapes, ranges, sizes, npz=npz)
    meta = {"source": origin, "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)}
                                         for s in source.inputs], "outputs": list(source.outputs)}
    with staged(out, force) as tmp:
        write_model_export(source, tmp, opset, sets, meta, source_file)
        report = verify(tmp, atol, rtol, write=False, deep=deep, reference=reference, source=loaded)
        report.export_dir = str(out)
        write_json(tmp / PARITY, report_dict(report, read_meta(tmp)))
    return report

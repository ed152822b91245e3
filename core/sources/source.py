"""The one seam for "a model": export, verify, profile and the testing API see only a Source, so
where a model came from (a tfscope run, a Keras file, a SavedModel signature, a tf.function with
its specs) does not matter downstream.

  source.inputs        [InputSpec]: names, dtypes, shapes (None = free dimension)
  source.outputs       output names, in the order the model returns them
  source.call(feeds)   {output: array}: the model as TensorFlow runs it, eagerly
  source.function()    a tf.function over the inputs (positional, in `inputs` order) returning
                       {output: tensor}; `jit_compile=True` for XLA compilation and profiling
  source.tensors(feeds, names)  named intermediate tensors of the frozen graph, for localisation
  source.float64()     the same model in float64 (weights cast exactly), or None with `why_no_float64`

Loading is `load_keras`, `load_saved_model`, `from_run`, `from_module`, `from_function`; a file that is
missing, not a model, or cut short is a one-line error naming it. TensorFlow is imported only when a
source is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfscope.core.errors import ConfigError, RunDirError
from tfscope.core.sources.feeds import Feeds, InputSpec

SERVING = "serving_default"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def _output_dict(result: Any, names: Sequence[str] | None) -> dict:
    """A model's result (tensor, list/tuple or dict) as {output name: tensor}."""
    if isinstance(result, dict):
        return dict(result)
    if isinstance(result, (list, tuple)):
        names = list(names or [])
        if len(names) != len(result):
            names = [f"output_{i}" for i in range(len(result))]
        return dict(zip(names, result))
    return {(list(names)[0] if names else "output_0"): result}


class Source:
    """Base: subclasses set `kind`, `description`, `inputs`, `outputs` and implement `_forward`
    (tensors in `inputs` order -> {output: tensor}); everything else is shared."""

    kind = "source"
    why_no_float64 = "no float64 form of this model"

    def __init__(self, description: str, inputs: Sequence[InputSpec], outputs: Sequence[str]) -> None:
        self.description = description
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self._functions: dict[bool, Any] = {}
        self._frozen: Any = None
        self._session: Any = None

    def _forward(self, *args):  # -> dict[str, tf.Tensor]
        raise NotImplementedError

    def specs(self) -> list:
        """tf.TensorSpecs of the inputs, named as the inputs (tf2onnx keeps these names)."""
        import tensorflow as tf

        return [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=s.name) for s in self.inputs]

    def args(self, feeds: Feeds) -> list:
        """The feeds as tensors of the inputs' dtypes, in `inputs` order: what `function()` takes."""
        import tensorflow as tf

        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise ConfigError(f"feeds: no value for input {missing[0]!r} (inputs: {', '.join(self.input_names)})")
        return [tf.constant(np.asarray(feeds[s.name]), tf.as_dtype(s.dtype)) for s in self.inputs]

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def call(self, feeds: Feeds) -> dict[str, np.ndarray]:
        out = self._forward(*self.args(feeds))
        return {k: np.asarray(out[k]) for k in self.outputs}

    def function(self, jit_compile: bool = False):
        """The model as one tf.function with a named input signature (free batch dimension kept)."""
        if jit_compile not in self._functions:
            import tensorflow as tf

            self._functions[jit_compile] = tf.function(lambda *args: self._forward(*args),
                                                       input_signature=self.specs(), jit_compile=jit_compile,
                                                       autograph=False)
        return self._functions[jit_compile]

    def run_function(self, feeds: Feeds, jit_compile: bool = False) -> dict[str, np.ndarray]:
        out = self.function(jit_compile)(*self.args(feeds))
        return {k: np.asarray(out[k]) for k in self.outputs}

    def frozen_graph(self):
        """(GraphDef with Variables folded into constants, input tensor names, {output: tensor name}):
        the graph tf2onnx converts, and the TF side of localisation."""
        if self._frozen is None:
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

            concrete = self.function().get_concrete_function()
            frozen = convert_variables_to_constants_v2(concrete)
            graph_def = frozen.graph.as_graph_def()
            inputs = [t.name for t in frozen.inputs if t.dtype != "resource"]
            flat = frozen.outputs
            structured = frozen.structured_outputs
            names = list(structured) if isinstance(structured, dict) else self.outputs
            self._frozen = (graph_def, inputs, {n: t.name for n, t in zip(names, flat)})
        return self._frozen

    def tensors(self, feeds: Feeds, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Values of intermediate tensors of the frozen graph (TF names such as 'model/dense/MatMul:0');
        names=None gives every floating-point tensor that a node produces."""
        import tensorflow as tf

        graph_def, inputs, _ = self.frozen_graph()
        if self._session is None:  # one graph and session per source: a frozen graph runs without lifting
            graph = tf.Graph()
            with graph.as_default():
                tf.compat.v1.import_graph_def(graph_def, name="")
            self._session = tf.compat.v1.Session(graph=graph)
        graph = self._session.graph
        if names is None:
            skip = {"Const", "Placeholder", "NoOp"}
            names = [t.name for op in graph.get_operations() if op.type not in skip
                     for t in op.outputs if t.dtype.is_floating]
        args = self.args(feeds)
        values = self._session.run(list(names), {n: a.numpy() for n, a in zip(inputs, args)})
        return {n: np.asarray(v) for n, v in zip(names, values)}

    def float64(self) -> Source | None:
        return None


class RunSource(Source):
    """A tfscope network (raw x of the model's `in_shape` in), live or rebuilt from an export's
    checkpoint. `outputs` names what it returns, in order: one name for a regressor's z, two for a
    classifier's logits and probabilities (the export passes export/serving.py `output_names`)."""

    kind = "run"

    def __init__(self, model, description: str = "tfscope network", input_name: str = "x",
                 outputs: Sequence[str] = ("z",)) -> None:
        classifier = hasattr(model, "probabilities")
        if len(outputs) != (2 if classifier else 1):
            raise ValueError(f"RunSource: a {'classifier' if classifier else 'regressor'} returns "
                             f"{2 if classifier else 1} output(s), got names {list(outputs)}")
        spec = InputSpec(input_name, model.dtype.name, (None, *model.in_shape))
        super().__init__(description, [spec], list(outputs))
        self.model = model

    def _forward(self, x):
        if len(self.outputs) == 2:
            from tfscope.core.nn.losses import probabilities

            logits = self.model(x)  # (batch, classes), or (batch, 1) for two classes
            return {self.outputs[0]: logits, self.outputs[1]: probabilities(logits)}  # (batch, classes)
        return {self.outputs[0]: self.model(x)}

    def float64(self) -> RunSource:
        """The same network in float64: every Variable cast exactly from its float32 value."""
        import tensorflow as tf

        if self.model.dtype == tf.float64:
            return self
        return RunSource(self.model.like(tf.float64), f"{self.description}, float64", self.inputs[0].name,
                         self.outputs)


class KerasSource(Source):
    """A Keras 3 model (from a .keras file or in memory), called with its own input names."""

    kind = "keras"

    def __init__(self, model, description: str = "Keras model") -> None:
        struct = getattr(model, "_inputs_struct", None)
        if isinstance(struct, dict):
            named = list(struct.items())
        else:
            named = [(_keras_name(t, i), t) for i, t in enumerate(model.inputs)]
        inputs = [InputSpec(name, _dtype_name(t.dtype), tuple(t.shape)) for name, t in named]
        self.model = model
        self._single = len(inputs) == 1 and not isinstance(struct, dict)
        probe = model.outputs
        if isinstance(getattr(model, "_outputs_struct", None), dict):
            names = list(model._outputs_struct)
        else:
            names = [_keras_name(t, i, "output") for i, t in enumerate(probe)]
            if len(set(names)) != len(names):
                names = [f"output_{i}" for i in range(len(probe))]
        super().__init__(description, inputs, names)

    def structured(self, args: Sequence) -> Any:
        """Input tensors (in `inputs` order) in the structure the Keras model is called with: one
        tensor, or a dict by input name."""
        return args[0] if self._single else {s.name: a for s, a in zip(self.inputs, args)}

    def _forward(self, *args):
        return _output_dict(self.model(self.structured(args), training=False), self.outputs)

    def float64(self) -> KerasSource | None:
        """The model cloned with every layer's dtype policy float64 and its weights cast exactly."""
        import keras

        def clone(layer):
            config = layer.get_config()
            config["dtype"] = "float64"
            return layer.__class__.from_config(config)

        try:
            m64 = keras.models.clone_model(self.model, clone_function=clone)
            m64.set_weights([np.asarray(w).astype(np.float64) if np.asarray(w).dtype.kind == "f" else w
                             for w in self.model.get_weights()])
        except Exception as e:  # noqa: BLE001  (any layer may refuse; the reason is reported)
            self.why_no_float64 = f"Keras could not rebuild the model in float64 ({_first_line(e)})"
            return None
        src = KerasSource(m64, f"{self.description}, float64")
        src.inputs = [InputSpec(s.name, "float64" if s.kind == "float" else s.dtype, s.shape) for s in self.inputs]
        return src


def _keras_name(tensor, index: int, kind: str = "input") -> str:
    """A stable name for a model's input or output: the name of the layer that makes the tensor
    (an InputLayer's name is saved in the .keras file; the tensor's own 'keras_tensor_N' is a
    per-process counter), else the tensor's name, else `{kind}_{index}`."""
    layer = getattr(getattr(tensor, "_keras_history", None), "operation", None)
    name = getattr(layer, "name", None) or getattr(tensor, "name", None) or f"{kind}_{index}"
    return name.split(":")[0]


def _dtype_name(dtype) -> str:
    import tensorflow as tf

    return tf.as_dtype(dtype).name if not isinstance(dtype, str) else np.dtype(dtype).name


class SignatureSource(Source):
    """One signature of a SavedModel: keyword inputs and a dict of outputs, as the signature defines."""

    kind = "saved_model"

    def __init__(self, loaded, signature: str, path: str) -> None:
        fn = loaded.signatures[signature]
        _, kwargs = fn.structured_input_signature
        inputs = [InputSpec(name, spec.dtype.name, tuple(spec.shape.as_list()) if spec.shape.rank is not None else ())
                  for name, spec in sorted(kwargs.items())]
        outputs = sorted(fn.structured_outputs) if isinstance(fn.structured_outputs, dict) else ["output_0"]
        super().__init__(f"SavedModel {path}, signature {signature}", inputs, outputs)
        self.loaded, self.signature, self.path, self._fn = loaded, signature, path, fn

    def _forward(self, *args):
        return _output_dict(self._fn(**{s.name: a for s, a in zip(self.inputs, args)}), self.outputs)


class FunctionSource(Source):
    """Any callable of TensorFlow tensors with its input specs (a tf.function, a tf.Module method)."""

    kind = "function"

    def __init__(self, fn: Callable, specs: Sequence, outputs: Sequence[str] | None = None,
                 description: str = "function") -> None:
        inputs = [InputSpec(s.name or f"input_{i}", s.dtype.name, tuple(s.shape.as_list()))
                  for i, s in enumerate(specs)]
        self._fn = fn
        if outputs is None:
            import tensorflow as tf

            probe = tf.function(fn).get_concrete_function(*specs).structured_outputs
            outputs = list(probe) if isinstance(probe, dict) else (
                [f"output_{i}" for i in range(len(probe))] if isinstance(probe, (list, tuple)) else ["output_0"])
        super().__init__(description, inputs, outputs)

    def _forward(self, *args):
        return _output_dict(self._fn(*args), self.outputs)


def load_keras(path: str | Path) -> KerasSource:
    """A .keras (or .h5) file as a Source; a missing, cut or non-model file is one RunDirError."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: no such file")
    if path.is_dir():
        raise RunDirError(f"{path}: is a directory; --keras takes a .keras file (for a SavedModel use --saved-model)")
    import keras

    try:
        try:
            model = keras.saving.load_model(str(path))
        except (TypeError, ValueError) as e:
            if "compile" not in str(e).lower() and "loss" not in str(e).lower():
                raise
            model = keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001  (zip, h5, JSON and Keras errors all mean: not a loadable model)
        raise RunDirError(f"{path}: not a loadable Keras model ({_first_line(e)})") from None
    if not getattr(model, "inputs", None):
        raise RunDirError(f"{path}: the Keras model has no defined inputs (build it on an Input before saving)")
    return KerasSource(model, f"Keras model {path}")


def load_saved_model(path: str | Path, signature: str = SERVING) -> SignatureSource:
    """One signature of a SavedModel directory; an unknown signature lists the ones there are."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: no such directory")
    if not path.is_dir() or not (path / "saved_model.pb").is_file():
        raise RunDirError(f"{path}: not a SavedModel directory (no saved_model.pb)")
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001  (protobuf, OpError and OSError all mean: unreadable)
        raise RunDirError(f"{path}: unreadable SavedModel ({_first_line(e)})") from None
    if signature not in loaded.signatures:
        have = ", ".join(sorted(loaded.signatures)) or "none"
        raise ConfigError(f"--signature {signature}: no such signature in {path}; it has: {have}")
    return SignatureSource(loaded, signature, str(path))


def from_run(run_dir: str | Path) -> RunSource:
    """The newest checkpoint of a tfscope run directory as a Source."""
    from tfscope.core.train.run import load_run

    trainer = load_run(run_dir)
    return RunSource(trainer.model, f"tfscope run {run_dir}")


def from_function(fn: Callable, specs: Sequence, outputs: Sequence[str] | None = None) -> FunctionSource:
    return FunctionSource(fn, specs, outputs)


def as_source(model, specs: Sequence | None = None) -> Source:
    """Anything the testing API accepts as a TensorFlow model: a Source, a Keras model, a .keras
    path, a SavedModel path, or a callable with its specs."""
    if isinstance(model, Source):
        return model
    if isinstance(model, (str, Path)):
        p = Path(model)
        return load_saved_model(p) if p.is_dir() else load_keras(p)
    if hasattr(model, "inputs") and hasattr(model, "get_weights"):
        return KerasSource(model)
    if callable(model) and specs is not None:
        return FunctionSource(model, specs)
    raise ConfigError(f"model: cannot use {type(model).__name__} as a model (give a Keras model, a path, "
                      "or a callable with its input specs)")

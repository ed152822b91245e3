"""The one serving module per trained network: raw x in, raw z out, standardisation folded in.

`serve` is the exported function (signature `serving_default`: input `x`, output `z`; a
classifier's outputs are `logits` and `probabilities` (softmax; [1 - p, p] for one logit), see
`output_names`). It is a
plain `tf.function` with an explicit, named input signature and no `jit_compile`: XLA-compiled
functions have been reported to change their outputs after a SavedModel reload. `layers` returns
every stage's output under the same names and name scopes, so a mismatch can be traced to the
first stage that diverges, in the SavedModel (signature `layers`) and in the ONNX graph (whose
node names keep the scopes).
"""

from __future__ import annotations

import tensorflow as tf

from tfscope.core.nn import losses
from tfscope.core.nn.network import Classifier, Regressor

SERVING, LAYERS = "serving_default", "layers"
INPUT, OUTPUT = "x", "z"
LOGITS, PROBABILITIES = "logits", "probabilities"  # a classifier's two outputs
STANDARDIZE, UNSTANDARDIZE = "standardize", "unstandardize"


def output_names(model: Regressor) -> list[str]:
    """The serving signature's outputs, in order: [z], or a classifier's [logits, probabilities]."""
    return [LOGITS, PROBABILITIES] if isinstance(model, Classifier) else [OUTPUT]


def stage_names(model: Regressor) -> list[str]:
    """Names of the stages in order: standardised input, each layer, then the raw output (a
    classifier: its probabilities; its logits are the last layer's output)."""
    last = PROBABILITIES if isinstance(model, Classifier) else UNSTANDARDIZE
    return [STANDARDIZE, *[f"layer_{i}" for i in range(len(model.mlp.layers))], last]


class ExportModule(tf.Module):
    """Wraps a Regressor for export; tracks its Variables so SavedModel saves them."""

    def __init__(self, model: Regressor) -> None:
        super().__init__(name="export")
        self.model = model
        spec = tf.TensorSpec([None, *model.in_shape], model.dtype, name=INPUT)
        self.serve = tf.function(self._serve, input_signature=[spec], autograph=False)
        self.layers = tf.function(self._layers, input_signature=[spec], autograph=False)

    def _stages(self, x: tf.Tensor) -> list[tf.Tensor]:
        """The same ops as the model's `layer_outputs`, each stage under its own name scope."""
        with tf.name_scope(STANDARDIZE):
            h = self.model.norm.x_in(x)  # (batch, n_in)
        outs = [h]
        for i, layer in enumerate(self.model.mlp.layers):
            with tf.name_scope(f"layer_{i}"):
                h = layer(h)  # (batch, width_i), or (batch, h, w, c) for an image layer
            outs.append(h)
        if isinstance(self.model, Classifier):
            with tf.name_scope(PROBABILITIES):
                outs.append(losses.probabilities(h))  # (batch, classes)
            return outs
        with tf.name_scope(UNSTANDARDIZE):
            outs.append(self.model.norm.z_out(h))  # (batch, n_out)
        return outs

    def _serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        stages = self._stages(x)
        if isinstance(self.model, Classifier):
            return {LOGITS: stages[-2], PROBABILITIES: stages[-1]}
        return {OUTPUT: stages[-1]}

    def _layers(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return dict(zip(stage_names(self.model), self._stages(x)))


def live_stages(model: Regressor, x: tf.Tensor) -> dict[str, tf.Tensor]:
    """Stage outputs of the live network through its own `layer_outputs` (the reference route)."""
    return dict(zip(stage_names(model), model.layer_outputs(x)))

"""Sound rewrites applied before conversion where tf2onnx has a gap, each proven by verify (the
reference stays the model as given).

unroll_recurrent: Keras 3 runs LSTM, GRU and SimpleRNN as a `tf.while_loop` over TensorLists;
tf2onnx 1.17 leaves TensorListReserve/TensorListStack in the graph, which onnx.checker rejects
("No Op registered for TensorListReserve"). With a static sequence length the same layer with
`unroll=True` computes the same steps as plain ops (one cell per time step), which converts.
"""

from __future__ import annotations

RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def unroll_recurrent(model):
    """(model with every recurrent layer unrolled, names of the layers rewritten); the model
    itself when it has none or a sequence length is not static."""
    import keras

    names = [layer.name for layer in model.layers if type(layer).__name__ in RECURRENT
             and not layer.get_config().get("unroll")]
    if not names or any(layer.input.shape[1] is None for layer in model.layers if layer.name in names):
        return model, []

    def clone(layer):
        config = layer.get_config()
        if layer.name in names:
            config["unroll"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy, names

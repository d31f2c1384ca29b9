"""What the two Keras generations do alike, written once: `backend/keras3.py` and `backend/tf_keras.py`
bind these to their Keras.

Part of the seam: it reads Keras internals both generations share (a symbolic
tensor's `_keras_history`, a `Lambda`'s `_output_shape`) and imports nothing of
the package.
"""

from __future__ import annotations

from typing import Any


def layer_of(tensor: Any) -> Any:
    """The layer whose call made a symbolic tensor, or None."""
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history is not None else None


def fresh_input(tensor: Any) -> Any:
    """A new model input like `tensor`, an input of a model, made from its `InputLayer`'s config."""
    layer = layer_of(tensor)
    return type(layer).from_config(layer.get_config()).output


def live_arguments(keras_api: Any, layer: Any) -> dict[str, Any]:
    """The constructor arguments a layer holds as live objects that its config turns into code or names.

    A `Lambda`'s function, mask and output-shape function, and arguments: its
    copy is made around the same objects, so it computes what it computes
    (its config would rebuild a Python lambda from bytecode). Empty for other layers.
    """
    if type(layer) is not keras_api.layers.Lambda:
        return {}
    live = {"function": layer.function, "mask": layer.mask, "arguments": layer.arguments}
    return {**live, "output_shape": layer._output_shape}

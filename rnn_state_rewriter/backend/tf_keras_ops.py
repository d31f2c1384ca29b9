"""tf-keras, on TensorFlow: the tensor operations of the layers (`rnn_state_rewriter.layers`).

Part of the seam: `backend/tf_keras.py` imports these into the module that
implements `rnn_state_rewriter.backend.Adapter` for the generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from rnn_state_rewriter.generation import batch_axis, recurrent_kind_in


def zero_state(layer: Any) -> Any:
    """The layer's initial state on zero inputs (a batch of one), nested inputs included (`rnn((x1, x2))`)."""
    spec = layer.input_spec[0] if isinstance(layer.input_spec, list) else layer.input_spec
    return layer.get_initial_state(tf.nest.map_structure(lambda s: _zeros(layer, s), spec))


def _zeros(layer: Any, spec: Any) -> Any:
    shape = list(spec.shape) if spec is not None and spec.shape is not None else None
    if shape is None:
        raise ValueError(
            f"Layer '{layer.name}' does not record its input shape; build it on an input with a known shape first."
        )
    axis = batch_axis(layer)
    shape[axis] = 1
    shape[1 - axis] = 1  # the time axis
    if any(dim is None for dim in shape):
        raise ValueError(
            f"Layer '{layer.name}' has an input of unknown shape {tuple(spec.shape)}: "
            "a trainable initial state needs static dimensions. Give the input "
            "its spatial dimensions (e.g. `Input((time, 32, 32, 3))`)."
        )
    return tf.zeros(shape, dtype=layer.dtype or "float32")


def batch_size(inputs: Any, axis: int) -> Any:
    """The size of `axis` of the first tensor of `inputs`: a slice of the shape, which TensorFlow's static
    shape inference reads (a fixed batch stays known)."""
    return tf.shape(tf.nest.flatten(inputs)[0])[axis]


def broadcast_to_batch(value: Any, size: Any, shape: Sequence[int], dtype: Any) -> Any:
    """`value` (of `shape`) cast to `dtype` and repeated along a new leading batch axis of `size`."""
    value = tf.convert_to_tensor(value)
    if value.dtype != tf.as_dtype(dtype):
        value = tf.cast(value, dtype)
    return tf.broadcast_to(value, tf.stack([size, *shape]))  # a new leading axis, as broadcasting prepends


def noise_source() -> Any:
    """None: TensorFlow's `random.normal` draws from the global generator."""
    return None


def normal(like: Any, stddev: float, source: Any) -> Any:
    """Gaussian noise with the shape and dtype of the tensor `like`."""
    return tf.random.normal(tf.shape(like), stddev=stddev, dtype=like.dtype)


def to_tensor(value: Any) -> Any:
    return tf.convert_to_tensor(value)


def batch_of(size: Any) -> Any:
    """A tensor of shape `(size,)`: what reads as a batch of that size."""
    return tf.zeros(tf.reshape(size, [1]))


def read(variable: Any, dtype: Any) -> Any:
    """The variable's value now, as a tensor of `dtype`."""
    return tf.cast(variable, dtype)


def project(context: Any, kernel: Any, shape: Sequence[int], dtype: Any) -> Any:
    """`context @ kernel` (`(batch, d) @ (d, prod(shape))`), in `dtype`, reshaped to `(batch, *shape)`."""
    product = tf.matmul(tf.cast(context, dtype), tf.cast(kernel, dtype))
    return tf.reshape(product, [-1, *shape])


def lookup(ids: Any, table: Any, dtype: Any) -> Any:
    """The rows of `table` at the integer `ids` (`(batch,)` or `(batch, 1)`), in `dtype`; zeros for an id
    outside the table (TensorFlow's `gather` raises on the CPU and gives zeros on a GPU)."""
    ids = tf.reshape(tf.cast(ids, "int32"), [-1])
    known = tf.logical_and(ids >= 0, ids < tf.shape(table)[0])
    rows = tf.gather(table, tf.where(known, ids, tf.zeros_like(ids)))
    known = tf.reshape(tf.cast(known, dtype), [-1] + [1] * (len(table.shape) - 1))
    return tf.cast(rows, dtype) * known


def prepare_stateful(layer: Any) -> None:
    """Keeps a stateful layer's carried state in a list, not a tuple (stacked cells): tf-keras compares its
    nesting with the `initial_state`'s, which it always makes a list."""
    for each in (
        (layer.forward_layer, layer.backward_layer)
        if recurrent_kind_in(tf_keras.layers, layer) == "bidirectional"
        else (layer,)
    ):
        if isinstance(getattr(each, "states", None), tuple):
            each.states = list(each.states)


def flag(value: float) -> Any:
    """A float32 scalar variable that is not a weight (as a stateful RNN keeps its carried state)."""
    with tf.init_scope():
        return tf.Variable(value, trainable=False, dtype="float32", name="starts_fresh")


def mask_of(tensor: Any) -> Any:
    """The Keras mask a tensor carries, or None."""
    return getattr(tensor, "_keras_mask", None)

"""Keras 3, on any backend: the tensor operations of the layers (`rnn_state_rewriter.layers`).

Part of the seam: `backend/keras3.py` imports these into the module that
implements `rnn_state_rewriter.backend.Adapter` for the generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras.src.backend import get_keras_mask
from keras.src.utils.tracking import DotNotTrackScope


def zero_state(layer: Any) -> Any:
    """The built recurrent layer's zero state for a batch of one."""
    try:
        return layer.get_initial_state(batch_size=1)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Could not derive the state shapes of layer '{layer.name}' from its "
            f"`get_initial_state`: {error}. If its input has unknown spatial "
            "dimensions, give them in `Input(shape=...)`."
        ) from error


def batch_size(inputs: Any, axis: int) -> Any:
    """The size of `axis` of the first tensor of `inputs` (static or dynamic)."""
    return keras.ops.shape(keras.tree.flatten(inputs)[0])[axis]


def broadcast_to_batch(value: Any, size: Any, shape: Sequence[int], dtype: Any) -> Any:
    """`value` (of `shape`) cast to `dtype` and repeated along a new leading batch axis of `size`."""
    if keras.backend.standardize_dtype(value.dtype) != keras.backend.standardize_dtype(dtype):
        value = keras.ops.cast(value, dtype)
    return keras.ops.broadcast_to(value, (size, *shape))  # a new leading axis, as broadcasting prepends


def noise_source() -> Any:
    """What `normal` draws from: a seed generator, owned by the layer that asks for it."""
    return keras.random.SeedGenerator()


def normal(like: Any, stddev: float, source: Any) -> Any:
    """Gaussian noise with the shape and dtype of the tensor `like`."""
    return keras.random.normal(keras.ops.shape(like), stddev=stddev, dtype=like.dtype, seed=source)


def to_tensor(value: Any) -> Any:
    return keras.ops.convert_to_tensor(value)


def batch_of(size: Any) -> Any:
    """A tensor of shape `(size,)`: what reads as a batch of that size."""
    return keras.ops.zeros((size,))


def read(variable: Any, dtype: Any) -> Any:
    """The variable's value now, as a tensor of `dtype` that a later assignment to it leaves alone (PyTorch
    checks that a value its gradient needs was not assigned in place)."""
    return keras.ops.copy(keras.ops.cast(variable, dtype))


def project(context: Any, kernel: Any, shape: Sequence[int], dtype: Any) -> Any:
    """`context @ kernel` (`(batch, d) @ (d, prod(shape))`), in `dtype`, reshaped to `(batch, *shape)`."""
    product = keras.ops.matmul(keras.ops.cast(context, dtype), keras.ops.cast(kernel, dtype))
    return keras.ops.reshape(product, (-1, *shape))


def lookup(ids: Any, table: Any, dtype: Any) -> Any:
    """The rows of `table` at the integer `ids` (`(batch,)` or `(batch, 1)`), in `dtype`; zeros for an id
    outside the table (JAX's `take` would give NaN, TensorFlow and PyTorch raise)."""
    ids = keras.ops.reshape(keras.ops.cast(ids, "int32"), (-1,))
    known = keras.ops.logical_and(ids >= 0, ids < keras.ops.shape(table)[0])
    rows = keras.ops.take(table, keras.ops.where(known, ids, keras.ops.zeros_like(ids)), axis=0)
    known = keras.ops.reshape(keras.ops.cast(known, dtype), (-1,) + (1,) * (len(table.shape) - 1))
    return keras.ops.cast(rows, dtype) * known


def prepare_stateful(layer: Any) -> None:
    """Nothing to do: Keras 3 takes any `initial_state` nested as the layer's states."""


def flag(value: float) -> Any:
    """A float32 scalar variable that is not a weight (as a stateful RNN keeps its carried state)."""
    with DotNotTrackScope():
        return keras.Variable(value, trainable=False, dtype="float32", name="starts_fresh")


def mask_of(tensor: Any) -> Any:
    """The Keras mask a tensor carries, or None (JAX and PyTorch arrays keep it outside the tensor)."""
    return get_keras_mask(tensor)

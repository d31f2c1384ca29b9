"""The tensor operations the layers and state shapes need, one set per Keras generation.

Keras 3 code uses `keras.ops`, `keras.random` and `keras.tree`, which run on
every backend (TensorFlow, JAX, PyTorch), and imports no TensorFlow. tf-keras
runs on TensorFlow only, so its set uses TensorFlow, imported when a tf-keras
object is first seen. This is the one place below the adapters where the two
generations differ; `layers.py` and `states.py` are written once against the
`GenerationOps` interface.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol

from rnn_state_rewriter.generation import Generation, batch_axis, generation_of

__all__ = ["GenerationOps", "ops", "ops_for"]


class GenerationOps(Protocol):
    """What the layers need from a Keras generation, beyond its layer classes."""

    api: ModuleType  # the Keras package: `keras` or `tf_keras`

    def flatten(self, structure: Any) -> list[Any]: ...

    def map_structure(self, fn: Callable[..., Any], *structures: Any) -> Any: ...

    def zero_state(self, layer: Any) -> Any:
        """The built recurrent layer's zero state for a batch of one."""
        ...

    def batch_size(self, inputs: Any, axis: int) -> Any:
        """The size of `axis` of the first tensor of `inputs` (static or dynamic)."""
        ...

    def broadcast_to_batch(self, value: Any, batch_size: Any, shape: Sequence[int], dtype: Any) -> Any:
        """`value` (of `shape`) cast to `dtype` and repeated along a new leading batch axis."""
        ...

    def noise_source(self) -> Any:
        """What `normal` draws from: a seed generator owned by the layer, or None."""
        ...

    def normal(self, like: Any, stddev: float, source: Any) -> Any:
        """Gaussian noise with the shape and dtype of the tensor `like`."""
        ...

    def to_tensor(self, value: Any) -> Any: ...

    def batch_of(self, size: Any) -> Any:
        """A tensor of shape `(size,)`: what reads as a batch of that size."""
        ...

    def mask_of(self, tensor: Any) -> Any:
        """The Keras mask a tensor carries, or None."""
        ...


class Keras3Ops:
    """Keras 3 on any backend: `keras.ops`, `keras.random`, `keras.tree`."""

    def __init__(self) -> None:
        import keras
        from keras.src.backend import get_keras_mask  # jax and torch arrays keep masks outside the tensor

        self.api = keras
        self.flatten = keras.tree.flatten
        self.map_structure = keras.tree.map_structure
        self.mask_of = get_keras_mask

    def zero_state(self, layer: Any) -> Any:
        try:
            return layer.get_initial_state(batch_size=1)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Could not derive the state shapes of layer '{layer.name}' from its "
                f"`get_initial_state`: {error}. If its input has unknown spatial "
                "dimensions, give them in `Input(shape=...)`."
            ) from error

    def batch_size(self, inputs: Any, axis: int) -> Any:
        return self.api.ops.shape(self.flatten(inputs)[0])[axis]

    def broadcast_to_batch(self, value: Any, batch_size: Any, shape: Sequence[int], dtype: Any) -> Any:
        ops = self.api.ops
        if self.api.backend.standardize_dtype(value.dtype) != self.api.backend.standardize_dtype(dtype):
            value = ops.cast(value, dtype)
        return ops.broadcast_to(value, (batch_size, *shape))  # a new leading axis, as broadcasting prepends

    def noise_source(self) -> Any:
        return self.api.random.SeedGenerator()

    def normal(self, like: Any, stddev: float, source: Any) -> Any:
        return self.api.random.normal(self.api.ops.shape(like), stddev=stddev, dtype=like.dtype, seed=source)

    def to_tensor(self, value: Any) -> Any:
        return self.api.ops.convert_to_tensor(value)

    def batch_of(self, size: Any) -> Any:
        return self.api.ops.zeros((size,))


class TfKerasOps:
    """tf-keras, which runs on TensorFlow: TensorFlow ops."""

    def __init__(self) -> None:
        import tensorflow as tf
        import tf_keras

        self.api = tf_keras
        self.tf = tf
        self.flatten = tf.nest.flatten
        self.map_structure = tf.nest.map_structure

    def zero_state(self, layer: Any) -> Any:
        """The layer's initial state on zero inputs (a batch of one), nested inputs included (`rnn((x1, x2))`)."""
        spec = layer.input_spec[0] if isinstance(layer.input_spec, list) else layer.input_spec
        return layer.get_initial_state(self.map_structure(lambda s: self._zeros(layer, s), spec))

    def _zeros(self, layer: Any, spec: Any) -> Any:
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
        return self.tf.zeros(shape, dtype=layer.dtype or "float32")

    def batch_size(self, inputs: Any, axis: int) -> Any:
        # A slice of the shape, which TensorFlow's static shape inference reads (a fixed batch stays known).
        return self.tf.shape(self.flatten(inputs)[0])[axis]

    def broadcast_to_batch(self, value: Any, batch_size: Any, shape: Sequence[int], dtype: Any) -> Any:
        tf = self.tf
        value = tf.convert_to_tensor(value)
        if value.dtype != tf.as_dtype(dtype):
            value = tf.cast(value, dtype)
        return tf.broadcast_to(value, tf.stack([batch_size, *shape]))  # a new leading axis, as broadcasting prepends

    def noise_source(self) -> Any:
        return None

    def normal(self, like: Any, stddev: float, source: Any) -> Any:
        return self.tf.random.normal(self.tf.shape(like), stddev=stddev, dtype=like.dtype)

    def to_tensor(self, value: Any) -> Any:
        return self.tf.convert_to_tensor(value)

    def batch_of(self, size: Any) -> Any:
        return self.tf.zeros(self.tf.reshape(size, [1]))

    def mask_of(self, tensor: Any) -> Any:
        return getattr(tensor, "_keras_mask", None)


@functools.cache
def ops(generation: Generation) -> GenerationOps:
    """The operations of a generation (imports its Keras package on first use)."""
    return Keras3Ops() if generation is Generation.KERAS3 else TfKerasOps()


def ops_for(obj: Any, *, argument: str = "layer") -> GenerationOps:
    """The operations of the generation `obj` belongs to.

    Raises:
        TypeError: if `obj` is not a Keras object.
    """
    return ops(generation_of(obj, argument=argument))

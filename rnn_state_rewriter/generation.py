"""Which Keras generation an object belongs to.

Keras 3 (`keras`, also `tf.keras` on TensorFlow >= 2.16) and tf-keras (Keras 2,
`tf_keras`) differ in a few places. Those differences live in two thin seams,
each with one implementation per generation: the tensor operations the layers
need (`rnn_state_rewriter._ops`), and the adapters that read and rebuild a
model's graph (`rnn_state_rewriter._adapter`). Both ask this module which
generation an object belongs to; it imports nothing of the package.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["Generation", "batch_axis", "generation_of"]


class Generation(enum.Enum):
    """A Keras generation."""

    KERAS3 = "keras3"
    TF_KERAS = "tf_keras"

    @property
    def package(self) -> str:
        """The name of the Python package of this generation."""
        return "keras" if self is Generation.KERAS3 else "tf_keras"


def generation_of(obj: Any, *, argument: str = "layer") -> Generation:
    """Returns the Keras generation of a layer or model (instance or class).

    Args:
        obj: a Keras layer or model of either generation.
        argument: the name of the argument, used in the error message.

    Raises:
        TypeError: if `obj` is not a Keras object.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    for base in cls.__mro__:
        root = base.__module__.split(".", 1)[0]
        if root == "tf_keras":
            return Generation.TF_KERAS
        if root == "keras":
            return Generation.KERAS3
    raise TypeError(
        f"Argument `{argument}` must be a Keras layer or model (from `keras` "
        f"or `tf_keras`). Received: {argument}={obj!r} of type "
        f"{cls.__module__}.{cls.__qualname__}"
    )


def batch_axis(layer: Any) -> int:
    """The axis of a recurrent layer's input that holds the batch: 1 for a `time_major` tf-keras layer, else 0."""
    return 1 if getattr(layer, "time_major", False) else 0

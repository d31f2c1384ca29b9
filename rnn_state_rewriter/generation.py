"""Which Keras generation an object belongs to.

Keras 3 (`keras`, also `tf.keras` on TensorFlow >= 2.16) and tf-keras (Keras 2,
`tf_keras`) differ in a few places. Those differences live in one seam, the
`Adapter` protocol of `rnn_state_rewriter._adapter`, with one module per
generation (`_keras3`, `_tf_keras`). The seam asks this module which
generation an object belongs to; it imports nothing of the package.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["Generation", "KERAS_PACKAGES", "batch_axis", "generation_of"]


class Generation(enum.Enum):
    """A Keras generation."""

    KERAS3 = "keras3"
    TF_KERAS = "tf_keras"

    @property
    def package(self) -> str:
        """The name of the Python package of this generation."""
        return "keras" if self is Generation.KERAS3 else "tf_keras"

    @classmethod
    def from_major(cls, major: str) -> Generation:
        """The generation of a Keras major version: `"3"` (Keras 3) or `"2"` (tf-keras)."""
        return {"3": cls.KERAS3, "2": cls.TF_KERAS}[major]

    @property
    def module(self) -> str:
        """The package module of this generation's side of the seam (`rnn_state_rewriter._adapter.Adapter`)."""
        return "rnn_state_rewriter._keras3" if self is Generation.KERAS3 else "rnn_state_rewriter._tf_keras"


# The Python packages of the Keras generations.
KERAS_PACKAGES = frozenset(generation.package for generation in Generation)


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

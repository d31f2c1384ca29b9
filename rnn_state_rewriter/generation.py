"""Which Keras generation an object belongs to, and the facts every layer above may ask of it.

Keras 3 (`keras`, also `tf.keras` on TensorFlow >= 2.16) and tf-keras (Keras 2,
`tf_keras`) differ in a few places. Those differences live in one seam, the
`Adapter` protocol of `rnn_state_rewriter.backend`, with one module per
generation (`backend/keras3.py`, `backend/tf_keras.py`). The seam asks this
module which generation an object belongs to and what kind of recurrent layer
a layer is; it imports nothing of the package.
"""

from __future__ import annotations

import enum
from types import ModuleType
from typing import Any

__all__ = ["Generation", "KERAS_PACKAGES", "batch_axis", "generation_of", "recurrent_kind_in"]


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
        """The package module of this generation's side of the seam (`rnn_state_rewriter.backend.Adapter`)."""
        return f"rnn_state_rewriter.backend.{self.value}"


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


def recurrent_kind_in(layers: ModuleType, layer: Any) -> str | None:
    """`"trainable"`, `"bidirectional"`, `"rnn"`, or None: the kind of a layer of the generation of `layers`.

    `"trainable"` is a `TrainableInitialStateRNN` of either generation, which
    says so with a class attribute (`gives_trainable_initial_state`).
    """
    if getattr(layer, "gives_trainable_initial_state", False):
        return "trainable"
    if isinstance(layer, layers.Bidirectional):
        return "bidirectional"
    if isinstance(layer, layers.RNN):
        return "rnn"
    return None

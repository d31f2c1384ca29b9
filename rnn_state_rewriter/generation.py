"""Which Keras generation an object belongs to, and that generation's adapter.

Keras 3 (`keras`, also `tf.keras` on TensorFlow >= 2.16) and tf-keras (Keras 2,
`tf_keras`) differ in a few places: base classes, how a functional graph is
walked and rebuilt, how a recurrent layer reports its zero state. Those
differences live in two adapter modules with the same interface,
`rnn_state_rewriter._keras3` and `rnn_state_rewriter._tf_keras`; everything
else in the package is written once and asks this module for the adapter.

`tf_keras` is imported only when a tf-keras object is seen.
"""

from __future__ import annotations

import enum
import importlib
from types import ModuleType
from typing import Any

__all__ = ["Generation", "generation_of", "adapter", "adapter_for"]


class Generation(enum.Enum):
    """A Keras generation."""

    KERAS3 = "keras3"
    TF_KERAS = "tf_keras"

    @property
    def package(self) -> str:
        """The name of the Python package of this generation."""
        return "keras" if self is Generation.KERAS3 else "tf_keras"


_ADAPTER_MODULES = {
    Generation.KERAS3: "rnn_state_rewriter._keras3",
    Generation.TF_KERAS: "rnn_state_rewriter._tf_keras",
}


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


def adapter(generation: Generation) -> ModuleType:
    """Returns the adapter module of a generation, importing it on first use."""
    return importlib.import_module(_ADAPTER_MODULES[generation])


def adapter_for(obj: Any, *, argument: str = "layer") -> ModuleType:
    """Returns the adapter module of the generation `obj` belongs to."""
    return adapter(generation_of(obj, argument=argument))

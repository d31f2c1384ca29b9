"""Registering the package's classes with a Keras generation, so that saved models load.

Keras finds the class of a saved object only through its registry. `bind`
registers, for one generation: the layer classes (defining them registers
them: `layers`, and `layers/tf_keras.py` for tf-keras), the loader of models and
layers retrofitted by surgery (`surgery.Remembers`, under
`rnn_state_rewriter>Retrofitted`), and the activations Keras 2 files name
(imported with the generation's seam). `_registration.py` calls it as soon as a
generation is imported, in any order.
"""

from __future__ import annotations

from rnn_state_rewriter.backend import adapter
from rnn_state_rewriter.generation import Generation
from rnn_state_rewriter.layers import classes_of
from rnn_state_rewriter.surgery import REGISTERED_NAME, loader

__all__ = ["bind"]


def bind(generation: Generation) -> None:
    """Registers the package's classes with `generation`'s registry (again: harmless)."""
    seam = adapter(generation)
    classes = classes_of(generation)
    objects = seam.keras_api.saving.get_custom_objects()
    objects[REGISTERED_NAME] = loader(generation.package)
    if seam.BARE_CLASS_NAMES:  # a class already registered under a bare name keeps it
        for cls in classes:
            objects.setdefault(cls.__name__, cls)

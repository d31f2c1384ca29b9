"""The tf-keras twins of the public layers: the same mixins on tf-keras' base classes.

Imported only when a tf-keras object is seen (`layers.classes_of`), or when
`tf_keras` is imported (`binding.py` registers the classes for loading), so
that nothing else imports `tf_keras` or TensorFlow. `isinstance` accepts a twin
as its public Keras 3 class, and saved configs name the same module.
"""

from __future__ import annotations

import tf_keras

from rnn_state_rewriter.generation import Generation
from rnn_state_rewriter.layers import initial_state, wrapper
from rnn_state_rewriter.layers.base import PACKAGE, GenerationOf, public, twin_of

__all__ = ["TrainableInitialState", "TrainableInitialStateRNN"]

_register = tf_keras.saving.register_keras_serializable(package=PACKAGE)


class _Twin:
    """What the tf-keras twins of the public layers share."""

    __module__ = "rnn_state_rewriter.layers"  # where their Keras 3 twins are public; saved configs name it
    _keras = GenerationOf(Generation.TF_KERAS)

    def _should_use_autograph(self) -> bool:
        # tf-keras runs the `call` of layers defined outside it through AutoGraph,
        # which transpiles every function `call` reaches, once per process (0.6 s
        # of a first retrofit); `call` has no Python control flow on tensors.
        return False


@public(Generation.TF_KERAS)
@_register
@twin_of(initial_state.TrainableInitialState)
class TrainableInitialState(_Twin, initial_state.TrainableInitialStateMixin, tf_keras.layers.Layer):
    """tf-keras twin of `rnn_state_rewriter.TrainableInitialState`."""

    __module__ = "rnn_state_rewriter.layers"


@public(Generation.TF_KERAS)
@_register
@twin_of(wrapper.TrainableInitialStateRNN)
class TrainableInitialStateRNN(_Twin, wrapper.TrainableInitialStateRNNMixin, tf_keras.layers.Wrapper):
    """tf-keras twin of `rnn_state_rewriter.TrainableInitialStateRNN`."""

    __module__ = "rnn_state_rewriter.layers"

"""The layers: `TrainableInitialState`, `TrainableInitialStateRNN` and `SequenceMask`, one module each.

The behaviour of the two public layers is written once, in generation-neutral
mixins, against the tensor operations of a Keras generation
(`rnn_state_rewriter.backend`): `keras.ops` and `keras.random` for Keras 3 (any
backend: TensorFlow, JAX, PyTorch), TensorFlow for tf-keras. The public classes
are the Keras 3 layers; their tf-keras twins (`layers/tf_keras.py`, imported
only when a tf-keras object is seen), with the same names and behaviour, are
the same mixins on tf-keras' base classes, and `isinstance` accepts them as the
public classes. `classes_of(generation)` gives a generation's two classes.

- `base.py`: what both layers share (state variables, context maps, twins).
- `initial_state.py`: `TrainableInitialState`.
- `wrapper.py`: `TrainableInitialStateRNN`.
- `mask.py`: `SequenceMask`, the run-time mask the retrofit passes on (Keras 3).
- `tf_keras.py`: the tf-keras twins.
"""

from __future__ import annotations

from rnn_state_rewriter.layers.base import PACKAGE, LayerClasses, classes_of
from rnn_state_rewriter.layers.initial_state import TrainableInitialState
from rnn_state_rewriter.layers.mask import SequenceMask
from rnn_state_rewriter.layers.wrapper import TrainableInitialStateRNN

__all__ = ["PACKAGE", "LayerClasses", "SequenceMask", "TrainableInitialState", "TrainableInitialStateRNN", "classes_of"]

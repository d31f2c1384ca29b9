"""Trainable initial states for Keras recurrent layers, and a one-line retrofit.

Public names:

- `TrainableInitialState`: a layer holding one trainable variable per state.
- `TrainableInitialStateRNN`: a wrapper giving a recurrent layer a trainable state.
- `add_trainable_initial_states`, `remove_trainable_initial_states`,
  `initial_states`: rewrite a built Functional or Sequential model.
- `state_shapes`, `is_recurrent`: the state structure of a recurrent layer.

Both Keras generations are supported: Keras 3 (`keras`) and tf-keras
(`tf_keras`); `tf_keras` is imported only when a tf-keras object is seen.
"""

import sys as _sys

from rnn_state_rewriter.export import to_tflite
from rnn_state_rewriter.layers import TrainableInitialState, TrainableInitialStateRNN
from rnn_state_rewriter.rewrite import (
    add_trainable_initial_states,
    initial_states,
    remove_trainable_initial_states,
)
from rnn_state_rewriter.states import is_recurrent, state_shapes

__all__ = [
    "TrainableInitialState",
    "TrainableInitialStateRNN",
    "add_trainable_initial_states",
    "remove_trainable_initial_states",
    "initial_states",
    "state_shapes",
    "is_recurrent",
    "to_tflite",
]

__version__ = "0.1.0"

if "tf_keras" in _sys.modules:  # register the tf-keras twins for loading saved models
    import rnn_state_rewriter._tf_keras  # noqa: F401

"""Trainable initial states for Keras recurrent layers, and a one-line retrofit.

Public names:

- `TrainableInitialState`: a layer holding one trainable variable per state.
- `TrainableInitialStateRNN`: a wrapper giving a recurrent layer a trainable state.
- `add_trainable_initial_states`, `remove_trainable_initial_states`,
  `initial_states`, `context_maps`: rewrite a built model, read what it learned.
- `reset_states`: return every stateful layer of a model to its initial state.
- `plan_trainable_initial_states`, `Decision`: what the rewrite would do, and why.
- `state_shapes`, `is_recurrent`: the state structure of a recurrent layer.
- `to_tflite`: a TFLite flatbuffer that keeps the learned initial states.
- `RetrofitMismatchError`: raised when a retrofitted copy would predict
  otherwise than the original (the retrofit checks itself).

Both Keras generations are supported: Keras 3 (`keras`) and tf-keras
(`tf_keras`); `tf_keras` is imported only when a tf-keras object is seen.
Importing the package imports neither Keras nor TensorFlow: it registers its
layers, for loading saved models, with a Keras generation already imported,
and with the others as soon as they are imported, in any order.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

# Public name -> the module defining it. The modules are imported on first use
# of a name, so that importing the package (or its command line, which must
# start before TensorFlow does) imports neither Keras nor TensorFlow.
_PUBLIC = {
    "TrainableInitialState": "rnn_state_rewriter.layers",
    "TrainableInitialStateRNN": "rnn_state_rewriter.layers",
    "add_trainable_initial_states": "rnn_state_rewriter.rewrite",
    "remove_trainable_initial_states": "rnn_state_rewriter.remove",
    "initial_states": "rnn_state_rewriter.readout",
    "context_maps": "rnn_state_rewriter.readout",
    "reset_states": "rnn_state_rewriter.readout",
    "plan_trainable_initial_states": "rnn_state_rewriter.decide",
    "Decision": "rnn_state_rewriter.plan",
    "state_shapes": "rnn_state_rewriter.states",
    "is_recurrent": "rnn_state_rewriter.states",
    "to_tflite": "rnn_state_rewriter.export",
    "streaming_model": "rnn_state_rewriter.streaming",
    "start_states": "rnn_state_rewriter.streaming",
    "RetrofitMismatchError": "rnn_state_rewriter.check",
}

__all__ = list(_PUBLIC)

__version__ = "0.1.0"

if _TYPE_CHECKING:  # the names, for type checkers and editors
    from rnn_state_rewriter.check import RetrofitMismatchError  # noqa: F401
    from rnn_state_rewriter.decide import plan_trainable_initial_states  # noqa: F401
    from rnn_state_rewriter.export import to_tflite  # noqa: F401
    from rnn_state_rewriter.layers import TrainableInitialState, TrainableInitialStateRNN  # noqa: F401
    from rnn_state_rewriter.plan import Decision  # noqa: F401
    from rnn_state_rewriter.readout import context_maps, initial_states, reset_states  # noqa: F401
    from rnn_state_rewriter.remove import remove_trainable_initial_states  # noqa: F401
    from rnn_state_rewriter.rewrite import add_trainable_initial_states  # noqa: F401
    from rnn_state_rewriter.states import is_recurrent, state_shapes  # noqa: F401
    from rnn_state_rewriter.streaming import start_states, streaming_model  # noqa: F401


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'rnn_state_rewriter' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


# Saved models find the layers (and retrofitted objects) through Keras' registry: register them with
# each Keras generation already imported, and with the others as soon as they are, whatever the order.
_importlib.import_module("rnn_state_rewriter._registration").install()

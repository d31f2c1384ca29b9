"""Reading what a retrofitted model holds: `initial_states`, `context_maps`; `reset_states`."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnn_state_rewriter.backend import adapter_for
from rnn_state_rewriter.states import is_stateful, reset_carried_state
from rnn_state_rewriter.walk import state_layer_feeding, walk

__all__ = ["context_maps", "initial_states", "reset_states"]


def initial_states(model: Any) -> dict[str, list[np.ndarray]]:
    """The learned initial states of a model, by recurrent layer.

    Args:
        model: a model returned by `add_trainable_initial_states` (or any
            Functional or Sequential model with `TrainableInitialState` layers or
            `TrainableInitialStateRNN` wrappers), `keras` or `tf_keras`.

    Returns:
        A dict keyed by the recurrent layer's path of Keras names, as in its
        variable paths (`lstm`, `submodel/lstm`, `time_distributed/gru`,
        `my_layer/gru`), each value a list with one array per state (flattened for
        stacked cells, forward then backward for `Bidirectional`), without the
        batch axis. States conditioned on a context add its map to these
        (`context_maps`).

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential([keras.Input((6, 2)), keras.layers.LSTM(4, name="lstm")])
    >>> states = rsr.initial_states(rsr.add_trainable_initial_states(model))
    >>> {name: [s.shape for s in values] for name, values in states.items()}
    {'lstm': [(4,), (4,)]}

    ```
    """
    return _state_values(model, "state_variables")


def context_maps(model: Any) -> dict[str, list[np.ndarray]]:
    """The learned maps from a context to the initial states, by recurrent layer (those conditioned on one).

    Each state's map is a kernel of shape `(features, prod(state_shape))` for a
    float context (the state is `initial_state + context @ kernel`, reshaped),
    or a table of shape `(num_ids, *state_shape)` for ids (the state is
    `initial_state + table[id]`).

    Args:
        model: a model returned by `add_trainable_initial_states(..., context=...)`,
            or any model with such layers, `keras` or `tf_keras`.

    Returns:
        A dict keyed as `initial_states`, with one array per state, for the
        layers whose states are conditioned on a context.

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> series = keras.Input((6, 2), name="series")
    >>> series_id = keras.Input((), dtype="int32", name="series_id")
    >>> model = keras.Model([series, series_id], keras.layers.GRU(4, name="gru")(series))
    >>> new_model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=10)
    >>> {name: [m.shape for m in maps] for name, maps in rsr.context_maps(new_model).items()}
    {'gru': [(10, 4)]}

    ```
    """
    return {name: maps for name, maps in _state_values(model, "context_maps").items() if maps}


def _state_values(model: Any, attribute: str) -> dict[str, list[np.ndarray]]:
    """The values of `attribute` (a list of variables) of every state layer and wrapper, by recurrent layer."""
    inventory = walk(model)
    adapter = inventory.adapter
    result: dict[str, list[np.ndarray]] = {}

    def values(layer: Any) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in getattr(layer, attribute)]

    for call in inventory.recurrent_calls:  # wrappers in graphs, and calls fed by a state layer
        kind = adapter.recurrent_kind(call.layer)
        if kind == "trainable":
            result.setdefault(call.path, values(call.layer))
        elif kind in ("rnn", "bidirectional"):
            state_layer = state_layer_feeding(adapter, call.layer, call.args, call.kwargs)
            if state_layer is not None:
                result.setdefault(call.path, values(state_layer))
    for site in inventory.surgery_sites:  # wrappers surgery put in attributes
        if adapter.recurrent_kind(site.layer) == "trainable":
            result.setdefault(site.name, values(site.layer))
    return result


def reset_states(model: Any) -> None:
    """Resets every stateful recurrent layer of a model: the next batch starts from its initial state.

    A layer with a trainable initial state (a `TrainableInitialStateRNN`,
    which `add_trainable_initial_states` puts around stateful layers) starts
    again from the learned state; a plain stateful layer from zeros. Keras 3
    models have no `reset_states()`; tf-keras' `model.reset_states()` does the
    same as this.

    Args:
        model: a Keras model or layer, `keras` or `tf_keras`, of any kind.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential(
    ...     [keras.Input(batch_shape=(2, 5, 3)), keras.layers.GRU(4, stateful=True, name="gru")]
    ... )
    >>> new_model = rsr.add_trainable_initial_states(model)
    >>> x = np.random.rand(2, 5, 3)
    >>> first = new_model.predict(x, verbose=0)
    >>> rsr.reset_states(new_model)
    >>> bool(np.allclose(first, new_model.predict(x, verbose=0)))
    True

    ```
    """
    adapter = adapter_for(model, argument="model")
    inside: set[int] = set()
    for layer in [model, *adapter.sublayers(model)]:
        if id(layer) in inside:
            continue
        kind = adapter.recurrent_kind(layer)
        if kind is None:
            continue
        inside.update(id(sublayer) for sublayer in adapter.sublayers(layer))
        if not is_stateful(layer):
            continue
        if kind == "trainable":  # the wrapper's reset also sets its learned start for the next batch
            layer.reset_state()
        else:
            reset_carried_state(layer)

"""The state structure of a recurrent layer: how many states, their shapes, their nesting.

Shapes are read from the built layer's own zero state (`get_initial_state`),
not from `cell.state_size`, which is `-1` for Keras 3 ConvLSTM, nested for
stacked cells and only a promise for custom cells; Keras' own LSTM, GRU and
SimpleRNN cells are the exception, where `state_size` is exact and reading it
saves building a zero state (a few milliseconds per layer in tf-keras).

The nesting the layer expects is kept as it is: an LSTM gives
`[(units,), (units,)]`, `StackedRNNCells([LSTMCell, GRUCell])` gives
`[[(u1,), (u1,)], [(u2,)]]` (Keras 3) and `Bidirectional` gives the forward
states followed by the backward ones, as it splits them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rnn_state_rewriter.backend import adapter_for
from rnn_state_rewriter.generation import recurrent_kind_in

__all__ = [
    "Shape",
    "recurrent_kind",
    "recurrent_kind_in",
    "is_recurrent",
    "state_shapes",
    "flatten_shapes",
    "pack_like",
    "map_shapes",
    "describe_kind",
    "known_state_count",
    "is_stateful",
    "carried_state_variables",
    "reset_carried_state",
]

Shape = tuple[int, ...]


def recurrent_kind(layer: Any) -> str | None:
    """`"trainable"`, `"bidirectional"`, `"rnn"`, or None for other layers.

    `"trainable"` is a `TrainableInitialStateRNN` of either generation, which
    says so with a class attribute.

    Raises:
        TypeError: if `layer` is not a Keras object.
    """
    return recurrent_kind_in(adapter_for(layer).keras_api.layers, layer)


def is_recurrent(layer: Any) -> bool:
    """Whether `layer` is a recurrent layer: `RNN` (any subclass) or `Bidirectional`."""
    return recurrent_kind(layer) is not None


def is_stateful(layer: Any) -> bool:
    """Whether a recurrent layer carries its state from batch to batch (`stateful=True`)."""
    if recurrent_kind(layer) == "bidirectional":
        return bool(getattr(layer.forward_layer, "stateful", False))
    return bool(getattr(layer, "stateful", False))


def carried_state_variables(layer: Any) -> list[Any]:
    """The variables that hold a built stateful layer's carried state, flat (forward then backward)."""
    if recurrent_kind(layer) == "bidirectional":
        return carried_state_variables(layer.forward_layer) + carried_state_variables(layer.backward_layer)
    carried = getattr(layer, "states", None)
    flat = [] if carried is None else adapter_for(layer).flatten_tensors(carried)
    return [] if all(value is None for value in flat) else flat


def reset_carried_state(layer: Any) -> None:
    """Sets a stateful layer's carried state to zeros, as Keras' reset does (Keras 3's fails for stacked
    cells); a layer not built yet is reset by its own method."""
    carried = carried_state_variables(layer)
    if not carried:
        (getattr(layer, "reset_state", None) or layer.reset_states)()
    for variable in carried:
        variable.assign(np.zeros_like(np.asarray(variable)))


def describe_kind(layer: Any) -> str:
    """A short name for the kind of recurrent layer, e.g. `LSTM` or `Bidirectional(GRU)` (a
    `TrainableInitialStateRNN` is named by the layer it wraps)."""
    if recurrent_kind(layer) == "trainable":
        return describe_kind(layer.layer)
    if recurrent_kind(layer) == "bidirectional":
        return f"Bidirectional({type(layer.forward_layer).__name__})"
    return type(layer).__name__


def state_shapes(layer: Any) -> list[Any]:
    """Returns the state shapes (without batch axis) of a built recurrent layer.

    Args:
        layer: a built `RNN` (any cell, stacked cells, ConvLSTM) or
            `Bidirectional` layer of either Keras generation.

    Returns:
        A list with one entry per state the layer takes; each entry is a shape
        tuple, or a list of them where the layer nests its states.

    Raises:
        TypeError: if `layer` is not a recurrent layer.
        ValueError: if `layer` is not built, or a state dimension is unknown.

    Example:

    ```python
    >>> import keras
    >>> lstm = keras.layers.LSTM(8)
    >>> lstm.build((None, 5, 3))
    >>> state_shapes(lstm)
    [(8,), (8,)]

    ```
    """
    kind = recurrent_kind(layer)
    if kind == "trainable":
        return state_shapes(layer.layer)
    if kind is None:
        raise TypeError(
            f"Layer '{getattr(layer, 'name', layer)}' is not a recurrent layer: "
            "expected an `RNN` (LSTM, GRU, SimpleRNN, ConvLSTM, RNN(cell)) or a "
            f"`Bidirectional` layer. Received: layer of type {type(layer).__name__}"
        )
    if not layer.built:
        raise ValueError(
            f"Layer '{layer.name}' is not built, so its state shapes are unknown. "
            "Build it first: call it on an input, or call `layer.build(input_shape)`."
        )
    if kind == "bidirectional":
        return state_shapes(layer.forward_layer) + state_shapes(layer.backward_layer)
    builtin = _builtin_cell_shapes(layer)
    if builtin is not None:
        return builtin
    generation = adapter_for(layer)
    shapes = generation.map_tensors(lambda t: tuple(t.shape[1:]), generation.zero_state(layer))
    for shape in flatten_shapes(shapes):
        if any(dim is None for dim in shape):
            raise ValueError(
                f"Layer '{layer.name}' has a state of unknown shape {shape}: a "
                "trainable initial state needs static dimensions. Give the input "
                "its spatial dimensions (e.g. `Input((time, 32, 32, 3))`)."
            )
    return list(shapes)


def _builtin_cell_shapes(layer: Any) -> list[Any] | None:
    """The state shapes of an RNN over Keras' own LSTM, GRU or SimpleRNN cell (exactly those classes, no
    subclass, which may change its states), from `cell.state_size`; None for any other cell."""
    layers = adapter_for(layer).keras_api.layers
    cell: Any = getattr(layer, "cell", None)
    if type(cell) not in (layers.LSTMCell, layers.GRUCell, layers.SimpleRNNCell):
        return None
    size = cell.state_size
    sizes = [size] if isinstance(size, int) else list(size)
    if not all(isinstance(s, int) and s > 0 for s in sizes):
        return None
    return [(s,) for s in sizes]


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(d, int) or d is None for d in value)


def flatten_shapes(structure: Any) -> list[Shape]:
    """Flattens a nested state-shape structure into a list of shape tuples."""
    if _is_shape(structure):
        return [tuple(structure)]
    return [shape for item in structure for shape in flatten_shapes(item)]


def map_shapes(fn: Callable[[Shape], Any], structure: Any) -> Any:
    """Applies `fn` to every shape of a nested state-shape structure, keeping the nesting."""
    if _is_shape(structure):
        return fn(tuple(structure))
    return [map_shapes(fn, item) for item in structure]


def pack_like(structure: Any, flat: list[Any]) -> Any:
    """Packs a flat list of values into the nesting of a state-shape structure."""
    values = iter(flat)
    packed = map_shapes(lambda _: next(values), structure)
    return packed


def known_state_count(layer: Any) -> int | None:
    """The number of states of a recurrent layer, where its cells say so before it is built.

    Counts `cell.state_size` entries (an int is one state, a list one per entry,
    nested lists recursively); None where the cell does not say (Keras 3
    ConvLSTM's `-1`, shapes, custom objects): then it is known only once built.
    """
    if recurrent_kind(layer) == "bidirectional":
        counts = [known_state_count(layer.forward_layer), known_state_count(layer.backward_layer)]
        return None if None in counts else sum(c for c in counts if c is not None)
    return _count_states(getattr(getattr(layer, "cell", None), "state_size", None))


def _count_states(size: Any) -> int | None:
    if isinstance(size, bool):
        return None
    if isinstance(size, int):
        return 1 if size > 0 else None
    if isinstance(size, (list, tuple)) and size:
        counts = [_count_states(entry) for entry in size]
        return None if None in counts else sum(c for c in counts if c is not None)
    return None

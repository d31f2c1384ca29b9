"""Streaming: a model run one chunk at a time, its recurrent states carried from each chunk to the next.

`streaming_model(model)` replays the model's graph (as the walk recorded it)
with each recurrent layer called on a state input and returning its states;
`start_states(model)` gives the states a stream starts from: the learned start
of a retrofitted model (per id or per context where it is conditioned on
one), zeros for a plain layer. A stream resets by feeding `start_states` again.

Only layers that treat each time step on its own can stream from a carried
state: a recurrent layer (not `Bidirectional`, which reads the sequence
backwards), and per-step layers (`Dense`, `TimeDistributed`, `Embedding`,
dropout, normalization over features, element-wise merges...). Anything else
that reads the time axis (attention, pooling or convolution over time, a custom
layer) is refused, naming the layer; a layer that reads no time axis (after a
recurrent layer without `return_sequences`, or on a context input) is fine.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from rnn_state_rewriter.generation import KERAS_PACKAGES
from rnn_state_rewriter.layer_copy import clone_layer
from rnn_state_rewriter.layers import SequenceMask, TrainableInitialState
from rnn_state_rewriter.probing import as_numpy
from rnn_state_rewriter.states import carried_state_variables, flatten_shapes, pack_like, state_shapes
from rnn_state_rewriter.walk import Inventory, is_graph_model, state_layer_feeding, walk

__all__ = ["conditioned", "start_states", "start_tensors", "streaming_model"]

# Keras layers that compute each time step from that step alone (along the last axis, where they have one).
PER_STEP = frozenset(
    {
        "Activation", "ActivityRegularization", "Add", "AlphaDropout", "Average", "BatchNormalization",
        "CategoryEncoding", "Dense", "Dropout", "ELU", "EinsumDense", "Embedding", "GaussianDropout",
        "GaussianNoise", "Identity", "IntegerLookup", "LayerNormalization", "LeakyReLU", "Masking", "Maximum",
        "Minimum", "Multiply", "Normalization", "PReLU", "ReLU", "Rescaling", "Softmax", "SpatialDropout1D",
        "StringLookup", "Subtract", "TimeDistributed", "UnitNormalization", "InputLayer",
    }
)  # fmt: skip
# Keras 3 operations in a graph (a mask computed by `keras.ops`) that work element by element.
ELEMENTWISE = frozenset(
    {
        "Abs", "Add", "Cast", "Clip", "Divide", "Equal", "Exp", "Greater", "GreaterEqual", "Less", "LessEqual",
        "Log", "LogicalAnd", "LogicalNot", "LogicalOr", "Maximum", "Minimum", "Multiply", "Negative", "NotEqual",
        "Power", "Relu", "Sigmoid", "Sqrt", "Square", "Subtract", "Tanh", "TrueDivide", "Where",
    }
)  # fmt: skip
# Of those layers, the ones that work along `axis`: per step only where that is the last (the features).
ALONG_AXIS = frozenset({"BatchNormalization", "LayerNormalization", "Normalization", "Softmax", "UnitNormalization"})


def streaming_model(model: Any) -> Any:
    """A model that runs `model` on one chunk of a sequence at a time, carrying the recurrent states over.

    Its inputs are the model's inputs (a chunk: any number of time steps,
    whatever number the model's sequence inputs were given),
    then one input per state tensor of each recurrent layer, in graph order;
    its outputs are the model's outputs, then the states after the chunk, in
    the same order. Inputs and outputs are named after the layer and the
    state's index (`lstm_state_0`, `lstm_state_0_after`). Fed the states it
    returned, chunk after chunk, it gives what `model` gives on the whole
    sequence (on the sequence so far, for a last recurrent layer without
    `return_sequences`); fed `start_states(model)`, it starts a stream anew.
    It shares every layer but the recurrent ones with `model`; those are
    copies, stateless, with the same weights.

    Args:
        model: a built Functional or Sequential model, `keras` or `tf_keras`,
            retrofitted or not, stateful or not.

    Returns:
        A Functional model of the same Keras generation.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if it is subclassed, or holds a layer that cannot stream
            (the message names it and says why).

    Example:

    ```python
    >>> import keras, numpy as np
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, return_sequences=True, name="gru")])
    >>> stream = rsr.streaming_model(model)
    >>> [tensor.name for tensor in stream.inputs][1:]
    ['gru_state_0']
    >>> x = np.random.rand(2, 6, 3).astype("float32")
    >>> state = rsr.start_states(model, batch_size=2)
    >>> first, *state = stream.predict([x[:, :4], *state], verbose=0)
    >>> second, *state = stream.predict([x[:, 4:], *state], verbose=0)
    >>> bool(np.allclose(np.concatenate([first, second], axis=1), model.predict(x, verbose=0), atol=1e-5))
    True

    ```
    """
    inventory = walk(model)
    _check_streamable(inventory)
    return _Replay(inventory).run()


def start_states(model: Any, batch_size: int = 1, context: Any = None) -> list[np.ndarray]:
    """The states a stream of `model` starts from, in the order `streaming_model(model)` takes them.

    The learned start of each recurrent layer with a trainable initial state,
    zeros for the others.

    Args:
        model: the model `streaming_model` was made from.
        batch_size: how many streams run side by side.
        context: where the states are conditioned on a context (`context=`,
            `num_ids=` at the retrofit), its values for each stream: ids of
            shape `(batch_size,)`, or floats `(batch_size, d)`.

    Returns:
        A list of NumPy arrays, one per state tensor, each `(batch_size, ...)`.

    Raises:
        ValueError: if the states need a context and none is given, or if
            `batch_size` is not a positive integer.

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, name="lstm")])
    >>> [s.shape for s in rsr.start_states(rsr.add_trainable_initial_states(model), batch_size=2)]
    [(2, 4), (2, 4)]

    ```
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Argument `batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    inventory = walk(model)
    _check_streamable(inventory)
    return [np.array(as_numpy(value)) for value in start_tensors(inventory, int(batch_size), context)]


def start_tensors(inventory: Inventory, batch_size: int, context: Any) -> list[Any]:
    """`start_states` of the walked model as tensors of its backend (zeros as NumPy arrays), so that a traced
    function (the TFLite `start` signature) computes them from a context tensor."""
    adapter = inventory.adapter
    found: list[Any] = []
    for call in _streamed_calls(inventory):
        layer = call.layer
        source = state_layer_feeding(adapter, layer, call.args, call.kwargs)
        if adapter.recurrent_kind(layer) == "trainable":
            source, layer = layer, layer.layer
        shapes = flatten_shapes(state_shapes(layer))
        if source is None:
            dtype = np.dtype(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", None) or "float32")
            found += [np.zeros((batch_size, *shape), dtype=dtype) for shape in shapes]
            continue
        if conditioned(source) and context is None:
            raise ValueError(
                f"The states of layer '{call.path}' are conditioned on a context: pass `context=`, its values for "
                "each stream (ids of shape (batch_size,), or floats of shape (batch_size, d))."
            )
        given = (
            {"context": context if hasattr(context, "shape") else np.asarray(context)} if conditioned(source) else {}
        )
        if isinstance(source, TrainableInitialState):
            axis = getattr(source, "batch_axis", 0)
            probe = np.zeros((batch_size, 1) if axis == 0 else (1, batch_size), dtype="float32")
            states = source(probe, **given)
        else:
            states = source.get_initial_state(batch_size, **given)
        found += adapter.flatten_tensors(states)
    return found


def conditioned(source: Any) -> bool:
    """Whether a state layer or wrapper conditions its states on a context."""
    return source.context_dim is not None or source.num_ids is not None


# ----------------------------------------------------------------------------
# What can stream
# ----------------------------------------------------------------------------


def _streamed_calls(inventory: Inventory) -> list[Any]:
    """The recurrent calls of the model's own graph, in graph order."""
    top = id(inventory.model)
    return [call for call in inventory.recurrent_calls if call.key[0] == top]


def _check_streamable(inventory: Inventory) -> None:
    """Raises the `ValueError` that names the first layer that cannot stream from a carried state."""
    adapter, model = inventory.adapter, inventory.model
    if not is_graph_model(adapter, model):
        raise ValueError(
            f"Model '{model.name}' is a subclassed {type(model).__name__}: its `call` is Python code that cannot "
            "be replayed one chunk at a time. Stream a Functional or Sequential model."
        )
    calls = inventory.graphs[id(model)]
    timed = _tensors_with_time(inventory)
    for layer, args, kwargs, _ in calls:
        inputs = [t for t in adapter.flatten_tensors((args, kwargs)) if adapter.is_keras_tensor(t)]
        if not any(id(t) in timed for t in inputs):
            continue  # reads no time axis: it cannot mix time steps
        reason = _why_not_per_step(adapter, layer)
        if reason:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot stream from a carried state: {reason}. "
                "A streaming model holds recurrent layers (not Bidirectional) and layers that compute each "
                "time step from that step alone."
            )


def _why_not_per_step(adapter: Any, layer: Any) -> str:
    """Why `layer`, given a sequence, cannot run one chunk at a time ("" if it can)."""
    kind = adapter.recurrent_kind(layer)
    name = type(layer).__name__
    if kind == "bidirectional":
        return "its backward half reads the sequence from its end, which a stream has not seen yet"
    if kind == "trainable" and adapter.recurrent_kind(layer.layer) == "bidirectional":
        return "it wraps a Bidirectional layer, whose backward half reads the sequence from its end"
    if kind is not None or isinstance(layer, (TrainableInitialState, SequenceMask)):
        return ""
    if is_graph_model(adapter, layer):
        return "it is a submodel; a streaming model replays the model's own graph only (flatten it first)"
    if name not in PER_STEP | ELEMENTWISE or type(layer).__module__.split(".")[0] not in KERAS_PACKAGES:
        return "it reads the time axis in a way a stream cannot carry (or is a layer of its own, which cannot be told)"
    axis = getattr(layer, "axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if name in ALONG_AXIS and any(a not in (-1, _last_axis(layer)) for a in axes):
        return f"it works along axis {axis}, not only the features of each time step"
    return ""


def _last_axis(layer: Any) -> int:
    try:
        return len(layer.input.shape) - 1
    except (AttributeError, ValueError):
        return -1


def _tensors_with_time(inventory: Inventory) -> set[int]:
    """The ids of the graph's tensors that carry a time axis: the inputs a recurrent layer's sequences come
    from, and what per-step layers and recurrent layers with `return_sequences` make of them."""
    adapter, model = inventory.adapter, inventory.model
    calls = inventory.graphs[id(model)]
    made_by = {id(output): i for i, (_, _, _, outputs) in enumerate(calls) for output in outputs}
    sources: set[int] = set()  # the tensors the recurrent layers' sequences are computed from
    pending = []
    for layer, args, kwargs, _ in calls:
        if adapter.recurrent_kind(layer) is not None:
            sequences, _, _ = adapter.split_initial_state(layer, args, kwargs)
            pending += [t for t in adapter.flatten_tensors(sequences) if adapter.is_keras_tensor(t)]
    while pending:
        tensor = pending.pop()
        if id(tensor) in sources:
            continue
        sources.add(id(tensor))
        if id(tensor) in made_by:
            _, args, kwargs, _ = calls[made_by[id(tensor)]]
            pending += [t for t in adapter.flatten_tensors((args, kwargs)) if adapter.is_keras_tensor(t)]
    timed = {id(t) for t in adapter.flatten_tensors(adapter.model_inputs(model)) if id(t) in sources}
    for layer, args, kwargs, outputs in calls:
        inputs = [t for t in adapter.flatten_tensors((args, kwargs)) if adapter.is_keras_tensor(t)]
        if isinstance(layer, TrainableInitialState) or not any(id(t) in timed for t in inputs):
            continue
        kind = adapter.recurrent_kind(layer)
        inner = layer.layer if kind == "trainable" else layer
        if kind is not None and not getattr(inner, "return_sequences", False):
            continue  # one output per sequence: the state after the last step seen
        timed |= {id(t) for t in outputs}
    return timed


# ----------------------------------------------------------------------------
# The replay
# ----------------------------------------------------------------------------


def _input_name(path: str, index: int) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", path) + f"_state_{index}"


class _Replay:
    """Replays the model's graph: per-step layers shared, each recurrent layer a stateless copy called on
    state inputs and returning its states."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.adapter = inventory.adapter
        self.state_inputs: list[Any] = []
        self.state_outputs: list[Any] = []

    def run(self) -> Any:
        adapter, model = self.adapter, self.inventory.model
        api = adapter.keras_api
        tensors: dict[int, Any] = {}
        timed = _tensors_with_time(self.inventory)

        def new_input(tensor: Any) -> Any:  # a sequence takes chunks of any number of steps
            if id(tensor) in timed and len(tensor.shape) >= 2:
                shape = (tensor.shape[0], None, *tensor.shape[2:])
                name = adapter.layer_of(tensor).name
                tensors[id(tensor)] = api.Input(batch_shape=shape, dtype=tensor.dtype, name=name)
            else:
                tensors[id(tensor)] = adapter.fresh_input(tensor)
            return tensors[id(tensor)]

        def lookup(value: Any) -> Any:
            return tensors.get(id(value), value) if adapter.is_keras_tensor(value) else value

        inputs = adapter.map_tensors(new_input, adapter.model_inputs(model))
        for layer, args, kwargs, outputs in self.inventory.graphs[id(model)]:
            if isinstance(layer, TrainableInitialState):
                continue  # its start comes in through the state inputs
            if adapter.recurrent_kind(layer) is not None:
                result = self.recurrent(layer, args, kwargs, lookup)
            else:
                result = layer(*adapter.map_tensors(lookup, args), **adapter.map_tensors(lookup, kwargs))
            for old, new in zip(outputs, adapter.flatten_tensors(result), strict=True):
                tensors[id(old)] = new
        outputs = adapter.flatten_tensors(adapter.map_tensors(lambda t: tensors[id(t)], adapter.model_outputs(model)))
        return api.Model(
            inputs=[*adapter.flatten_tensors(inputs), *self.state_inputs],
            outputs=[*outputs, *self.state_outputs],
            name=f"{model.name}_streaming",
        )

    def recurrent(self, layer: Any, args: Any, kwargs: Any, lookup: Any) -> Any:
        """The call of a stateless copy of the recurrent layer on state inputs; returns its outputs."""
        adapter = self.adapter
        api = adapter.keras_api
        path = layer.name
        sequences, others, _ = adapter.split_initial_state(layer, args, kwargs)
        others = {key: value for key, value in others.items() if key != "context"}
        inner = layer.layer if adapter.recurrent_kind(layer) == "trainable" else layer
        structure = state_shapes(inner)
        shapes = flatten_shapes(structure)
        state_inputs = [
            api.Input(shape=tuple(shape), name=_input_name(path, index), dtype=inner.compute_dtype)
            for index, shape in enumerate(shapes)
        ]
        copy = clone_layer(adapter, inner, "")
        copy.return_state = True
        copy.stateful = False
        result = adapter.call_with_initial_state(
            copy,
            adapter.map_tensors(lookup, sequences),
            adapter.map_tensors(lookup, others),
            pack_like(structure, state_inputs) if len(shapes) > 1 else state_inputs[0],
        )
        carried = {id(v) for v in carried_state_variables(inner)}
        weights = [w for w in inner.weights if id(w) not in carried]
        for target, source in zip(copy.weights, weights, strict=True):
            adapter.copy_into(target, source)
        outputs, *states = adapter.flatten_tensors(result)
        self.state_inputs += state_inputs
        self.state_outputs += [
            api.layers.Identity(name=_input_name(path, index) + "_after")(state) for index, state in enumerate(states)
        ]
        return outputs

"""`TrainableInitialState` and `TrainableInitialStateRNN`.

The behaviour of both layers is written once, in generation-neutral mixins,
against the tensor operations of a Keras generation (`rnn_state_rewriter._adapter`):
`keras.ops` and `keras.random` for Keras 3 (any backend: TensorFlow, JAX,
PyTorch), TensorFlow for tf-keras. The public classes here are the Keras 3
layers; their tf-keras twins, with the same names and behaviour, are the same
mixins on tf-keras' base classes (`rnn_state_rewriter._tf_keras`), and
`isinstance` accepts them as the public classes.
`TrainableInitialState.for_layer(rnn)` and `TrainableInitialStateRNN(rnn)`
return a layer of `rnn`'s generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from rnn_state_rewriter._adapter import adapter, adapter_for
from rnn_state_rewriter.arguments import check_context, check_noise_stddev, distinct_initializers, per_state
from rnn_state_rewriter.generation import Generation, batch_axis
from rnn_state_rewriter.states import (
    Shape,
    carried_state_variables,
    flatten_shapes,
    is_stateful,
    known_state_count,
    map_shapes,
    pack_like,
    recurrent_kind,
    reset_carried_state,
    state_shapes,
)

if TYPE_CHECKING:
    from rnn_state_rewriter._adapter import Adapter

__all__ = ["TrainableInitialState", "TrainableInitialStateRNN", "SequenceMask"]

PACKAGE = "rnn_state_rewriter"


class GenerationOf:
    """A class attribute: the module of a Keras generation (`Adapter`), imported on first use.

    The layer classes use their generation's tensor operations through it; the
    generation modules import this one, so they are looked up when first needed.
    """

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.module: Adapter | None = None

    def __get__(self, instance: Any, owner: type) -> Adapter:
        if self.module is None:
            self.module = adapter(self.generation)
        return self.module


class PublicLayer(type):
    """The metaclass of the public layer classes: `isinstance` and `issubclass` accept their twins of the
    other Keras generation (made with `twin_of`), which cannot share their Keras base class."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return cls.__subclasscheck__(type(instance))

    def __subclasscheck__(cls, subclass: type) -> bool:
        return type.__subclasscheck__(cls, subclass) or getattr(subclass, "_rsr_twin_of", None) is cls


def twin_of(name: str) -> Callable[[type], type]:
    """Class decorator: marks a class as the other generation's twin of the public layer class `name`."""

    def mark(twin: type) -> type:
        twin._rsr_twin_of = globals()[name]  # type: ignore[attr-defined]
        return twin

    return mark


def add_state_variables(
    layer: Any, shapes: list[Shape], initializers: list[Any], regularizers: list[Any], constraints: list[Any]
) -> list[Any]:
    """Creates `initial_state_0`, `initial_state_1`, ... on `layer`, one per shape."""
    return [
        layer.add_weight(
            name=f"initial_state_{i}",
            shape=shape,
            initializer=initializers[i],
            regularizer=regularizers[i],
            constraint=constraints[i],
            trainable=True,
        )
        for i, shape in enumerate(shapes)
    ]


def add_context_maps(layer: Any, shapes: list[Shape], context_dim: int | None, num_ids: int | None) -> list[Any]:
    """Creates `context_map_0`, `context_map_1`, ... on `layer`, one per state, at zero.

    For a float context of `context_dim` features each is a kernel of shape
    `(context_dim, prod(state_shape))`; for ids below `num_ids`, a table of
    shape `(num_ids, *state_shape)`. None of either: no maps.
    """
    if context_dim is None and num_ids is None:
        return []
    return [
        layer.add_weight(
            name=f"context_map_{i}",
            shape=(context_dim, int(np.prod(shape))) if context_dim is not None else (num_ids, *shape),
            initializer="zeros",
            trainable=True,
        )
        for i, shape in enumerate(shapes)
    ]


def broadcast_states(
    generation: Adapter,
    variables: list[Any],
    structure: Any,
    inputs: Any,
    batch_axis: int,
    dtype: Any,
    noise: Callable[[Any], Any] | None = None,
    maps: Sequence[Any] = (),
    context: Any = None,
    by_id: bool = False,
) -> Any:
    """The state variables cast to `dtype`, broadcast to the batch of `inputs`, nested as `structure`.

    With `maps`, each state adds its map of `context`: the rows of its table at
    the ids (`by_id`), or the context times its kernel. `noise`, if given, maps
    each state to the noise added to it.
    """
    batch_size = generation.batch_size(inputs, batch_axis)
    states = []
    for i, (variable, shape) in enumerate(zip(variables, flatten_shapes(structure), strict=True)):
        state = generation.broadcast_to_batch(variable, batch_size, shape, dtype)
        if maps:
            if by_id:
                state = state + generation.lookup(context, maps[i], dtype)
            else:
                state = state + generation.project(context, maps[i], shape, dtype)
        if noise is not None:
            state = state + noise(state)
        states.append(state)
    return pack_like(structure, states)


class StateSourceMixin:
    """What both layers share about the states they make: noise, and the context they are conditioned on."""

    _keras: Adapter
    name: str
    noise_stddev: float
    context_dim: int | None
    num_ids: int | None
    context_maps: list[Any]

    def _state_options(self, noise_stddev: Any, context_dim: Any, num_ids: Any, owner: str) -> None:
        """Checks and sets the noise and context options; the variables come at build."""
        self.noise_stddev = check_noise_stddev(noise_stddev, owner)
        self.context_dim, self.num_ids = check_context(context_dim, num_ids, owner)
        self._noise_source = self._keras.noise_source() if self.noise_stddev else None
        self.state_variables: list[Any] = []
        self.context_maps = []

    def _noise(self, state: Any) -> Any:
        return self._keras.normal(state, self.noise_stddev, self._noise_source)

    def _check_context(self, context: Any) -> None:
        """Raises `ValueError` for a context the layer does not take, or a missing or misshapen one."""
        if not self.context_maps:
            if context is not None:
                raise ValueError(
                    f"Layer '{self.name}' has no context map: its states are not conditioned on a context. "
                    "Make it with `context_dim=` (float features) or `num_ids=` (integer ids), or call it "
                    "without `context`."
                )
            return
        expects = (
            f"ids of shape (batch,) or (batch, 1) below {self.num_ids}"
            if self.num_ids
            else (f"floats of shape (batch, {self.context_dim})")
        )
        if context is None:
            raise ValueError(
                f"Layer '{self.name}' conditions its states on a context ({expects}): pass it as `context=`."
            )
        shape = tuple(getattr(context, "shape", ()) or ())
        if self.num_ids:
            fits = len(shape) == 1 or (len(shape) == 2 and shape[1] in (1, None))
        else:
            fits = len(shape) == 2 and shape[1] in (self.context_dim, None)
        if not fits:
            raise ValueError(
                f"Argument `context` of layer '{self.name}' must be {expects}. Received: context.shape={shape}"
            )


def _first_shape(shape: Any) -> tuple[Any, ...]:
    """The shape of the first input in a (possibly nested) structure of input shapes."""
    while isinstance(shape, dict) or (
        isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], (int, type(None)))
    ):
        shape = next(iter(shape.values())) if isinstance(shape, dict) else shape[0]
    return tuple(shape) if shape is not None else ()


def _serialize_each(api: Any, kind: str, values: list[Any]) -> list[Any]:
    module = getattr(api, kind)
    return [module.serialize(module.get(value)) for value in values]


class TrainableInitialStateMixin(StateSourceMixin):
    """The behaviour of `TrainableInitialState`, shared by both generations."""

    _keras: Adapter  # the concrete class's Keras generation (`GenerationOf`)
    name: str  # from the Keras base class

    def __init__(
        self,
        state_shapes: Sequence[Any],
        initializer: Any = "zeros",
        regularizer: Any = None,
        constraint: Any = None,
        noise_stddev: float = 0.0,
        batch_axis: int = 0,
        context_dim: int | None = None,
        num_ids: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[call-arg]
        try:
            shapes = map_shapes(lambda s: tuple(int(d) for d in s), list(state_shapes))
            count = len(flatten_shapes(shapes)) if len(shapes) else 0
        except (TypeError, ValueError):
            count = 0
        if count == 0:
            raise ValueError(
                f"Argument `state_shapes` of layer '{self.name}' must be a non-empty "
                "list of state shapes without batch axis, e.g. [(64,), (64,)] for "
                f"an LSTM(64). Received: state_shapes={state_shapes!r}"
            )
        owner = f"layer '{self.name}'"
        api = self._keras.keras_api
        self.state_shapes = shapes
        self.initializers = distinct_initializers(
            [
                api.initializers.get(v)
                for v in per_state("zeros" if initializer is None else initializer, count, "initializer", owner)
            ],
        )
        self.regularizers = [api.regularizers.get(v) for v in per_state(regularizer, count, "regularizer", owner)]
        self.constraints = [api.constraints.get(v) for v in per_state(constraint, count, "constraint", owner)]
        self.batch_axis = int(batch_axis)
        self.supports_masking = True
        self._state_options(noise_stddev, context_dim, num_ids, owner)

    @classmethod
    def for_layer(
        cls,
        layer: Any,
        *,
        initializer: Any = "zeros",
        regularizer: Any = None,
        constraint: Any = None,
        noise_stddev: float = 0.0,
        context_dim: int | None = None,
        num_ids: int | None = None,
        name: str | None = None,
    ) -> Any:
        """Makes the initial-state layer of a built recurrent layer, of its generation.

        Shapes, nesting, batch axis and dtype policy all come from `layer`.
        `initializer`, `regularizer` and `constraint` are a single value for every
        state, or a list with one entry per state (forward then backward for
        `Bidirectional`, flattened for stacked cells). `context_dim` or
        `num_ids` condition the states on a context (see the class). Returns an instance of
        `cls` when `cls` is of `layer`'s generation (so subclasses can use it),
        else the `TrainableInitialState` of `layer`'s generation.
        """
        generation = adapter_for(layer)
        target = cls if issubclass(cls, generation.keras_api.layers.Layer) else generation.TrainableInitialState
        shapes = state_shapes(layer)
        count = len(flatten_shapes(shapes))
        owner = f"layer '{layer.name}'"
        for argument, value in (
            ("initializer", initializer),
            ("regularizer", regularizer),
            ("constraint", constraint),
        ):
            per_state(value, count, argument, owner)
        return target(
            shapes,
            initializer=initializer,
            regularizer=regularizer,
            constraint=constraint,
            noise_stddev=noise_stddev,
            batch_axis=batch_axis(layer),
            context_dim=context_dim,
            num_ids=num_ids,
            name=name or f"{layer.name}_initial_state",
            dtype=layer.dtype_policy,
        )

    @property
    def flat_shapes(self) -> list[Shape]:
        """The shape of each state variable, in order."""
        return flatten_shapes(self.state_shapes)

    def build(self, input_shape: Any = None) -> None:
        self.state_variables = add_state_variables(
            self, self.flat_shapes, self.initializers, self.regularizers, self.constraints
        )
        self.context_maps = add_context_maps(self, self.flat_shapes, self.context_dim, self.num_ids)
        self.built = True

    def call(self, inputs: Any, training: Any = None, context: Any = None) -> Any:
        self._check_context(context)
        noise = self._noise if training and self.noise_stddev else None
        return broadcast_states(
            self._keras,
            self.state_variables,
            self.state_shapes,
            inputs,
            self.batch_axis,
            self.compute_dtype,  # type: ignore[attr-defined]
            noise,
            self.context_maps,
            context,
            by_id=self.num_ids is not None,
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        first = _first_shape(input_shape)
        batch = first[self.batch_axis] if len(first) > self.batch_axis else None
        return map_shapes(lambda shape: (batch, *shape), self.state_shapes)

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def get_config(self) -> dict[str, Any]:
        config = {
            "state_shapes": map_shapes(list, self.state_shapes),
            "initializer": _serialize_each(self._keras.keras_api, "initializers", self.initializers),
            "regularizer": _serialize_each(self._keras.keras_api, "regularizers", self.regularizers),
            "constraint": _serialize_each(self._keras.keras_api, "constraints", self.constraints),
            "noise_stddev": self.noise_stddev,
            "batch_axis": self.batch_axis,
            "context_dim": self.context_dim,
            "num_ids": self.num_ids,
        }
        return {**super().get_config(), **config}  # type: ignore[misc]


class TrainableInitialStateRNNMixin(StateSourceMixin):
    """The behaviour of `TrainableInitialStateRNN`, shared by both generations."""

    _keras: Adapter
    gives_trainable_initial_state = True  # how `states.recurrent_kind` tells it from other wrappers
    starts_fresh: Any = None  # stateful layers: 1 while the next batch starts from the learned state

    def __init__(
        self,
        layer: Any,
        *,
        initializer: Any = None,
        regularizer: Any = None,
        constraint: Any = None,
        noise_stddev: float = 0.0,
        context_dim: int | None = None,
        num_ids: int | None = None,
        **kwargs: Any,
    ) -> None:
        kind = recurrent_kind(layer)
        if kind not in ("rnn", "bidirectional"):
            raise TypeError(
                "Argument `layer` of `TrainableInitialStateRNN` must be a recurrent "
                "layer (`RNN`, LSTM, GRU, SimpleRNN, ConvLSTM or `Bidirectional`). "
                f"Received: layer={getattr(layer, 'name', layer)!r} of type "
                f"{type(layer).__name__}"
            )
        super().__init__(layer, **kwargs)  # type: ignore[call-arg]
        count = known_state_count(layer)
        if count is not None:  # else checked at build, once the layer knows its states
            self._per_state_options(layer, count, initializer, regularizer, constraint)
        self.initializer = "zeros" if initializer is None else initializer
        self.regularizer = regularizer
        self.constraint = constraint
        self.supports_masking = True
        self._state_shapes: list[Any] = []
        self._state_options(noise_stddev, context_dim, num_ids, f"layer '{layer.name}'")

    def build(self, sequences_shape: Any = None, initial_state_shape: Any = None) -> None:
        layer: Any = self.layer  # type: ignore[attr-defined]
        if not layer.built:
            layer.build(sequences_shape)
        self._state_shapes = state_shapes(layer)
        count = len(flatten_shapes(self._state_shapes))
        options = self._per_state_options(layer, count, self.initializer, self.regularizer, self.constraint)
        # Created after the wrapped layer's weights, in order: the same seed gives
        # the same values as `trainable-initial-state-rnn`.
        self.state_variables = add_state_variables(
            self,
            flatten_shapes(self._state_shapes),
            options["initializer"],
            options["regularizer"],
            options["constraint"],
        )
        self.context_maps = add_context_maps(self, flatten_shapes(self._state_shapes), self.context_dim, self.num_ids)
        if is_stateful(layer):
            self._keras.prepare_stateful(layer)
            if self.starts_fresh is None:  # not a weight: like the carried state, not saved; a layer starts reset
                object.__setattr__(self, "starts_fresh", self._keras.flag(1.0))
        self.built = True

    def _per_state_options(
        self, layer: Any, count: int, initializer: Any, regularizer: Any, constraint: Any
    ) -> dict[str, list[Any]]:
        """One initializer, regularizer and constraint per state (each state its own draw).

        Raises:
            ValueError: if a per-state list does not have `count` entries.
        """
        owner = f"layer '{layer.name}'"
        api = self._keras.keras_api
        options = {}
        for argument, kind, value in (
            ("initializer", "initializers", "zeros" if initializer is None else initializer),
            ("regularizer", "regularizers", regularizer),
            ("constraint", "constraints", constraint),
        ):
            options[argument] = [getattr(api, kind).get(v) for v in per_state(value, count, argument, owner)]
        options["initializer"] = distinct_initializers(options["initializer"])
        return options

    def call(
        self,
        sequences: Any,
        initial_state: Any = None,
        mask: Any = None,
        training: Any = None,
        context: Any = None,
    ) -> Any:
        layer: Any = self.layer  # type: ignore[attr-defined]
        self._check_context(context)
        if initial_state is None:
            initial_state = self._learned_states(sequences, batch_axis(layer), context, training)
            if self.starts_fresh is not None:
                initial_state = self._after_reset(initial_state)
        else:  # tf-keras accepts tensors only
            initial_state = self._keras.map_tensors(self._keras.to_tensor, initial_state)
        if mask is None:
            mask = self._keras.mask_of(sequences)
        outputs = layer(sequences, initial_state=initial_state, mask=mask, training=training)
        if self.starts_fresh is not None:
            self.starts_fresh.assign(0.0)  # the next batch carries on from this one's final state
        return outputs

    def _learned_states(self, inputs: Any, axis: int, context: Any = None, training: Any = None) -> Any:
        layer: Any = self.layer  # type: ignore[attr-defined]
        return broadcast_states(
            self._keras,
            self.state_variables,
            self._state_shapes,
            inputs,
            axis,
            layer.compute_dtype,
            self._noise if training and self.noise_stddev else None,
            self.context_maps,
            context,
            by_id=self.num_ids is not None,
        )

    def _after_reset(self, learned: Any) -> Any:
        """A stateful layer's start: the learned state right after a reset, else the state it carries.

        Both generations take the `initial_state` given to a stateful layer (tf-keras
        only while its carried state is zero, which is then the same thing), so the
        gradient reaches the learned state through the first batch after a reset.
        """
        layer: Any = self.layer  # type: ignore[attr-defined]
        read = self._keras.read

        def mix(state: Any, kept: Any) -> Any:  # in the carried state's dtype: tf-keras compares the two
            fresh = read(self.starts_fresh, kept.dtype)
            return fresh * read(state, kept.dtype) + (1.0 - fresh) * read(kept, kept.dtype)

        flat = self._keras.flatten_tensors(learned)
        mixed = iter([mix(state, kept) for state, kept in zip(flat, carried_state_variables(layer), strict=True)])
        if recurrent_kind(layer) == "bidirectional":
            return pack_like(self._state_shapes, list(mixed))
        # Nested as the layer keeps its carried state: tf-keras compares the two structures.
        return self._keras.map_tensors(lambda _: next(mixed), layer.states)

    @property
    def stateful(self) -> bool:
        """Whether the wrapped layer carries its state between batches (a reset returns it to the learned state)."""
        return is_stateful(self.layer)  # type: ignore[attr-defined]

    @stateful.setter
    def stateful(self, value: bool) -> None:  # base classes set a default; the wrapped layer decides
        pass

    @property
    def states(self) -> list[Any] | None:
        """The variables holding the wrapped stateful layer's carried state (None if it is not stateful)."""
        return carried_state_variables(self.layer) if self.stateful else None  # type: ignore[attr-defined]

    def reset_state(self, *args: Any, **kwargs: Any) -> None:
        """Resets the wrapped stateful layer: its next batch starts from the learned state.

        Given explicit states (tf-keras' `reset_states(states)`), it starts from those.
        """
        self._reset("reset_state", "reset_states", args, kwargs)

    def reset_states(self, *args: Any, **kwargs: Any) -> None:
        """Alias of `reset_state` (the name tf-keras and `Model.reset_states` use)."""
        self._reset("reset_states", "reset_state", args, kwargs)

    def _reset(self, name: str, other: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        layer: Any = self.layer  # type: ignore[attr-defined]
        if args or kwargs:
            (getattr(layer, name, None) or getattr(layer, other))(*args, **kwargs)
        else:
            reset_carried_state(layer)
        if self.starts_fresh is not None:
            given = bool(args) or kwargs.get("states") is not None
            self.starts_fresh.assign(0.0 if given else 1.0)

    def get_initial_state(self, batch_size_or_inputs: Any, context: Any = None) -> Any:
        """The learned initial state for a batch, nested as the wrapped layer takes it.

        Code that asks a recurrent layer for its starting state
        (`states = self.gru.get_initial_state(x)`) gets the learned one.

        Args:
            batch_size_or_inputs: the batch size (Keras 3's signature), or the
                layer's inputs (tf-keras' signature).
            context: the context, for a layer made with `context_dim` or `num_ids`.
        """
        layer: Any = self.layer  # type: ignore[attr-defined]
        axis = batch_axis(layer)
        sequences = batch_size_or_inputs
        if isinstance(sequences, int) or len(getattr(sequences, "shape", (None,))) == 0:
            sequences, axis = self._keras.batch_of(sequences), 0
        self._check_context(context)
        return self._learned_states(sequences, axis, context)

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        return self.layer.compute_output_shape(sequences_shape)  # type: ignore[attr-defined]

    def compute_mask(self, sequences: Any, mask: Any = None) -> Any:
        return self.layer.compute_mask(sequences, mask)  # type: ignore[attr-defined]

    def get_config(self) -> dict[str, Any]:
        def serialize(kind: str, value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return _serialize_each(self._keras.keras_api, kind, list(value))
            return _serialize_each(self._keras.keras_api, kind, [value])[0]

        config = {
            "initializer": serialize("initializers", self.initializer),
            "regularizer": serialize("regularizers", self.regularizer),
            "constraint": serialize("constraints", self.constraint),
            "noise_stddev": self.noise_stddev,
            "context_dim": self.context_dim,
            "num_ids": self.num_ids,
        }
        return {**super().get_config(), **config}  # type: ignore[misc]


@keras.saving.register_keras_serializable(package=PACKAGE)
class TrainableInitialState(TrainableInitialStateMixin, keras.layers.Layer, metaclass=PublicLayer):
    """A layer that owns a trainable initial state for a recurrent layer.

    It holds one trainable variable per state tensor (`initial_state_0`,
    `initial_state_1`, ...) and, called on the recurrent layer's input, returns
    those states broadcast to the input's batch size, nested the way the
    recurrent layer expects them; pass the result as `initial_state=`.
    Variables use the layer's variable dtype (float32 under `mixed_float16`),
    outputs its compute dtype. Masks on the input are accepted and left alone.

    Build it from a built recurrent layer with `TrainableInitialState.for_layer`,
    which returns a layer of that layer's Keras generation (Keras 3 or tf-keras).

    The states can be conditioned on a context passed at call time: with
    `context_dim=d`, a float context of shape `(batch, d)` adds a learned
    linear map of it to each state; with `num_ids=n`, integer ids of shape
    `(batch,)` or `(batch, 1)` add a learned row per id (one state per id).
    The maps (`context_map_0`, ...) start at zero.

    Args:
        state_shapes: one shape (without batch axis) per state, nested where the
            recurrent layer nests its states.
        initializer: an initializer for every state, or a list with one per state.
            Defaults to `"zeros"`, which keeps a retrofitted model's predictions.
        regularizer: a regularizer, or a list with one per state.
        constraint: a constraint, or a list with one per state.
        noise_stddev: standard deviation of Gaussian noise added to the states in
            training only (Zimmermann et al., 2012). Default 0.
        batch_axis: the axis of the input that holds the batch (1 for
            `time_major` tf-keras layers).
        context_dim: the number of features of a float context the states
            are conditioned on (None: no context).
        num_ids: the number of ids of an integer context, one learned
            state per id (None: no context). Exclusive with `context_dim`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the recurrent layer's input (only its batch size is used).
        training: whether noise is added.
        context: the context, required with `context_dim` or `num_ids`. An
            id outside `0 .. num_ids - 1` gets the shared learned state.

    Returns:
        states (list): the states, nested for stacked cells, each a tensor of
        shape `(batch, *state_shape)`.

    Raises:
        ValueError: for empty `state_shapes`, a per-state list of the wrong
            length, a negative `noise_stddev`, a `context_dim` or `num_ids`
            that is not a positive integer; at call time, a missing context or
            one of the wrong shape.

    Example:

    ```python
    >>> import keras
    >>> from rnn_state_rewriter import TrainableInitialState
    >>> lstm = keras.layers.LSTM(8)
    >>> lstm.build((None, 5, 3))
    >>> states = TrainableInitialState.for_layer(lstm, initializer="glorot_uniform")
    >>> inputs = keras.Input((5, 3))
    >>> outputs = lstm(inputs, initial_state=states(inputs))
    >>> [tuple(v.shape) for v in states.weights]
    [(8,), (8,)]

    ```
    """

    _keras = GenerationOf(Generation.KERAS3)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TrainableInitialStateRNN(TrainableInitialStateRNNMixin, keras.layers.Wrapper, metaclass=PublicLayer):
    """Wraps a recurrent layer so that it starts from a trainable initial state.

    A drop-in for `TrainableInitialStateRNN` of the `trainable-initial-state-rnn`
    package: same constructor, same call semantics, weights named
    `initial_state_0`, ... created after the wrapped layer's, in the same order,
    so the same seed gives the same values. Works for both Keras generations:
    given a `tf_keras` layer it returns a `tf_keras` layer.

    A stateful layer (`stateful=True`) starts from the learned state, carries
    its state from batch to batch as before, and returns to the learned state
    when reset: `reset_state()` / `reset_states()` of the wrapper, tf-keras'
    `model.reset_states()`, or `rnn_state_rewriter.reset_states(model)`. The
    gradient reaches the learned state through the first batch after a reset.
    Like the carried state, whether a reset is pending is not saved: a
    reloaded model starts reset.

    Args:
        layer: a recurrent layer (`RNN` around any cell, LSTM, GRU, SimpleRNN,
            ConvLSTM1D/2D/3D, or `Bidirectional`), stateful or not.
        initializer: an initializer for every state, or a list with one per
            state. Defaults to zeros.
        regularizer: a regularizer, or a list with one per state.
        constraint: a constraint, or a list with one per state.
        noise_stddev: standard deviation of Gaussian noise added to the
            learned states in training only. Default 0.
        context_dim: condition the states on a float context of this many
            features, as `TrainableInitialState` does (None: no context).
        num_ids: condition the states on integer ids, one learned state per
            id (None: no context).
        **kwargs: base layer arguments (`name`, ...).

    Call arguments:
        sequences: the input sequences.
        initial_state: optional; when given, it is used instead of the learned
            state.
        mask: optional mask; taken from the input's Keras mask when not given,
            and always forwarded to the wrapped layer, so padded steps are
            skipped exactly as the plain layer skips them.
        training: training mode, forwarded to the wrapped layer.
        context: the context, required with `context_dim` or `num_ids`.

    Returns:
        outputs (tensor | list): what the wrapped layer returns.

    Raises:
        TypeError: if `layer` is not a recurrent Keras layer.
        ValueError: if a per-state list has the wrong length: at construction
            where the layer's cells say how many states they have (LSTM, GRU,
            SimpleRNN, cells with an int or list `state_size`), else at build.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> from rnn_state_rewriter import TrainableInitialStateRNN
    >>> model = keras.Sequential([
    ...     keras.Input((10, 4)),
    ...     TrainableInitialStateRNN(keras.layers.LSTM(16)),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile("adam", "mse")
    >>> _ = model.fit(np.zeros((8, 10, 4)), np.zeros((8, 1)), verbose=0)
    >>> [v.name for v in model.layers[0].state_variables]
    ['initial_state_0', 'initial_state_1']

    ```
    """

    _keras = GenerationOf(Generation.KERAS3)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        layer = args[0] if args else kwargs.get("layer")
        if cls is TrainableInitialStateRNN and layer is not None and not isinstance(layer, dict):
            try:
                twin = adapter_for(layer).TrainableInitialStateRNN
            except TypeError:  # not a Keras layer: the constructor says so
                twin = cls
            if twin is not cls:
                return twin(*args, **kwargs)
        return super().__new__(cls, *args, **kwargs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SequenceMask(keras.layers.Layer):
    """Outputs the Keras mask its input carries at run time (all True if none).

    Keras 3 only. Keras 3 gives a layer its input's mask only when the layer
    gets a single tensor argument, so a recurrent layer called with
    `initial_state=` loses a mask that is not in the graph but arrives at run
    time (Keras 3 hands masks on at run time into and past nested submodels).
    In models that use masks, `add_trainable_initial_states` inserts this layer
    there and passes its output as `mask=`, so padded steps are still skipped.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> x = keras.layers.Embedding(5, 2, mask_zero=True)(np.array([[1, 0]]))
    >>> keras.ops.convert_to_numpy(SequenceMask()(x)).tolist()
    [[True, False]]

    ```
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None:
            return keras.ops.ones(keras.ops.shape(inputs)[:2], dtype="bool")
        return keras.ops.convert_to_tensor(mask)

    def compute_output_spec(self, inputs: Any, mask: Any = None) -> Any:
        return keras.KerasTensor(tuple(inputs.shape[:2]), dtype="bool")

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

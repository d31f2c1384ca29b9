"""`TrainableInitialStateRNN`: a recurrent layer wrapped so that it starts from a trainable state.

Its behaviour is written once, in `TrainableInitialStateRNNMixin`, against the
tensor operations of a Keras generation; the public class here is the Keras 3
wrapper (any backend), and `layers/tf_keras.py` puts the same mixin on
tf-keras' `Wrapper`. `TrainableInitialStateRNN(rnn)` returns a wrapper of
`rnn`'s generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

from rnn_state_rewriter.arguments import distinct_initializers, per_state
from rnn_state_rewriter.generation import Generation, batch_axis, generation_of
from rnn_state_rewriter.layers.base import (
    PACKAGE,
    GenerationOf,
    PublicLayer,
    StateSourceMixin,
    add_context_maps,
    add_state_variables,
    broadcast_states,
    classes_of,
    public,
)
from rnn_state_rewriter.states import (
    carried_state_variables,
    flatten_shapes,
    is_stateful,
    known_state_count,
    pack_like,
    recurrent_kind,
    reset_carried_state,
    state_shapes,
)

if TYPE_CHECKING:
    from rnn_state_rewriter.backend import Adapter


__all__ = ["StatefulStartMixin", "TrainableInitialStateRNN", "TrainableInitialStateRNNMixin"]


class StatefulStartMixin:
    """How the wrapper of a stateful layer starts: from the learned state right after a reset, else from the
    state the layer carries over from the last batch."""

    _keras: Adapter
    _state_shapes: list[Any]
    starts_fresh: Any = None  # stateful layers: 1 while the next batch starts from the learned state

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


class TrainableInitialStateRNNMixin(StatefulStartMixin, StateSourceMixin):
    """The behaviour of `TrainableInitialStateRNN`, shared by both generations."""

    _keras: Adapter
    gives_trainable_initial_state = True  # how `states.recurrent_kind` tells it from other wrappers

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
        config = self._state_config(self.initializer, self.regularizer, self.constraint)
        return {**super().get_config(), **config}  # type: ignore[misc]


@public(Generation.KERAS3)
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

    __module__ = "rnn_state_rewriter.layers"  # public there; saved configs name it
    _keras = GenerationOf(Generation.KERAS3)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        layer = args[0] if args else kwargs.get("layer")
        if cls is TrainableInitialStateRNN and layer is not None and not isinstance(layer, dict):
            try:
                twin = classes_of(generation_of(layer)).wrapper
            except TypeError:  # not a Keras layer: the constructor says so
                twin = cls
            if twin is not cls:
                return twin(*args, **kwargs)
        return super().__new__(cls, *args, **kwargs)

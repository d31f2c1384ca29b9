"""`TrainableInitialState`: a layer holding one trainable variable per state of a recurrent layer.

Its behaviour is written once, in `TrainableInitialStateMixin`, against the
tensor operations of a Keras generation; the public class here is the Keras 3
layer (any backend), and `layers/tf_keras.py` puts the same mixin on tf-keras'
base class. `TrainableInitialState.for_layer(rnn)` returns a layer of `rnn`'s
generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras

from rnn_state_rewriter.arguments import distinct_initializers, per_state
from rnn_state_rewriter.backend import adapter_for
from rnn_state_rewriter.generation import Generation, batch_axis
from rnn_state_rewriter.layers.base import (
    PACKAGE,
    GenerationOf,
    PublicLayer,
    StateSourceMixin,
    _first_shape,
    add_context_maps,
    add_state_variables,
    broadcast_states,
    classes_of,
    public,
)
from rnn_state_rewriter.states import (
    Shape,
    flatten_shapes,
    map_shapes,
    state_shapes,
)

if TYPE_CHECKING:
    from rnn_state_rewriter.backend import Adapter


__all__ = ["TrainableInitialState", "TrainableInitialStateMixin"]


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
        target = cls if issubclass(cls, generation.keras_api.layers.Layer) else classes_of(generation.GENERATION).state
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
            "batch_axis": self.batch_axis,
            **self._state_config(list(self.initializers), list(self.regularizers), list(self.constraints)),
        }
        return {**super().get_config(), **config}  # type: ignore[misc]


@public(Generation.KERAS3)
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

    __module__ = "rnn_state_rewriter.layers"  # public there; saved configs name it
    _keras = GenerationOf(Generation.KERAS3)

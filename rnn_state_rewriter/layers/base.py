"""What the layers share: their generation's operations, twin classes, and the states they make.

`GenerationOf` gives a layer class its generation's side of the seam
(`rnn_state_rewriter.backend`); `PublicLayer` and `twin_of` let `isinstance`
accept a public class's tf-keras twin; `classes_of` resolves a generation's
layer classes above the seam. `StateSourceMixin` and the functions here make and
broadcast the state variables and context maps both layers hold.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rnn_state_rewriter.arguments import check_context, check_noise_stddev
from rnn_state_rewriter.backend import adapter
from rnn_state_rewriter.generation import Generation
from rnn_state_rewriter.states import (
    Shape,
    flatten_shapes,
    pack_like,
)

if TYPE_CHECKING:
    from rnn_state_rewriter.backend import Adapter


PACKAGE = "rnn_state_rewriter"


class GenerationOf:
    """A class attribute: the module of a Keras generation (`Adapter`), imported on first use.

    The layer classes use their generation's tensor operations through it; the
    module is imported when first needed, so that defining the Keras 3 classes
    imports no tf-keras.
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


def twin_of(public: type) -> Callable[[type], type]:
    """Class decorator: marks a class as the other generation's twin of the public layer class `public`."""

    def mark(twin: type) -> type:
        twin._rsr_twin_of = public  # type: ignore[attr-defined]
        return twin

    return mark


class LayerClasses(NamedTuple):
    """The layer classes of one Keras generation."""

    state: type  # `TrainableInitialState`
    wrapper: type  # `TrainableInitialStateRNN`


# The module defining each generation's classes, and the classes, filled as they are defined (`public`).
_MODULES = {Generation.KERAS3: "rnn_state_rewriter.layers", Generation.TF_KERAS: "rnn_state_rewriter.layers.tf_keras"}
_CLASSES: dict[Generation, dict[str, type]] = {generation: {} for generation in Generation}


def public(generation: Generation) -> Callable[[type], type]:
    """Class decorator: records a class as `generation`'s class of its name (`classes_of`)."""

    def record(cls: type) -> type:
        _CLASSES[generation][cls.__name__] = cls
        return cls

    return record


def classes_of(generation: Generation) -> LayerClasses:
    """The `TrainableInitialState` and `TrainableInitialStateRNN` classes of a generation.

    The tf-keras twins' module (which imports tf-keras) is imported on first use.
    """
    found = _CLASSES[generation]
    if not {"TrainableInitialState", "TrainableInitialStateRNN"} <= set(found):
        importlib.import_module(_MODULES[generation])
    return LayerClasses(found["TrainableInitialState"], found["TrainableInitialStateRNN"])


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

    def _state_config(self, initializer: Any, regularizer: Any, constraint: Any) -> dict[str, Any]:
        """The config of the options both layers take: the initializer, regularizer and constraint, each
        serialized as given (one, or a list of one per state), then the noise and the context."""

        def serialize(kind: str, value: Any) -> Any:
            module = getattr(self._keras.keras_api, kind)
            if isinstance(value, (list, tuple)):
                return [module.serialize(module.get(each)) for each in value]
            return module.serialize(module.get(value))

        return {
            "initializer": serialize("initializers", initializer),
            "regularizer": serialize("regularizers", regularizer),
            "constraint": serialize("constraints", constraint),
            "noise_stddev": self.noise_stddev,
            "context_dim": self.context_dim,
            "num_ids": self.num_ids,
        }

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

"""The graph rewrite: add or remove trainable initial states in a built model.

Data flows one way: model -> recurrent call sites -> state structure -> new
layers -> rebuilt graph -> weights copied. The walk over a functional graph is
the same for both Keras generations; only the few calls that read a graph's
nodes differ, and those are in the generation adapters.

Cloned layers are built with zeros initializers swapped in (their original
initializers are put back right after, so configs are unchanged): the
pretrained weights overwrite whatever an initializer would produce, so running
orthogonal or glorot initializers on a large model would be wasted time.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from rnn_state_rewriter._adapter import Adapter, adapter_for
from rnn_state_rewriter.generation import Generation, generation_of
from rnn_state_rewriter.layers import SequenceMask, check_noise_stddev, per_state
from rnn_state_rewriter.states import flatten_shapes, state_shapes

__all__ = [
    "add_trainable_initial_states",
    "remove_trainable_initial_states",
    "initial_states",
    "recurrent_layers",
]

LayerSelection = None | str | type | Sequence[str | type] | Callable[[Any], bool]


# ----------------------------------------------------------------------------
# Checking and inspecting a model
# ----------------------------------------------------------------------------


def _model_adapter(model: Any) -> Adapter:
    """The adapter of a rewritable model, or the error that says why it is not one."""
    supported = "Supported: a built Functional or Sequential model of `keras` (Keras 3) or `tf_keras`."
    try:
        adapter = adapter_for(model, argument="model")
    except TypeError:
        raise TypeError(
            f"Argument `model` must be a Keras model. {supported} Received: model of type {type(model).__name__}"
        ) from None
    if not isinstance(model, adapter.keras_api.Model):
        raise TypeError(
            f"Argument `model` must be a Keras model, not a layer. {supported} "
            f"Received: {type(model).__name__} '{getattr(model, 'name', '')}'. To give "
            "a single recurrent layer a trainable state, use `TrainableInitialStateRNN`."
        )
    if not (adapter.is_functional(model) or adapter.is_sequential(model)):
        raise TypeError(
            f"Model '{model.name}' is a subclassed model ({type(model).__name__}), "
            "whose `call` cannot be rewritten safely. " + supported + " Wrap its "
            "recurrent layers in `TrainableInitialStateRNN` in its code instead."
        )
    if not model.built or not _has_inputs(model):
        raise ValueError(
            f"Model '{model.name}' is not built, so its graph is unknown. Build it "
            "first: start a Sequential model with `keras.Input(shape)`, or call "
            "`model.build(input_shape)`."
        )
    return adapter


def _has_inputs(model: Any) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _is_graph_model(adapter: Adapter, layer: Any) -> bool:
    return bool(adapter.is_functional(layer) or adapter.is_sequential(layer))


def recurrent_layers(model: Any) -> list[tuple[str, Any]]:
    """Every recurrent layer of a model, nested submodels included, with its path.

    The path is the layer's name, prefixed by `submodel/` for each submodel it
    sits in. Layers are listed once each, in the order of `model.layers`.

    Example:

    ```python
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4, 2)), keras.layers.GRU(3, name="gru")])
    >>> [path for path, _ in recurrent_layers(model)]
    ['gru']

    ```
    """
    adapter = _model_adapter(model)
    return [
        (prefix + layer.name, layer)
        for prefix, layer in _layers_in_tree(adapter, model)
        if adapter.recurrent_kind(layer) is not None
    ]


def _layers_in_tree(adapter: Adapter, model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every layer of a model and of its nested submodels, once each, with its submodel prefix."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(container: Any, prefix: str) -> None:
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            found.append((prefix, layer))
            if adapter.recurrent_kind(layer) is None and isinstance(layer, adapter.keras_api.Model):
                visit(layer, f"{prefix}{layer.name}/")

    visit(model, prefix)
    return found


def _all_layer_names(model: Any) -> set[str]:
    names = {model.name}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        names.add(layer.name)
    return names


# ----------------------------------------------------------------------------
# Rebuilding a graph
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Site:
    """One call of a layer in the graph being rebuilt.

    `args`/`kwargs` hold the new graph's tensors (`MISSING` where the tensor was
    dropped); `old_args`/`old_kwargs` the original's. `runtime_mask` says whether
    a mask may reach this call only at run time (in a model that uses masks,
    where Keras 3 can hand a mask on at run time past a layer that drops it in
    the graph).
    """

    layer: Any
    new_layer: Any
    old_args: Any
    old_kwargs: Any
    args: Any
    kwargs: Any
    path: str
    runtime_mask: bool

    def call_plain(self, adapter: Adapter) -> Any:
        """Calls the new layer as the original call site did."""
        for value in adapter.flatten_tensors((self.args, self.kwargs)):
            if value is MISSING:
                raise ValueError(
                    f"Layer '{self.path}{self.layer.name}' takes a tensor that the "
                    "rewritten graph no longer has (the output of a removed "
                    "`TrainableInitialState` layer used by a non-recurrent layer)."
                )
        return self.new_layer(*self.args, **self.kwargs)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class _Rebuild:
    """Clones a model layer by layer, letting a hook decide each call site.

    `on_call(site)` returns the outputs of the call in the new graph (None for
    a dropped layer). `substitute(layer)` names the layer whose clone replaces
    `layer` (None to drop it). Every layer is cloned once, so shared layers stay
    shared; nested models are rebuilt recursively; the weights are copied once
    the whole graph is built.
    """

    def __init__(
        self,
        adapter: Adapter,
        on_call: Callable[[_Site], Any],
        substitute: Callable[[Any], Any] = lambda layer: layer,
    ) -> None:
        self.adapter = adapter
        self.on_call = on_call
        self.substitute = substitute
        self.clones: dict[int, Any] = {}
        self.pairs: list[tuple[Any, Any]] = []
        self.restore: list[tuple[Any, str, Any]] = []
        self.runtime_masks = False

    def __call__(self, model: Any) -> Any:
        self.runtime_masks = self.adapter.uses_masks(model)
        try:
            new_model = self.model(model, "", self.runtime_masks)
        finally:
            for owner, attribute, initializer in self.restore:
                setattr(owner, attribute, initializer)
        for old, new in self.pairs:
            _copy_weights(old, new)
        return new_model

    def model(self, model: Any, path: str, runtime_mask: bool) -> Any:
        adapter = self.adapter
        tensors: dict[int, Any] = {}

        def new_input(tensor: Any) -> Any:
            if id(tensor) not in tensors:
                layer = tensor._keras_history[0]
                tensors[id(tensor)] = type(layer).from_config(layer.get_config()).output
            return tensors[id(tensor)]

        def call(layer: Any, old_args: Any, old_kwargs: Any, args: Any, kwargs: Any) -> Any:
            site = _Site(layer, self.clone(layer, path), old_args, old_kwargs, args, kwargs, path, runtime_mask)
            return self.on_call(site)

        if adapter.is_sequential(model):
            inputs = outputs = new_input(model.inputs[0])
            for layer in model.layers:
                outputs = call(layer, (outputs,), {}, (outputs,), {})
        else:
            inputs = adapter.map_tensors(new_input, adapter.model_inputs(model))

            def lookup(value: Any) -> Any:
                if adapter.is_keras_tensor(value):
                    return tensors.get(id(value), MISSING)
                return value

            for layer, args, kwargs, outs in adapter.call_sites(model):
                new_args = adapter.map_tensors(lookup, args)
                new_kwargs = adapter.map_tensors(lookup, kwargs)
                result = call(layer, args, kwargs, new_args, new_kwargs)
                if result is not None:
                    for old, new in zip(outs, adapter.flatten_tensors(result), strict=True):
                        tensors[id(old)] = new
            outputs = adapter.map_tensors(lambda t: tensors[id(t)], adapter.model_outputs(model))
        return adapter.keras_api.Model(inputs=inputs, outputs=outputs, name=model.name)

    def clone(self, layer: Any, path: str) -> Any:
        if id(layer) not in self.clones:
            source = self.substitute(layer)
            if source is None:
                self.clones[id(layer)] = None
            elif _is_graph_model(self.adapter, source):
                self.clones[id(layer)] = self.model(source, f"{path}{source.name}/", self.runtime_masks)
            elif isinstance(source, self.adapter.keras_api.Model):
                raise TypeError(
                    f"Submodel '{path}{source.name}' is a subclassed model "
                    f"({type(source).__name__}), whose `call` cannot be rewritten "
                    "safely. Only Functional and Sequential submodels are supported."
                )
            else:
                self.clones[id(layer)] = self.leaf(source)
        return self.clones[id(layer)]

    def from_config(self, layer: Any) -> Any:
        """A new layer made from `layer`'s config.

        Safe mode is off: the config comes from a live object of this process,
        not from a file, so a `Lambda` layer's function is not untrusted code here.
        """
        with self.adapter.SafeModeScope(False):
            return type(layer).from_config(layer.get_config())

    def leaf(self, layer: Any) -> Any:
        api = self.adapter.keras_api
        if not isinstance(layer, api.layers.Layer):  # a Keras 3 operation without weights
            try:
                return self.from_config(layer)
            except Exception:  # an operation that cannot be rebuilt from its config is reused
                return layer
        clone = self.from_config(layer)
        self.restore.extend(_swap_initializers(clone, api))
        self.pairs.append((layer, clone))
        return clone


def _swap_initializers(layer: Any, api: ModuleType) -> list[tuple[Any, str, Any]]:
    """Replaces every initializer attribute of `layer` and its sublayers by zeros.

    Returns what to put back once the layer is built.
    """
    zeros = api.initializers.Zeros()
    swapped = []
    for owner in layer._flatten_layers(include_self=True, recursive=True):
        for attribute, value in list(vars(owner).items()):
            if isinstance(value, api.initializers.Initializer) and not isinstance(value, api.initializers.Zeros):
                setattr(owner, attribute, zeros)
                swapped.append((owner, attribute, value))
    return swapped


def _copy_weights(old: Any, new: Any) -> None:
    old_weights, new_weights = old.weights, new.weights
    shapes = [tuple(w.shape) for w in old_weights]
    if shapes != [tuple(w.shape) for w in new_weights]:
        raise RuntimeError(
            f"Layer '{old.name}' was rebuilt with weights of shapes "
            f"{[tuple(w.shape) for w in new_weights]} instead of {shapes}; its "
            "`get_config` does not describe it fully. Please report this."
        )
    for source, target in zip(old_weights, new_weights, strict=True):
        target.assign(source)


def _producer(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return history[0] if history is not None else None


# ----------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------


def _generation_or_none(cls: type) -> Generation | None:
    try:
        return generation_of(cls)
    except TypeError:
        return None


def _selector(layers: LayerSelection, found: list[tuple[str, Any]]) -> Callable[[str, Any], bool]:
    if layers is None:
        return lambda path, layer: True
    if callable(layers) and not isinstance(layers, type):
        predicate = layers
        return lambda path, layer: bool(predicate(layer))
    entries = [layers] if isinstance(layers, (str, type)) else layers
    if not isinstance(entries, Iterable) or not all(isinstance(e, (str, type)) for e in entries):
        raise TypeError(
            "Argument `layers` must be None, a list of layer names or classes, or a "
            f"predicate `layer -> bool`. Received: layers={layers!r}"
        )
    entries = list(entries)
    names = {e for e in entries if isinstance(e, str)}
    classes = tuple(e for e in entries if isinstance(e, type))
    if found:
        generation = generation_of(found[0][1])
        for cls in classes:
            other = _generation_or_none(cls)
            if other is not None and other is not generation:
                raise TypeError(
                    f"Argument `layers` holds {cls.__module__}.{cls.__name__}, a class of "
                    f"{other.package}, but the model is a {generation.package} model. "
                    f"Use the {generation.package} class."
                )
    known = {path for path, _ in found} | {layer.name for _, layer in found}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"Argument `layers` names no recurrent layer of the model: {unknown}. "
            f"Recurrent layers found: {[path for path, _ in found]}"
        )
    return lambda path, layer: path in names or layer.name in names or isinstance(layer, classes)


def add_trainable_initial_states(
    model: Any,
    *,
    layers: LayerSelection = None,
    initializer: Any = "zeros",
    regularizer: Any = None,
    constraint: Any = None,
    noise_stddev: float = 0.0,
    freeze_base: bool = False,
) -> Any:
    """Returns a copy of `model` whose recurrent layers start from trainable states.

    The model is cloned; a `TrainableInitialState` layer named
    `<rnn name>_initial_state` is inserted in front of each selected recurrent
    layer, which is then called with `initial_state=` its outputs; every
    pretrained weight is copied. The original is left untouched and shares no
    variable with the result. With the default zeros initializer the result
    predicts exactly what the original predicts.

    Recurrent layers inside nested Functional or Sequential submodels are
    rewritten too; a layer used at several call sites gets one set of states.
    Left alone: call sites that already pass `initial_state` (a decoder fed by
    its encoder, or a layer already rewritten, so applying this twice adds
    nothing), `TrainableInitialStateRNN` layers, and `stateful=True` layers
    (with a `UserWarning`). A Sequential model comes back as a Functional model
    with the same layers. If `model` was compiled, the result is compiled the
    same way, with a fresh optimizer.

    Args:
        model: a built Functional or Sequential model, `keras` or `tf_keras`.
        layers: which recurrent layers to rewrite: None for all, a list of
            names (`"lstm"`, or `"submodel/lstm"`) or classes, or a predicate
            `layer -> bool`.
        initializer: initializer of the states: one for all, or a list with one
            per state (it must match every selected layer's number of states).
        regularizer: regularizer of the states, one or a list.
        constraint: constraint of the states, one or a list.
        noise_stddev: Gaussian noise added to the states in training only.
        freeze_base: if True, every pre-existing weight becomes non-trainable,
            so only the initial states train.

    Returns:
        A new model of the same Keras generation.

    Raises:
        TypeError: if `model` is not a Keras model, or is (or contains) a
            subclassed model.
        ValueError: if the model is not built, has no recurrent layer, `layers`
            names an unknown layer, a per-state list does not match a layer, or
            `noise_stddev` is negative.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential(
    ...     [keras.Input((6, 2)), keras.layers.LSTM(4, name="lstm"), keras.layers.Dense(1)]
    ... )
    >>> new_model = rsr.add_trainable_initial_states(model)
    >>> x = np.random.rand(3, 6, 2)
    >>> bool(np.allclose(model.predict(x, verbose=0), new_model.predict(x, verbose=0)))
    True
    >>> [layer.name for layer in new_model.layers if "initial_state" in layer.name]
    ['lstm_initial_state']

    ```
    """
    adapter = _model_adapter(model)
    found = recurrent_layers(model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no recurrent layer (RNN, LSTM, GRU, SimpleRNN, "
            "ConvLSTM or Bidirectional) to give a trainable initial state."
        )
    selected = _selector(layers, found)
    if layers is not None and not any(selected(path, layer) for path, layer in found):
        raise ValueError(
            f"Argument `layers` selects none of the recurrent layers of model '{model.name}': "
            f"{[path for path, _ in found]}. Received: layers={layers!r}"
        )
    check_noise_stddev(noise_stddev, "`add_trainable_initial_states`")
    eligible: set[int] = set()
    for path, layer in found:
        if adapter.recurrent_kind(layer) == "trainable" or not selected(path, layer):
            continue
        if _is_stateful(adapter, layer):
            warnings.warn(
                f"Layer '{path}' is stateful (`stateful=True`): its state carries over "
                "between batches, so it is left without a trainable initial state.",
                UserWarning,
                stacklevel=2,
            )
            continue
        count = len(flatten_shapes(state_shapes(layer)))
        for argument, value in (
            ("initializer", initializer),
            ("regularizer", regularizer),
            ("constraint", constraint),
        ):
            per_state(value, count, argument, f"layer '{path}'")
        eligible.add(id(layer))

    taken = _all_layer_names(model)
    state_layers: dict[int, Any] = {}

    def state_layer_for(layer: Any) -> Any:
        if id(layer) not in state_layers:
            name = f"{layer.name}_initial_state"
            suffix = 0
            while name in taken:
                suffix += 1
                name = f"{layer.name}_initial_state_{suffix}"
            taken.add(name)
            state_layers[id(layer)] = adapter.TrainableInitialState.for_layer(
                layer,
                initializer=initializer,
                regularizer=regularizer,
                constraint=constraint,
                noise_stddev=noise_stddev,
                name=name,
            )
        return state_layers[id(layer)]

    def on_call(site: _Site) -> Any:
        if id(site.layer) in eligible:
            _, _, passed = adapter.split_initial_state(site.layer, site.old_args, site.old_kwargs)
            if passed is None:
                args, kwargs, _ = adapter.split_initial_state(site.new_layer, site.args, site.kwargs)
                states = state_layer_for(site.layer)(args[0])
                return adapter.call_with_initial_state(
                    site.new_layer, args, kwargs, states, runtime_mask=site.runtime_mask
                )
        return site.call_plain(adapter)

    new_model = _Rebuild(adapter, on_call)(model)
    if freeze_base:
        _freeze_all_but_states(adapter, new_model)
    adapter.compile_like(new_model, model)
    return new_model


def _is_stateful(adapter: Adapter, layer: Any) -> bool:
    if adapter.recurrent_kind(layer) == "bidirectional":
        return bool(getattr(layer.forward_layer, "stateful", False))
    return bool(getattr(layer, "stateful", False))


def _freeze_all_but_states(adapter: Adapter, model: Any) -> None:
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (adapter.keras_api.Model, adapter.TrainableInitialState)):
            continue
        layer.trainable = False


def _state_layer_feeding(adapter: Adapter, layer: Any, args: Any, kwargs: Any) -> Any:
    """The `TrainableInitialState` whose outputs are a call site's whole `initial_state`, or None."""
    _, _, passed = adapter.split_initial_state(layer, args, kwargs)
    if passed is None:
        return None
    producers = {id(_producer(t)): _producer(t) for t in adapter.flatten_tensors(passed)}
    if len(producers) != 1:
        return None
    (producer,) = producers.values()
    return producer if isinstance(producer, adapter.TrainableInitialState) else None


def remove_trainable_initial_states(model: Any) -> Any:
    """Returns a copy of `model` without trainable initial states: zero states again.

    The inverse of `add_trainable_initial_states`: `TrainableInitialState` layers
    are dropped and the recurrent layers they fed are called without
    `initial_state`; `TrainableInitialStateRNN` wrappers are replaced by the
    layer they wrap. Every other weight is copied; the original is untouched.

    Args:
        model: a built Functional or Sequential model, `keras` or `tf_keras`.

    Returns:
        A new model of the same Keras generation.

    Raises:
        TypeError: if `model` is not a Functional or Sequential Keras model.
        ValueError: if the model is not built.

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential([keras.Input((6, 2), name="x"), keras.layers.GRU(4, name="gru")])
    >>> plain = rsr.remove_trainable_initial_states(rsr.add_trainable_initial_states(model))
    >>> [layer.name for layer in plain.layers]
    ['x', 'gru']

    ```
    """
    adapter = _model_adapter(model)

    def substitute(layer: Any) -> Any:
        if isinstance(layer, (adapter.TrainableInitialState, SequenceMask)):
            return None
        if adapter.recurrent_kind(layer) == "trainable":
            return layer.layer
        return layer

    def on_call(site: _Site) -> Any:
        if site.new_layer is None:
            return None
        kind = adapter.recurrent_kind(site.layer)
        if kind in ("rnn", "bidirectional") and _state_layer_feeding(
            adapter, site.layer, site.old_args, site.old_kwargs
        ):
            args, kwargs, _ = adapter.split_initial_state(site.new_layer, site.args, site.kwargs)
            kwargs = {key: value for key, value in kwargs.items() if value is not MISSING}
            site = dataclasses.replace(site, args=args, kwargs=kwargs)
        return site.call_plain(adapter)

    new_model = _Rebuild(adapter, on_call, substitute)(model)
    adapter.compile_like(new_model, model)
    return new_model


def initial_states(model: Any) -> dict[str, list[np.ndarray]]:
    """The learned initial states of a model, by recurrent layer.

    Args:
        model: a model returned by `add_trainable_initial_states` (or any
            Functional or Sequential model with `TrainableInitialState` layers or
            `TrainableInitialStateRNN` wrappers), `keras` or `tf_keras`.

    Returns:
        A dict keyed by the recurrent layer's name (prefixed `submodel/` when
        nested), each value a list with one array per state (flattened for
        stacked cells, forward then backward for `Bidirectional`), without the
        batch axis.

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
    adapter = _model_adapter(model)
    result: dict[str, list[np.ndarray]] = {}

    def values(variables: list[Any]) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in variables]

    def add_call_sites(container: Any, prefix: str) -> None:
        for layer, args, kwargs, _ in adapter.call_sites(container):
            if adapter.recurrent_kind(layer) in ("rnn", "bidirectional"):
                state_layer = _state_layer_feeding(adapter, layer, args, kwargs)
                if state_layer is not None:
                    result.setdefault(prefix + layer.name, values(state_layer.state_variables))

    if adapter.is_functional(model):
        add_call_sites(model, "")
    for prefix, layer in _layers_in_tree(adapter, model):
        if adapter.recurrent_kind(layer) == "trainable":
            result[prefix + layer.name] = values(layer.state_variables)
        elif adapter.is_functional(layer):
            add_call_sites(layer, f"{prefix}{layer.name}/")
    return result

"""Keras 3, on any backend: what differs from tf-keras (what both do alike is in `backend/both.py`).

One of the two implementations of `rnn_state_rewriter.backend.Adapter` (the
other is `backend/tf_keras.py`): the tensor operations the layers use
(`keras.ops`, `keras.random`, `keras.tree`, which run on TensorFlow, JAX and
PyTorch), how a model's graph is read and rebuilt, how weights and state are
copied and saved. Every read of a private Keras attribute lives here or in
`backend/both.py`. It imports nothing of the package above the seam
(`generation`, `activations`).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras.src.models.functional import Functional
from keras.src.saving.serialization_lib import SafeModeScope as SafeModeScope  # the Adapter's

import rnn_state_rewriter.activations  # noqa: F401  (registers Keras 2's hard_sigmoid for Keras 3 files)
from rnn_state_rewriter.backend import both
from rnn_state_rewriter.backend.both import fresh_input as fresh_input, layer_of as layer_of  # the Adapter's
from rnn_state_rewriter.backend.keras3_ops import (  # the tensor operations of the layers, the Adapter's
    batch_of as batch_of,
    batch_size as batch_size,
    broadcast_to_batch as broadcast_to_batch,
    flag as flag,
    lookup as lookup,
    mask_of as mask_of,
    noise_source as noise_source,
    normal as normal,
    prepare_stateful as prepare_stateful,
    project as project,
    read as read,
    to_tensor as to_tensor,
    zero_state as zero_state,
)
from rnn_state_rewriter.generation import Generation, recurrent_kind_in

keras_api = keras
GENERATION = Generation.KERAS3
map_tensors: Callable[..., Any] = keras.tree.map_structure
flatten_tensors: Callable[[Any], list[Any]] = keras.tree.flatten

# Keras 3 looks saved classes up by their registered names only.
BARE_CLASS_NAMES = False

# The file extensions `model.save` writes whole models to.
SAVE_EXTENSIONS = (".keras",)


def backend() -> str:
    """The backend models of this generation run on: `tensorflow`, `jax` or `torch`."""
    return keras.backend.backend()


# The graph of Functional and Sequential models.


def recurrent_kind(layer: Any) -> str | None:
    """`"trainable"`, `"bidirectional"`, `"rnn"`, or None for other layers (`states.recurrent_kind`)."""
    return recurrent_kind_in(keras.layers, layer)


def is_keras_tensor(value: Any) -> bool:
    return isinstance(value, keras.KerasTensor)


def is_functional(model: Any) -> bool:
    return isinstance(model, Functional) and not is_sequential(model)


def is_sequential(model: Any) -> bool:
    return isinstance(model, keras.Sequential)


def _graph(model: Any) -> Any:
    """The functional graph of a model: a Sequential model keeps one of its own."""
    return model._functional if is_sequential(model) else model


def call_sites(model: Any) -> Iterator[tuple[Any, tuple[Any, ...], dict[str, Any], list[Any]]]:
    """`(layer, args, kwargs, flat outputs)` of each call in the graph, inputs first."""
    graph = _graph(model)
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            yield node.operation, node.arguments.args, node.arguments.kwargs, list(node.outputs)


def model_inputs(model: Any) -> Any:
    return _graph(model)._inputs_struct


def model_outputs(model: Any) -> Any:
    return _graph(model)._outputs_struct


def sublayers(layer: Any) -> list[Any]:
    """Every layer inside `layer`, at any depth, once each (not `layer` itself); none in an operation."""
    if not isinstance(layer, keras.layers.Layer):
        return []
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _bind(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The first argument of a call, and every other argument by keyword."""
    arguments = dict(inspect.signature(layer.call).bind(*args, **kwargs).arguments)
    first = next(iter(arguments))
    return arguments.pop(first), arguments


def split_initial_state(
    layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """Separates the `initial_state` a call site passes (None if none) from its other arguments."""
    sequences, others = _bind(layer, args, kwargs)
    state = others.pop("initial_state", None)
    return (sequences,), others, state


def call_with_initial_state(
    layer: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    states: Any,
    *,
    runtime_mask: Callable[[Any], Any] | None = None,
) -> Any:
    """Calls a recurrent layer with `initial_state=states` (None: without), keeping its input's mask.

    Keras 3 fills `mask` from the input only when a layer gets one tensor
    argument; with `initial_state` it gets several, so the mask is passed here:
    the input's symbolic mask, or, where a mask may arrive only at run time,
    `runtime_mask(sequences)` (a `SequenceMask` layer's output, made above the seam).
    """
    sequences, others = _bind(layer, args, kwargs)
    if states is not None:
        others["initial_state"] = states
    if others.get("mask") is None:
        mask = mask_of(sequences)
        if mask is None and runtime_mask:
            mask = runtime_mask(sequences)
        if mask is not None:
            others["mask"] = mask
    return layer(sequences, **others)


# Keras 3 hands masks on at run time where the graph shows none: past a
# submodel that drops a mask in the graph, and into a submodel's inputs. Where a
# mask may arrive is worked out from the graph (`plan.py`); a recurrent layer
# called with `initial_state=` must then be given it explicitly.
RUNTIME_MASKS = True


def compile_arguments(model: Any) -> dict[str, Any] | None:
    """The live arguments `model.compile` was called with, or None if it was not compiled."""
    if not getattr(model, "compiled", False) or not hasattr(model, "_compile_config"):
        return None
    return dict(model._compile_config.config)


def copy_into(target: Any, source: Any) -> None:
    """Assigns `source`'s value to `target` so that the two never share a buffer.

    On JAX, `assign` keeps the array it is given, so that gets a copy; the target's own buffer (the
    zeros the clone was built with) is let go first, so the copy takes its place instead of living
    beside it. TensorFlow's and PyTorch's `assign` copy into the target's own buffer, so they get the
    value itself: a copy there would only add a transient buffer the size of the largest weight.
    """
    if keras.backend.backend() != "jax":
        target.assign(source.value)
        return
    target._value = None  # the only reference to the clone's buffer: JAX frees it here
    target.assign(keras.ops.copy(source.value))


def detached(value: Any) -> Any:
    """A saved value as `load_own_variables` may assign it: a copy on JAX, where `assign` keeps its argument."""
    if isinstance(value, keras.Variable):
        value = value.value
    return keras.ops.copy(value) if keras.backend.backend() == "jax" else value


def variables(layer: Any) -> list[Any]:
    return list(layer.weights)


def own_variables(layer: Any) -> list[Any]:
    return list(layer._trainable_variables + layer._non_trainable_variables)


def live_arguments(layer: Any) -> dict[str, Any]:
    """The constructor arguments a layer holds as live objects that its config turns into code (`both`)."""
    return both.live_arguments(keras_api, layer)


def copy_vocabulary(source: Any, target: Any) -> bool:
    """Sets a lookup layer's vocabulary in `target` as its `load_assets` would, from `source` in memory.

    Keras saves a vocabulary as a text file of one term per line, which cannot
    hold a term with a newline (nor, read back, an empty one); in memory any
    term survives. A `TextVectorization` delegates its assets to its lookup
    layer, a sublayer copied on its own. Returns False for a layer that keeps
    no vocabulary asset (its assets are copied through files).
    """
    if isinstance(source, keras_api.layers.TextVectorization):
        return True  # its `_lookup_layer` sublayer is copied on its own
    try:
        from keras.src.layers.preprocessing.index_lookup import IndexLookup
    except ImportError:  # a Keras without lookup layers
        return False
    if not isinstance(source, IndexLookup):
        return False
    if source.input_vocabulary is not None:  # the vocabulary is in the config
        return True
    values = source.get_vocabulary(include_special_tokens=True)
    if target.output_mode == "tf_idf":
        target.set_vocabulary(values, idf_weights=target.idf_weights_const.numpy())
    else:
        target.set_vocabulary(values)
    return True


def finish_loading(layer: Any) -> None:
    """Nothing: Keras 3 layers finalize their state in `load_own_variables` (e.g. `Normalization`)."""


def predict(model: Any, inputs: Any) -> Any:
    """The model's outputs in inference: compiled on JAX, called eagerly elsewhere.

    JAX runs a recurrent layer eagerly by compiling its loop on every call,
    so one compiled call of the whole model is several times faster there.
    TensorFlow traces a Keras 3 loop about as slowly as it runs it eagerly, and
    PyTorch runs it fast eagerly.
    """
    if keras.backend.backend() != "jax":
        return model(inputs, training=False)
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    run = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
    try:
        return run(trainable, non_trainable, inputs)
    except Exception:  # noqa: BLE001 (strings, lookup tables or Python reading values cannot be traced)
        return model(inputs, training=False)


def model_from_legacy_config(config: dict[str, Any], custom_objects: dict[str, Any], safe_mode: bool = True) -> Any:
    """A model from a Keras 2 model config, as Keras 3's own reader of `.h5` files builds it."""
    from keras.src.legacy.saving import saving_options, saving_utils

    legacy = saving_options.keras_option_scope(use_legacy_config=True)
    with legacy, SafeModeScope(safe_mode), keras.saving.custom_object_scope(custom_objects):
        return saving_utils.model_from_config(config, custom_objects=custom_objects)


def carried_states(model: Any) -> list[Any]:
    """The state variables of every stateful recurrent layer (Keras 3 creates them when the layer is built),
    and the reset flags of the wrappers around them."""
    found = []
    for layer in sublayers(model):
        if getattr(layer, "stateful", False) and isinstance(getattr(layer, "states", None), (list, tuple)):
            found += [s for s in keras.tree.flatten(layer.states) if isinstance(s, keras.Variable)]
        if isinstance(getattr(layer, "starts_fresh", None), keras.Variable):  # a wrapper's reset flag
            found.append(layer.starts_fresh)
    return found


def replace_sublayer(owner: Any, container: Any, key: Any, old: Any, new: Any) -> None:
    """Keras 3 tracks sublayers in the owner's tracker: `new` takes `old`'s place there, then in the attribute."""
    tracker = getattr(owner, "_tracker", None)
    if tracker is not None and tracker.is_in_store("layers", old) and not tracker.is_in_store("layers", new):
        tracker.replace_tracked_value("layers", old, new)
    if container is None:
        setattr(owner, key, new)
    elif isinstance(container, list):
        list.__setitem__(container, key, new)
    elif isinstance(container, dict):
        dict.__setitem__(container, key, new)
    else:
        raise TypeError(
            f"Layer '{old.name}' is held in a {type(container).__name__} of '{owner.name}', which cannot be "
            "changed: hold it in an attribute, a list or a dict."
        )


def build_like(copy: Any, model: Any) -> None:
    """Builds `copy` from `model`'s build config, as loading would; quietly leaves it unbuilt where Keras
    cannot (a `call` of several arguments: `layer_copy.build_sublayers_like` builds its layers then)."""
    config = model.get_build_config()
    if config:
        with warnings.catch_warnings(), scope_of(model), keras.name_scope(copy.name, caller=copy):
            warnings.filterwarnings("ignore", message=".*cannot be built automatically")
            copy.build_from_config(config)  # in the model's name scope, as its first call built it


def build_in_place_of(wrapper: Any, layer: Any) -> None:
    """Builds a wrapper put where `layer` was, so that its new variables sit beside the layer's in variable
    paths (`time_distributed/gru/initial_state_0` beside `time_distributed/gru/gru_cell/kernel`)."""
    with scope_of(layer):
        wrapper.build(None)


@contextlib.contextmanager
def scope_of(layer: Any) -> Iterator[None]:
    """The name scopes `layer` was built in: a layer built inside them has variables at the same paths
    (`sequential/lstm/lstm_cell/kernel` for the LSTM of a Sequential model)."""
    parents = (getattr(layer, "path", None) or "").split("/")[:-1]
    with contextlib.ExitStack() as scopes:
        for name in parents:
            scopes.enter_context(keras.name_scope(name))
        yield


def rename(layer: Any, name: str) -> None:
    """Gives an unbuilt layer another name (its variables, made when it is built, take it in their paths)."""
    layer.name = name


def attributes(owner: Any) -> dict[str, Any]:
    """On PyTorch a layer is a `torch.nn.Module`, which keeps its sublayers in `_modules`, not `__dict__`."""
    modules = vars(owner).get("_modules")
    return {**vars(owner), **modules} if isinstance(modules, dict) else dict(vars(owner))


def registered_names() -> dict[type, str]:
    """Keras' map from registered classes to the names saving writes for them (it is written to as well)."""
    from keras.src.saving.object_registration import GLOBAL_CUSTOM_NAMES

    return GLOBAL_CUSTOM_NAMES

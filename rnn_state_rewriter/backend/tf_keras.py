"""tf-keras (Keras 2), on TensorFlow: what differs from Keras 3 (what both do alike is in `backend/both.py`).

One of the two implementations of `rnn_state_rewriter.backend.Adapter` (the
other is `backend/keras3.py`): the tensor operations the layers use
(TensorFlow's), how a model's graph is read and rebuilt, how weights and state
are copied and saved. Every read of a private tf-keras attribute lives here or
in `backend/both.py`. It
imports nothing of the package above the seam (`generation` only); the tf-keras
twins of the public layers are in `layers/tf_keras.py`.

Imported only when a tf-keras object is seen (or `tf_keras` was imported
already), so that nothing else imports `tf_keras` or TensorFlow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
import tf_keras
from tf_keras.src.saving.serialization_lib import SafeModeScope as SafeModeScope  # the Adapter's

from rnn_state_rewriter.backend import both
from rnn_state_rewriter.backend.both import fresh_input as fresh_input, layer_of as layer_of  # the Adapter's
from rnn_state_rewriter.backend.tf_keras_ops import (  # the tensor operations of the layers, the Adapter's
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

keras_api = tf_keras
GENERATION = Generation.TF_KERAS
map_tensors: Callable[..., Any] = tf.nest.map_structure
flatten_tensors: Callable[[Any], list[Any]] = tf.nest.flatten

# tf-keras' wrappers (`TimeDistributed`) read the layer they wrap in the legacy format, which looks a class
# up by its bare class name, not by the registered name its config records.
BARE_CLASS_NAMES = True

# The file extensions `model.save` writes whole models to; "" is a SavedModel folder.
SAVE_EXTENSIONS = (".keras", ".h5", "")


def backend() -> str:
    """The backend models of this generation run on: always TensorFlow."""
    return "tensorflow"


# The graph of Functional and Sequential models.


def recurrent_kind(layer: Any) -> str | None:
    """`"trainable"`, `"bidirectional"`, `"rnn"`, or None for other layers (`states.recurrent_kind`)."""
    return recurrent_kind_in(tf_keras.layers, layer)


def is_keras_tensor(value: Any) -> bool:
    return (
        bool(tf_keras.backend.is_keras_tensor(value))
        if tf.is_tensor(value) or hasattr(value, "_keras_history")
        else False
    )


def is_functional(model: Any) -> bool:
    return bool(getattr(model, "_is_graph_network", False)) and not is_sequential(model)


def is_sequential(model: Any) -> bool:
    return isinstance(model, tf_keras.Sequential)


def call_sites(model: Any) -> Iterator[tuple[Any, tuple[Any, ...], dict[str, Any], list[Any]]]:
    """`(layer, args, kwargs, flat outputs)` of each call in the graph, inputs first."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            yield (
                node.layer,
                tuple(node.call_args),
                dict(node.call_kwargs),
                tf.nest.flatten(node.outputs),
            )


def model_inputs(model: Any) -> Any:
    return model._nested_inputs


def model_outputs(model: Any) -> Any:
    return model._nested_outputs


def split_initial_state(
    layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """Separates the `initial_state` a call site passes (None if none) from its other arguments.

    tf-keras records the states and constants passed at a call site as extra
    entries of a *list* first argument, as `rnn_utils.standardize_args` reads
    them: `lstm(x, initial_state=[h, c])` is stored as `([x, h, c],)`, with the
    layer's `_num_constants` constants last. A tuple is the nested input of a
    cell that takes several tensors (`rnn((x1, x2))`), never states.
    """
    kwargs = dict(kwargs)
    state = kwargs.pop("initial_state", None)
    if len(args) > 1 and state is None:
        state, args = args[1], args[:1] + args[2:]
    first = args[0] if args else None
    if state is None and isinstance(first, list) and len(first) > 1:
        entries = list(first)
        constants = int(getattr(layer, "_num_constants", 0) or 0)
        if constants and kwargs.get("constants") is None:
            kwargs["constants"], entries = entries[-constants:], entries[:-constants]
        state = entries[1:] or None
        args = (entries[0],) + tuple(args[1:])
    return tuple(args), kwargs, state


def call_with_initial_state(
    layer: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    states: Any,
    *,
    runtime_mask: Callable[[Any], Any] | None = None,
) -> Any:
    """Calls a recurrent layer with `initial_state=states` (None: without).

    tf-keras takes the mask from the input itself, at build and at run time.
    """
    return layer(*args, **kwargs) if states is None else layer(*args, **{**kwargs, "initial_state": states})


# tf-keras takes a recurrent layer's mask from its input, at build and at run
# time, with or without `initial_state`: it needs no help.
RUNTIME_MASKS = False


def compile_arguments(model: Any) -> dict[str, Any] | None:
    """The live arguments `model.compile` was called with, or None if it was not compiled."""
    if not getattr(model, "_is_compiled", False) or not hasattr(model, "_compile_config"):
        return None
    return dict(model._compile_config.config)


def sublayers(layer: Any) -> list[Any]:
    """Every layer inside `layer`, at any depth, once each (not `layer` itself)."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def copy_into(target: Any, source: Any) -> None:
    """Assigns `source`'s value to `target`: a TensorFlow `assign` copies into the target's buffer."""
    target.assign(source)


def detached(value: Any) -> Any:
    """A saved value as `load_own_variables` may assign it (tf-keras saves NumPy copies)."""
    return value


def variables(layer: Any) -> list[Any]:
    """`layer.weights` without the weight handlers of lookup tables (a vocabulary is an asset)."""
    return [w for w in layer.weights if isinstance(w, tf.Variable)]


def own_variables(layer: Any) -> list[Any]:
    return [w for w in layer._trainable_weights + layer._non_trainable_weights if isinstance(w, tf.Variable)]


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
        from tf_keras.src.layers.preprocessing.index_lookup import IndexLookup
    except ImportError:  # a Keras without lookup layers
        return False
    if not isinstance(source, IndexLookup):
        return False
    if source.input_vocabulary:  # the vocabulary is in the config
        return True
    values = source.get_vocabulary(include_special_tokens=True)
    if target.output_mode == "tf_idf":
        target.set_vocabulary(values, idf_weights=False)
    else:
        target.set_vocabulary(values)
    return True


def finish_loading(layer: Any) -> None:
    """`finalize_state()`, which tf-keras' loaders call on every layer once its weights are set.

    An adapted `Discretization` computes its bin boundaries there, and an adapted
    `Normalization` its broadcast mean and variance.
    """
    layer.finalize_state()


def predict(model: Any, inputs: Any) -> Any:
    """The model's outputs in inference (tf-keras runs its recurrent loops as compiled functions already)."""
    return model(inputs, training=False)


def carried_states(model: Any) -> list[Any]:
    """The state variables of every stateful recurrent layer, created (at zero) where not yet, and the reset
    flags of the wrappers around them."""
    found = []
    for layer in sublayers(model):
        if not getattr(layer, "stateful", False) or not hasattr(layer, "reset_states"):
            continue
        if any(s is None for s in tf.nest.flatten(getattr(layer, "states", None) or [None])):
            layer.reset_states()  # zeros, as a stateful layer starts: no change in what it computes
        found += [s for s in tf.nest.flatten(layer.states) if isinstance(s, tf.Variable)]
    for layer in sublayers(model):
        if isinstance(getattr(layer, "starts_fresh", None), tf.Variable):  # a wrapper's reset flag
            found.append(layer.starts_fresh)
    return found


def replace_sublayer(owner: Any, container: Any, key: Any, old: Any, new: Any) -> None:
    """tf-keras tracks sublayers by attribute: the old one is deleted (untracked), the new one set in its place.

    The new layer takes the old one's position among the owner's tracked layers,
    so that the layers keep their order (which pairs a model with its copy).
    """
    if container is None:
        tracked = owner._self_tracked_trackables
        index = next((i for i, t in enumerate(tracked) if t is old), None)
        delattr(owner, key)
        setattr(owner, key, new)
        if index is not None:
            tracked = owner._self_tracked_trackables
            position = next(i for i, t in enumerate(tracked) if t is new)
            tracked.insert(index, tracked.pop(position))
    elif isinstance(container, tuple):
        raise TypeError(
            f"Layer '{old.name}' is held in a tuple of '{owner.name}', which cannot be changed: hold it "
            "in an attribute, a list or a dict."
        )
    else:
        container[key] = new


def build_like(copy: Any, model: Any) -> None:
    """Builds `copy` from `model`'s build config where tf-keras can: not on several inputs, nor arguments.

    tf-keras' `build_from_config` makes one placeholder per shape and fails on a
    nested structure of shapes (a model called on `(context, target)`): such a
    copy is built by its first call on a probe batch instead.
    """
    config = model.get_build_config()
    shape = (config or {}).get("input_shape")
    if shape is None or (shape and isinstance(shape[0], (list, tuple, dict))):
        return
    try:
        copy.build_from_config(config)
    except ValueError:  # a `call` of several arguments: `layer_copy.build_sublayers_like` builds its layers
        return


def build_in_place_of(wrapper: Any, layer: Any) -> None:
    """Builds a wrapper put where `layer` was, its new variables named under the layer's name
    (`gru_2/initial_state_0:0`), so that two wrappers in one layer save apart in an `.h5` file."""
    with tf.name_scope(wrapper.name):
        wrapper.build(None)


def scope_of(layer: Any) -> Any:
    """Nothing to enter: tf-keras names variables by their layer alone."""
    return contextlib.nullcontext()


def rename(layer: Any, name: str) -> None:
    """Gives an unbuilt layer another name (its variables, made when it is built, take it in their paths)."""
    layer._name = name


def attributes(owner: Any) -> dict[str, Any]:
    return dict(vars(owner))


def registered_names() -> dict[type, str]:
    """tf-keras' map from registered classes to the names saving writes for them (it is written to as well)."""
    from tf_keras.src.saving.object_registration import _GLOBAL_CUSTOM_NAMES

    return _GLOBAL_CUSTOM_NAMES

"""Cloning one layer from the live object, as Keras' own saving rebuilds it.

The retrofit works from the objects it is given and never needs the Keras
registry to find a class or function that the model already holds:

- A layer is rebuilt as Keras' own saving rebuilds it: its config serialized
  (`serialize_keras_object`, which turns live objects a `get_config()` returns,
  a wiring or a schedule, into what its `from_config` expects; nested layers
  left to be built by their owner, so that every variable keeps its path), then
  `type(layer).from_config(...)` with every custom class and function it holds
  (its sublayers, cells, initializers, activations) in a custom-object scope,
  so an unregistered custom cell inside `RNN(cell)` is found. Where that fails
  and the raw `get_config()` rebuilds it (an older `from_config` that expects
  live objects), the raw config is used. A `Lambda` is rebuilt around the same
  live function, mask and arguments, so its copy computes what it computes.
- A layer that cannot be rebuilt and owns no variables is reused by the copy as
  it is (it has nothing to copy or to share); one that owns variables is
  refused before anything is built, with an error that names it, its class,
  what failed, and the fix.

Its whole state is copied after, by `state_copy.py`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.generation import KERAS_PACKAGES

__all__ = [
    "unvouched",
    "custom_objects",
    "from_config_of",
    "is_custom",
    "build_sublayers_like",
    "clone_layer",
    "describe",
    "describe_error",
    "name_sublayers_like",
]

_FRAMEWORKS = {*KERAS_PACKAGES, "tensorflow", "builtins", "numpy", "jax", "torch"}


def describe(obj: Any) -> str:
    """`module.Class` of an object, as error messages name it."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_error(error: BaseException) -> str:
    """`Type: the first line that says something`, as error messages quote another error in one line.

    Keras wraps an error raised in a layer's `call` in lines of its own
    (`Exception encountered when calling ...`, terminal colour codes): the
    user's own message is the line quoted.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered when calling")]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def is_custom(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".", 1)[0] not in _FRAMEWORKS


def unvouched(layer: Any) -> str | None:
    """Why rebuilding `layer` from its config and copying its saved state may not give the same layer.

    Keras' own layers (`keras.layers`, `tf_keras.layers`) are rebuilt exactly
    from their configs, and their saving methods carry their whole state, as
    Keras' own file format relies on; and so are this package's layers. Not
    vouched for: custom classes and wrappers of user code (`JaxLayer`,
    `TorchModuleWrapper`), whose behaviour their config may not describe, and
    preprocessing layers, whose state (statistics, vocabularies) is more than
    their variables. A `Lambda` is vouched for: its copy holds the same live
    function, mask and arguments (`clone_layer`).
    """
    cls = type(layer)
    module = cls.__module__
    if module.split(".")[0] == "rnn_state_rewriter":
        return None
    keras_layer = ".layers." in module or module.endswith(".input_layer")
    if module.split(".")[0] not in KERAS_PACKAGES or not keras_layer:
        return f"its class {cls.__name__} runs code the rewrite cannot read"
    if ".preprocessing." in module:
        return "its state is more than its variables"
    return None


def custom_objects(adapter: Adapter, objects: Iterable[Any]) -> dict[str, Any]:
    """Every custom class, and every function, held by `objects` and their attributes, by the names configs use.

    Functions of any module are included: Keras serializes a function it does
    not know (`tf.nn.softmax`) by its name (`softmax_v2`), which only the live
    object can resolve again.
    """
    found: dict[str, Any] = {}

    def add(value: Any) -> None:
        if inspect.isfunction(value):  # any live function, a framework's too (`tf.nn.softmax` is `softmax_v2`)
            found.setdefault(value.__name__, value)
            found.setdefault(adapter.keras_api.saving.get_registered_name(value), value)
        elif isinstance(value, type):
            if is_custom(value):
                found.setdefault(value.__name__, value)
                found.setdefault(adapter.keras_api.saving.get_registered_name(value), value)
        elif is_custom(type(value)):
            add(type(value))

    for owner in objects:
        add(type(owner))
        for value in vars(owner).values():
            for item in value if isinstance(value, (list, tuple)) else (value,):
                add(item)
    return found


def from_config_of(adapter: Adapter, obj: Any, owners: Iterable[Any]) -> Any:
    """A new object like `obj`, rebuilt as Keras' saving rebuilds it, with the custom objects of `owners` in scope.

    Saving's route first: the config serialized, then `type(obj).from_config`.
    Where that fails and the raw `get_config()` differs from it, the raw config
    is tried too (a `from_config` written to take live objects); if both fail,
    the error of saving's route is raised. Safe mode is off: the config comes
    from a live object of this process, not from a file, so a `Lambda` layer's
    function is not untrusted code here.
    """
    saving = adapter.keras_api.saving
    with adapter.SafeModeScope(False), saving.custom_object_scope(custom_objects(adapter, owners)):
        live = adapter.live_arguments(obj)
        raw = obj.get_config()
        if live:
            return type(obj)(**{**raw, **live})
        serialized = _unbuilt(saving.serialize_keras_object(raw))
        try:
            return type(obj).from_config(serialized)
        except Exception:  # whatever a user's constructor raises
            if serialized == raw:
                raise
            try:
                return type(obj).from_config(raw)
            except Exception:  # noqa: BLE001 (the first error is the one to report)
                pass
            raise


def _unbuilt(config: Any) -> Any:
    """A serialized config without the build configs of the objects nested in it.

    Deserializing a nested layer with its build config builds it on the spot,
    outside the layer that holds it, so its variables would lose their place
    in the paths (`time_distributed/gru/gru_cell/kernel` would become
    `gru/gru_cell/kernel`). Unbuilt, each is built by its owner, as in the original.
    """
    if isinstance(config, dict):
        nested = "class_name" in config and "config" in config
        return {key: _unbuilt(value) for key, value in config.items() if not (nested and key == "build_config")}
    if isinstance(config, list):
        return [_unbuilt(value) for value in config]
    return config


def clone_layer(adapter: Adapter, layer: Any, path: str) -> Any:
    """A new, unbuilt layer like `layer`, or `layer` itself if it owns no variables and cannot be rebuilt.

    Raises:
        TypeError: if `layer` owns variables and cannot be rebuilt from its config.
    """
    try:
        return from_config_of(adapter, layer, [layer, *adapter.sublayers(layer)])
    except Exception as error:  # whatever a user's constructor or get_config raises
        if not getattr(layer, "weights", None):
            return layer  # nothing to copy and nothing to share: the copy may use it as it is
        name = type(layer).__name__
        subclassed = " (a subclassed model)" if isinstance(layer, adapter.keras_api.Model) else ""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        inner = [f"{path}{layer.name}/{sub.name}" for sub in adapter.sublayers(layer) if adapter.recurrent_kind(sub)]
        hint = (
            f" Its recurrent layers {inner} cannot get learned states until it can be copied (or wrap them "
            f"in `TrainableInitialStateRNN` in {name}'s code)."
            if inner
            else ""
        )
        raise TypeError(
            f"Layer '{path}{layer.name}' of class {describe(layer)}{subclassed} owns variables and cannot "
            f"be cloned: rebuilding it as Keras' saving does, `{name}.from_config(serialize_keras_object"
            f"(layer)['config'])`, raised {type(error).__name__}: {reason}. Make `{name}.from_config` accept "
            f"what `{name}.get_config()` returns once serialized (so that `model.save` and `load_model` work "
            "too), and let its constructor accept the base layer keyword arguments (`name`, `trainable`, "
            "`dtype`) through `**kwargs`." + hint
        ) from error


def name_sublayers_like(adapter: Adapter, copy: Any, original: Any, skip: Callable[[Any], bool] | None = None) -> None:
    """Gives the unbuilt sublayers of a copy made from config the names of their twins in `original`.

    A subclassed model's config does not hold its sublayers: its constructor
    makes them anew, and Keras names them anew (`gru_1` for `gru`). Named as
    the original's before they are built, they keep its names, its variable
    paths and its keys. Nothing is done where the two hold different layers.
    """
    olds = [sub for sub in adapter.sublayers(original) if skip is None or not skip(sub)]
    news = adapter.sublayers(copy)
    if len(olds) != len(news) or any(type(a) is not type(b) for a, b in zip(olds, news, strict=True)):
        return
    for old, new in zip(olds, news, strict=True):
        if not new.built and new.name != old.name:
            adapter.rename(new, old.name)


def build_sublayers_like(adapter: Adapter, copy: Any, original: Any, skip: Callable[[Any], bool] | None = None) -> None:
    """Builds each unbuilt sublayer of `copy` from the build config of its twin in `original`.

    Where a subclassed model cannot be built from its own build config (its
    `call` takes several arguments, of which Keras records the first), its
    layers can: each records the shapes it was built on. Nested models are
    left to their layers; a sublayer that cannot be built so is left to the
    first call. Nothing is done where the two hold different layers.
    """
    olds = [sub for sub in adapter.sublayers(original) if skip is None or not skip(sub)]
    news = adapter.sublayers(copy)
    if len(olds) != len(news) or any(type(a) is not type(b) for a, b in zip(olds, news, strict=True)):
        return
    for old, new in zip(olds, news, strict=True):
        config = old.get_build_config() if old.built and not isinstance(old, adapter.keras_api.Model) else None
        if new.built or not config:
            continue
        try:
            new.build_from_config(config)
        except Exception:  # noqa: BLE001 (a layer whose build needs more than its shapes: the first call builds it)
            continue

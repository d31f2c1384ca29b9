"""Cloning one layer from the live object, and copying its whole state.

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
- A layer's whole state is copied, as Keras' own `.keras` saving keeps it:
  variables pairwise with `assign` where the layer saves just its variables;
  otherwise through its own `save_own_variables`/`load_own_variables` (an
  adapted `Normalization` finalizes its statistics there). A lookup layer's
  vocabulary is copied in memory, as its `load_assets` would set it, so any
  term survives (a newline, the empty string, which a vocabulary file of one
  term per line cannot hold); other assets go through `save_assets`/
  `load_assets`. Then the copy's state is compared with the original's
  (vocabularies and variables of such layers: cheap, small layers). A copy
  owns its buffers on every backend (JAX shares a buffer on a plain `assign`).
- The copy of a compiled model is compiled from the live compile arguments:
  the same loss objects and functions, fresh metric objects and a fresh
  optimizer of the same class and config.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.generation import KERAS_PACKAGES

__all__ = [
    "build_sublayers_like",
    "clone_layer",
    "compile_like",
    "copy_weights",
    "describe",
    "describe_error",
    "name_sublayers_like",
    "needs_a_first_call",
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


def _is_custom(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".", 1)[0] not in _FRAMEWORKS


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
            if _is_custom(value):
                found.setdefault(value.__name__, value)
                found.setdefault(adapter.keras_api.saving.get_registered_name(value), value)
        elif _is_custom(type(value)):
            add(type(value))

    for owner in objects:
        add(type(owner))
        for value in vars(owner).values():
            for item in value if isinstance(value, (list, tuple)) else (value,):
                add(item)
    return found


def _from_config(adapter: Adapter, obj: Any, owners: Iterable[Any]) -> Any:
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
        return _from_config(adapter, layer, [layer, *adapter.sublayers(layer)])
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


def needs_a_first_call(adapter: Adapter, old: Any, new: Any) -> bool:
    """Whether `new` may create weights only when first called: it lacks some of `old`'s, or runs custom code."""
    if len(adapter.variables(new)) < len(adapter.variables(old)):
        return True
    return not adapter.variables(old) and any(_is_custom(type(sub)) for sub in [old, *adapter.sublayers(old)])


def _shapes(variables: list[Any]) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in variables]


def _relative_key(layer: Any, variable: Any) -> str:
    """A variable's path inside its layer, without the numeric suffixes Keras adds to unique names."""
    path = str(getattr(variable, "path", None) or variable.name).split(":")[0]
    parts = path.split("/")
    if layer.name in parts:
        parts = parts[len(parts) - parts[::-1].index(layer.name) :]
    return "/".join(re.sub(r"_\d+$", "", part) for part in parts)


def _matched(adapter: Adapter, old: Any, new: Any) -> list[tuple[Any, Any]]:
    """Pairs of (source, target) variables: by position if the shapes agree, else by path in the layer."""
    olds, news = adapter.variables(old), adapter.variables(new)
    if _shapes(olds) == _shapes(news):
        return list(zip(olds, news, strict=True))
    if not olds and news:
        raise ValueError(
            f"Layer '{old.name}' ({describe(old)}) creates its weights when it is first called, and the "
            "model given has not been called yet, so it has no weights to copy. Call the model once "
            "(e.g. `model.predict` on one batch) before retrofitting it."
        )
    targets = {_relative_key(new, v): v for v in news}
    sources = {_relative_key(old, v): v for v in olds}
    if len(targets) == len(news) and targets.keys() == sources.keys():
        pairs = [(sources[key], targets[key]) for key in sources]
        if all(tuple(a.shape) == tuple(b.shape) for a, b in pairs):
            return pairs
    raise RuntimeError(
        f"Layer '{old.name}' ({describe(old)}) was rebuilt with weights of shapes {_shapes(news)} "
        f"instead of {_shapes(olds)}: its `get_config()` does not describe it fully, or it creates "
        "different weights when called again. Make `get_config()` return every constructor argument."
    )


class _Store(dict):  # type: ignore[type-arg]
    """The in-memory store a layer's `save_own_variables` writes and its copy's `load_own_variables` reads.

    A value is copied (`adapter.detached`) only when it is read, just before the copy assigns it, so
    that the two models never share a buffer and no second copy of a layer's weights is held at once.
    """

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self.adapter = adapter

    def __getitem__(self, key: str) -> Any:
        return self.adapter.detached(super().__getitem__(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def _twins(adapter: Adapter, old: Any, new: Any, skip: Callable[[Any], bool] | None) -> list[tuple[Any, Any]] | None:
    """`old` and `new` with their sublayers, paired; None if the copy's structure differs from the original's.

    Sublayers for which `skip` is true are left out on both sides (the wrappers
    that a copy without trainable initial states drops).
    """
    olds = [old, *(sub for sub in adapter.sublayers(old) if skip is None or not skip(sub))]
    news = [new, *(sub for sub in adapter.sublayers(new) if skip is None or not skip(sub))]
    if len(olds) != len(news) or any(type(a) is not type(b) for a, b in zip(olds, news, strict=True)):
        return None
    twins = list(zip(olds, news, strict=True))
    if any(_shapes(adapter.own_variables(a)) != _shapes(adapter.own_variables(b)) for a, b in twins):
        return None
    return twins


def saves_more_than_variables(adapter: Adapter, layer: Any) -> bool:
    """Whether a layer's class saves its state otherwise than its variables in order, or saves assets."""
    cls, base = type(layer), adapter.keras_api.layers.Layer
    overridden = any(
        getattr(cls, name) is not getattr(base, name) for name in ("save_own_variables", "load_own_variables")
    )
    return overridden or hasattr(layer, "save_assets")


def _copy_own_state(adapter: Adapter, old: Any, new: Any, assets: str) -> None:
    """Copies what Keras' own saving keeps of one layer (not its sublayers) into its copy.

    A layer that saves only its variables gets them assigned pairwise, which is
    what `save_own_variables`/`load_own_variables` do, without the detour. One
    that saves more, or differently (statistics that `load_own_variables`
    finalizes, quantized kernels), goes through its own saving methods, as
    `.keras` saving and loading would (`copy_state` then compares the two).
    A vocabulary is copied in memory (`adapter.copy_vocabulary`); other assets
    through a folder.
    """
    if saves_more_than_variables(adapter, old):
        store = _Store(adapter)
        old.save_own_variables(store)
        new.load_own_variables(store)
    else:
        for source, target in zip(adapter.own_variables(old), adapter.own_variables(new), strict=True):
            adapter.copy_into(target, source)
    if hasattr(old, "save_assets") and hasattr(new, "load_assets") and not adapter.copy_vocabulary(old, new):
        os.makedirs(assets, exist_ok=True)
        old.save_assets(assets)
        new.load_assets(assets)


def _verify_own_state(adapter: Adapter, old: Any, new: Any) -> None:
    """Raises if the copy of a layer that saves more than its variables holds another vocabulary or values.

    Raises:
        ValueError: naming the layer and what differs.
    """
    what = None
    if callable(getattr(old, "get_vocabulary", None)) and callable(getattr(new, "get_vocabulary", None)):
        before, after = list(old.get_vocabulary()), list(new.get_vocabulary())
        if before != after:
            what = f"vocabulary of {len(after)} terms instead of {len(before)}"
            what += "" if len(before) != len(after) else " (the same number, other terms)"
    pairs = zip(adapter.own_variables(old), adapter.own_variables(new), strict=False)
    if what is None and any(not _same_values(a, b) for a, b in pairs):
        what = "variables of other values"
    if what is not None:
        raise ValueError(
            f"Layer '{old.name}' ({describe(old)}) was copied with a {what} than the original holds: its "
            "`save_own_variables`/`load_own_variables` (or `save_assets`/`load_assets`) do not carry its "
            "whole state. Give its class saving methods that do."
        )


def _same_values(a: Any, b: Any) -> bool:
    x, y = np.asarray(a.numpy()), np.asarray(b.numpy())
    return x.shape == y.shape and bool(np.all((x == y) | (x != x) & (y != y)))


def copy_state(adapter: Adapter, old: Any, new: Any, assets: str, skip: Callable[[Any], bool] | None = None) -> None:
    """Copies the whole state of layer `old` and its sublayers into its copy `new`, as Keras saves it.

    `assets` is an empty folder for the layer's assets. A copy whose sublayers
    or variables are laid out differently (a layer that builds in another
    order) gets its variables matched by path instead; such a layer keeps no
    state beyond its variables, or the self-check of the retrofit tells.
    """
    twins = _twins(adapter, old, new, skip)
    if twins is None and skip is not None:
        raise ValueError(f"Layer '{old.name}' ({describe(old)}) was rebuilt with other sublayers than it holds.")
    if twins is None:
        for source, target in _matched(adapter, old, new):
            adapter.copy_into(target, source)
    else:
        for index, (a, b) in enumerate(twins):
            _copy_own_state(adapter, a, b, os.path.join(assets, str(index)))
        for a, b in twins:  # once every sublayer is in: a layer may hold its state in one
            if saves_more_than_variables(adapter, a):
                _verify_own_state(adapter, a, b)
    for layer in [new, *adapter.sublayers(new)]:
        adapter.finish_loading(layer)


def copy_weights(
    adapter: Adapter,
    pairs: list[tuple[Any, Any]],
    first_call: Callable[[], None],
    skip: Callable[[Any], bool] | None = None,
) -> None:
    """Copies the state of each `(old, new)` layer pair; calls `first_call` once if a clone may build lazily.

    `skip` leaves out sublayers of the old layers that the new ones lack. A
    first call that fails matters only if weights are still missing after it.

    Raises:
        ValueError: if a clone lacks weights after a first call that failed.
    """
    if any(needs_a_first_call(adapter, old, new) for old, new in pairs):
        try:
            first_call()
        except Exception as error:  # a custom layer that may build lazily and that refuses this batch
            lacking = [old for old, new in pairs if len(adapter.variables(new)) < len(adapter.variables(old))]
            if lacking:  # without weights that must be created: the copy cannot be completed
                raise ValueError(
                    f"Layer '{lacking[0].name}' ({describe(lacking[0])}) creates its weights when it is first "
                    f"called, and calling its copy once to create them failed ({describe_error(error)})."
                ) from None
    with tempfile.TemporaryDirectory(prefix="rnn_state_rewriter_assets_") as assets:
        for index, (old, new) in enumerate(pairs):
            copy_state(adapter, old, new, os.path.join(assets, str(index)), skip)


def _fresh(adapter: Adapter, obj: Any) -> Any:
    """A new object of the same class and config (a metric without state, an optimizer without slots)."""
    return _from_config(adapter, obj, [obj])


def compile_like(adapter: Adapter, new: Any, old: Any) -> None:
    """Compiles `new` with `old`'s live compile arguments, if `old` was compiled.

    The loss objects and functions are the same; metric objects and the
    optimizer are fresh objects of the same class and config, so no state is
    shared between the two models and no registry lookup is needed.
    """
    arguments = adapter.compile_arguments(old)
    if arguments is None:
        return
    optimizer = arguments.get("optimizer")
    if optimizer is not None and not isinstance(optimizer, str):
        arguments["optimizer"] = _fresh(adapter, optimizer)
    metric_class = adapter.keras_api.metrics.Metric
    for key in ("metrics", "weighted_metrics"):
        if arguments.get(key) is not None:
            arguments[key] = adapter.map_tensors(
                lambda m: _fresh(adapter, m) if isinstance(m, metric_class) else m, arguments[key]
            )
    new.compile(**arguments)

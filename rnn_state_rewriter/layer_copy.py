"""Cloning one layer from the live object, and copying its weights.

The retrofit works from the objects it is given and never needs the Keras
registry to find a class or function that the model already holds:

- A layer is cloned through its own class, `type(layer).from_config(config)`,
  with every custom class and function it holds (its sublayers, cells,
  initializers, activations) in a custom-object scope, so an unregistered
  custom cell inside `RNN(cell)` is found.
- A layer that cannot be rebuilt from its config and owns no variables is
  reused by the copy as it is (it has nothing to copy or to share); one that
  owns variables is refused before anything is built, with an error that names
  it, its class and the fix.
- A layer's whole state is copied, as Keras' own `.keras` saving keeps it:
  variables pairwise with `assign` where the layer saves just its variables;
  otherwise through its own `save_own_variables`/`load_own_variables` (an
  adapted `Normalization` finalizes its statistics there) and
  `save_assets`/`load_assets` (a lookup layer's vocabulary). A copy owns its
  buffers on every backend (JAX shares a buffer on a plain `assign`).
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

from rnn_state_rewriter._adapter import Adapter
from rnn_state_rewriter.generation import KERAS_PACKAGES

__all__ = ["clone_layer", "copy_weights", "compile_like", "needs_a_first_call", "describe"]

_FRAMEWORKS = {*KERAS_PACKAGES, "tensorflow", "builtins", "numpy", "jax", "torch"}


def describe(obj: Any) -> str:
    """`module.Class` of an object, as error messages name it."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


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
    """`type(obj).from_config(obj.get_config())` with the custom objects of `owners` in scope.

    Safe mode is off: the config comes from a live object of this process, not
    from a file, so a `Lambda` layer's function is not untrusted code here.
    """
    scope = adapter.keras_api.saving.custom_object_scope(custom_objects(adapter, owners))
    with adapter.SafeModeScope(False), scope:
        return type(obj).from_config(obj.get_config())


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
            f"be cloned: `{name}.from_config({name}.get_config())` raised {type(error).__name__}: {reason}. "
            f"Give {name} a `get_config()` that returns its constructor arguments, and a constructor that "
            "accepts the base layer keyword arguments (`name`, `trainable`, `dtype`) through `**kwargs`." + hint
        ) from error


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
    finalizes, quantized kernels, vocabularies saved as assets), goes through
    its own saving methods, as `.keras` saving and loading would.
    """
    if saves_more_than_variables(adapter, old):
        store = _Store(adapter)
        old.save_own_variables(store)
        new.load_own_variables(store)
    else:
        for source, target in zip(adapter.own_variables(old), adapter.own_variables(new), strict=True):
            adapter.copy_into(target, source)
    if hasattr(old, "save_assets") and hasattr(new, "load_assets"):
        os.makedirs(assets, exist_ok=True)
        old.save_assets(assets)
        new.load_assets(assets)


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
    for layer in [new, *adapter.sublayers(new)]:
        adapter.finish_loading(layer)


def copy_weights(
    adapter: Adapter,
    pairs: list[tuple[Any, Any]],
    first_call: Callable[[], None],
    skip: Callable[[Any], bool] | None = None,
) -> None:
    """Copies the state of each `(old, new)` layer pair; calls `first_call` once if a clone builds lazily.

    `skip` leaves out sublayers of the old layers that the new ones lack.
    """
    if any(needs_a_first_call(adapter, old, new) for old, new in pairs):
        first_call()
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

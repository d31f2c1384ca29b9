"""Copying a layer's whole state into its clone, a subclassed model whole; a copy made ready to train.

A layer's whole state is copied, as Keras' own `.keras` saving keeps it:
variables pairwise with `assign` where the layer saves just its variables;
otherwise through its own `save_own_variables`/`load_own_variables` (an
adapted `Normalization` finalizes its statistics there). A lookup layer's
vocabulary is copied in memory, as its `load_assets` would set it, so any
term survives (a newline, the empty string, which a vocabulary file of one
term per line cannot hold); other assets go through `save_assets`/
`load_assets`. Then the copy's state is compared with the original's
(vocabularies and variables of such layers: cheap, small layers). A copy
owns its buffers on every backend (JAX shares a buffer on a plain `assign`).

The copy of a compiled model is compiled from the live compile arguments:
the same loss objects and functions, fresh metric objects and a fresh
optimizer of the same class and config. With `freeze_base`, every
pre-existing layer of the copy is made non-trainable but its new states.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.layer_copy import (
    build_sublayers_like,
    clone_layer,
    describe,
    describe_error,
    from_config_of,
    is_custom,
    name_sublayers_like,
)
from rnn_state_rewriter.layers import TrainableInitialState

__all__ = ["compile_like", "copy_model", "copy_state", "copy_weights", "freeze_all_but_states", "needs_a_first_call"]


def needs_a_first_call(adapter: Adapter, old: Any, new: Any) -> bool:
    """Whether `new` may create weights only when first called: it lacks some of `old`'s, or runs custom code."""
    if len(adapter.variables(new)) < len(adapter.variables(old)):
        return True
    return not adapter.variables(old) and any(is_custom(type(sub)) for sub in [old, *adapter.sublayers(old)])


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


def copy_model(
    adapter: Adapter, model: Any, first_call: Callable[[Any], Any], skip: Callable[[Any], bool] | None = None
) -> Any:
    """A copy of a subclassed model, made as Keras copies it: from its config, built, its whole state copied.

    `first_call(copy)` calls the copy once, where building it from its build
    config leaves weights to create. `skip` leaves out sublayers the copy
    lacks (`copy_weights`).

    Raises:
        TypeError: if the model cannot be rebuilt from its config (the message offers `in_place=True`).
    """
    try:
        copy = clone_layer(adapter, model, "")
    except TypeError as error:
        raise TypeError(
            f"{error} Or retrofit the model itself, without a copy: "
            "`add_trainable_initial_states(model, in_place=True)`."
        ) from error
    name_sublayers_like(adapter, copy, model, skip)
    adapter.build_like(copy, model)
    build_sublayers_like(adapter, copy, model, skip)
    copy_weights(adapter, [(model, copy)], lambda: first_call(copy), skip=skip)
    return copy


def _fresh(adapter: Adapter, obj: Any) -> Any:
    """A new object of the same class and config (a metric without state, an optimizer without slots)."""
    return from_config_of(adapter, obj, [obj])


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


def freeze_all_but_states(adapter: Adapter, model: Any) -> None:
    """Every pre-existing layer non-trainable; the state layers and wrappers (their states) stay trainable."""
    for layer in adapter.sublayers(model):
        if isinstance(layer, (adapter.keras_api.Model, TrainableInitialState)):
            continue
        if adapter.recurrent_kind(layer) == "trainable":
            layer.layer.trainable = False
            continue
        layer.trainable = False

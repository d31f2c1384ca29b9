"""`remove_trainable_initial_states`: the inverse of the retrofit, a copy with zero states again."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rnn_state_rewriter import surgery
from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.layers import SequenceMask, TrainableInitialState
from rnn_state_rewriter.plan import PlannedCall
from rnn_state_rewriter.probing import call_model, probe_batch
from rnn_state_rewriter.rebuild import MISSING, GraphRebuild, Site
from rnn_state_rewriter.state_copy import compile_like, copy_model
from rnn_state_rewriter.walk import Inventory, is_graph_model, state_layer_feeding, walk

__all__ = ["remove_trainable_initial_states"]


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
    return _remove(walk(model), model)


def _remove(inventory: Inventory, model: Any) -> Any:
    """The removal of `model`, the walked model or a graph submodel the walk recorded with it."""
    adapter = inventory.adapter

    def substitute(layer: Any) -> Any:
        if isinstance(layer, (TrainableInitialState, SequenceMask)):
            return None
        if adapter.recurrent_kind(layer) == "trainable":
            return layer.layer
        return layer

    def on_call(site: Site) -> Any:
        if site.new_layer is None:
            return None
        kind = adapter.recurrent_kind(site.layer)
        if kind == "trainable":  # the layer it wrapped takes no context
            site = dataclasses.replace(site, kwargs={k: v for k, v in site.kwargs.items() if k != "context"})
        if kind in ("rnn", "bidirectional") and state_layer_feeding(
            adapter, site.layer, site.old_args, site.old_kwargs
        ):
            args, kwargs, _ = adapter.split_initial_state(site.new_layer, site.args, site.kwargs)
            kwargs = {key: value for key, value in kwargs.items() if value is not MISSING}
            site = dataclasses.replace(site, args=args, kwargs=kwargs)
        return site.call_plain(adapter)

    def unwrap(copy: Any, original: Any) -> None:
        """Unwraps what `copy` holds at the places the walk found in `original`; a graph submodel there is
        removed from the original's, whose record the walk made with the model's (not walked again)."""
        if is_graph_model(adapter, copy) or adapter.recurrent_kind(copy) is not None:
            return
        found = inventory.sites.get(id(original), [])
        sites = [surgery.resolve(adapter, copy, site) for site in found]
        originals = {id(there.layer): site.layer for site, there in zip(found, sites, strict=True)}

        def removed(site: surgery.Site) -> Any:  # a graph submodel with nothing added is kept as it was copied
            submodel = originals[id(site.layer)]
            if not any(_is_added(adapter)(sub) for sub in adapter.sublayers(submodel)):
                return None
            return _remove(inventory, submodel)

        surgery.unwrap_all(adapter, copy, sites, removed)

    if not is_graph_model(adapter, model):
        new_model = copy_model(
            adapter, model, lambda copy: call_model(copy, probe_batch(adapter, model)), skip=_is_added(adapter)
        )
        unwrap(new_model, model)
        compile_like(adapter, new_model, model)
        return new_model

    def calls(graph: Any) -> list[PlannedCall]:
        return [PlannedCall(*call, None) for call in inventory.graphs[id(graph)]]

    def unwrap_carried(layer: Any, clone: Any) -> None:
        if not surgery.is_pending(clone):
            unwrap(clone, layer)

    # Wrappers a clone's config carries (a `TimeDistributed`'s) go before it is built, so that the layers
    # they wrapped are built in their place, with their variable paths (a graph submodel there is removed
    # from the original's, built where it was); those a clone puts back once built (`surgery.Remembers`)
    # go after.
    rebuild = GraphRebuild(
        adapter,
        calls,
        lambda graph: inventory.trees[id(graph)],
        on_call,
        substitute,
        skip=_is_added(adapter),
        prepare=unwrap_carried,
    )
    new_model = rebuild(model)
    for original, clone in rebuild.pairs:
        unwrap(clone, original)
    compile_like(adapter, new_model, model)
    return new_model


def _is_added(adapter: Adapter) -> Callable[[Any], bool]:
    """Whether a layer is one the retrofit added (a wrapper, a state layer, a mask), which a removal drops."""
    return lambda layer: (
        isinstance(layer, (TrainableInitialState, SequenceMask)) or (adapter.recurrent_kind(layer) == "trainable")
    )

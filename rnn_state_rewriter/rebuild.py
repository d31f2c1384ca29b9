"""The graph rebuild: a Functional or Sequential model cloned layer by layer, its calls replayed.

`GraphRebuild` clones every layer of a model's tree up front (one that cannot
be cloned is refused before anything is built), replays the calls of each
graph model in graph order, letting a hook decide each call (the retrofit's
hook executes the plan's decisions), and copies every layer's whole state
into its clone once the new graph is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from rnn_state_rewriter import surgery
from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.layer_copy import clone_layer, name_sublayers_like
from rnn_state_rewriter.plan import Decision, PlannedCall
from rnn_state_rewriter.state_copy import copy_weights
from rnn_state_rewriter.walk import is_graph_model

__all__ = ["GraphRebuild", "Site", "MISSING"]


@dataclasses.dataclass
class Site:
    """One call of a layer in the graph being rebuilt.

    `args`/`kwargs` hold the new graph's tensors (`MISSING` where the tensor was
    dropped); `old_args`/`old_kwargs` the original's; `decision` is the plan's
    decision for the call (None for a call of a layer that is not recurrent).
    """

    layer: Any
    new_layer: Any
    old_args: Any
    old_kwargs: Any
    args: Any
    kwargs: Any
    path: str
    decision: Decision | None

    def call_plain(self, adapter: Adapter) -> Any:
        """Calls the new layer as the original call site did.

        A `mask=` that came from a dropped layer (a removed `SequenceMask`) is
        left out: the layer takes its input's mask itself again.
        """
        kwargs = {k: v for k, v in self.kwargs.items() if not (k == "mask" and v is MISSING)}
        for value in adapter.flatten_tensors((self.args, kwargs)):
            if value is MISSING:
                raise ValueError(
                    f"Layer '{self.path}{self.layer.name}' takes a tensor that the "
                    "rewritten graph no longer has (the output of a removed "
                    "`TrainableInitialState` layer used by a non-recurrent layer)."
                )
        return self.new_layer(*self.args, **kwargs)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class GraphRebuild:
    """Clones a model layer by layer, replaying the calls of each graph model.

    `calls(graph)` gives the calls of a graph model in graph order, `tree(graph)`
    its layers and its submodels' (`walk.layers_in_tree`), both as the walk
    recorded them. `on_call(site)` returns the outputs of the call in the new
    graph (None for a dropped layer). `substitute(layer)` names the layer whose clone replaces
    `layer` (None to drop it); `prepare(layer, clone)` is run on each new clone before it is built.
    Every layer is cloned once, before anything is
    built, so a layer that cannot be cloned is refused first and shared layers
    stay shared; nested models are rebuilt recursively; the weights are copied
    once the whole graph is built.
    """

    def __init__(
        self,
        adapter: Adapter,
        calls: Callable[[Any], list[PlannedCall]],
        tree: Callable[[Any], list[tuple[str, Any]]],
        on_call: Callable[[Site], Any],
        substitute: Callable[[Any], Any] = lambda layer: layer,
        skip: Callable[[Any], bool] | None = None,
        prepare: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self.adapter = adapter
        self.prepare = prepare
        self.calls = calls
        self.tree = tree
        self.on_call = on_call
        self.substitute = substitute
        self.skip = skip
        self.clones: dict[int, Any] = {}
        self.pairs: list[tuple[Any, Any]] = []
        self.restore: list[tuple[Any, str, Any]] = []
        self.outputs: list[tuple[str, Any, Any]] = []  # (layer path, old tensor, new tensor) of the top graph
        self.top_tensors: dict[int, Any] = {}  # the top graph's new tensors, by the id of the old

    def __call__(self, model: Any) -> Any:
        self.clone_all(model)
        try:
            new_model = self.model(model, "")
        finally:
            for owner, attribute, initializer in self.restore:
                setattr(owner, attribute, initializer)
        for _, clone in self.pairs:
            surgery.finish_pending(clone)
        copy_weights(self.adapter, self.pairs, lambda: _call_on_zeros(self.adapter, new_model), self.skip)
        return new_model

    def clone_all(self, model: Any) -> None:
        """Clones every leaf layer of the tree up front: one that cannot be cloned fails before any building."""
        for prefix, layer in self.tree(model):
            if id(layer) in self.clones:
                continue
            source = self.substitute(layer)
            if source is None:
                self.clones[id(layer)] = None
            elif not is_graph_model(self.adapter, source):
                self.clones[id(layer)] = self.leaf(source, prefix)

    def model(self, model: Any, path: str) -> Any:
        adapter = self.adapter
        tensors: dict[int, Any] = {}
        if not path:
            self.top_tensors = tensors

        def new_input(tensor: Any) -> Any:
            if id(tensor) not in tensors:
                tensors[id(tensor)] = adapter.fresh_input(tensor)
            return tensors[id(tensor)]

        def lookup(value: Any) -> Any:
            if adapter.is_keras_tensor(value):
                return tensors.get(id(value), MISSING)
            return value

        inputs = adapter.map_tensors(new_input, adapter.model_inputs(model))
        for call in self.calls(model):
            layer, args, kwargs = call.layer, call.args, call.kwargs
            new_args = adapter.map_tensors(lookup, args)
            new_kwargs = adapter.map_tensors(lookup, kwargs)
            site = Site(layer, self.clone(layer, path), args, kwargs, new_args, new_kwargs, path, call.decision)
            with adapter.scope_of(layer):  # a clone built here gets the variable paths of the original
                result = self.on_call(site)
            if result is not None:
                for old, new in zip(call.outputs, adapter.flatten_tensors(result), strict=True):
                    tensors[id(old)] = new
                    if not path:
                        self.outputs.append((getattr(layer, "name", str(layer)), old, new))
        outputs = adapter.map_tensors(lambda t: tensors[id(t)], adapter.model_outputs(model))
        return adapter.keras_api.Model(inputs=inputs, outputs=outputs, name=model.name)

    def new_tensor(self, old: Any) -> Any:
        """The tensor of the new top graph that stands for `old`, once the replay has made it."""
        return self.top_tensors[id(old)]

    def clone(self, layer: Any, path: str) -> Any:
        if id(layer) not in self.clones:  # a graph submodel, rebuilt at its first call site, or an operation
            if is_graph_model(self.adapter, layer):
                self.clones[id(layer)] = self.model(layer, f"{path}{layer.name}/")
            else:
                self.clones[id(layer)] = self.leaf(layer, path)
        return self.clones[id(layer)]

    def leaf(self, layer: Any, path: str) -> Any:
        """A clone of a layer or a Keras 3 operation; one without variables may come back as itself."""
        clone = clone_layer(self.adapter, layer, path)
        if clone is not layer and isinstance(layer, self.adapter.keras_api.layers.Layer):
            name_sublayers_like(self.adapter, clone, layer)  # a custom layer makes its sublayers anew
        if clone is not layer and self.prepare is not None:
            self.prepare(layer, clone)
        if clone is not layer and isinstance(layer, self.adapter.keras_api.layers.Layer):
            self.restore.extend(_swap_initializers(clone, self.adapter))
            self.pairs.append((layer, clone))
        return clone


def _swap_initializers(layer: Any, adapter: Adapter) -> list[tuple[Any, str, Any]]:
    """Replaces every initializer attribute of `layer` and its sublayers by zeros.

    Returns what to put back once the layer is built.
    """
    api = adapter.keras_api
    zeros = api.initializers.Zeros()
    swapped = []
    for owner in [layer, *adapter.sublayers(layer)]:
        for attribute, value in list(vars(owner).items()):
            if isinstance(value, api.initializers.Initializer) and not isinstance(value, api.initializers.Zeros):
                setattr(owner, attribute, zeros)
                swapped.append((owner, attribute, value))
    return swapped


def _call_on_zeros(adapter: Adapter, model: Any) -> None:
    """Calls a model once on zeros (batch of one), so that layers creating weights on first call create them."""

    def zeros(tensor: Any) -> Any:
        shape = [1 if dim is None else dim for dim in tensor.shape]
        return np.zeros(shape, dtype=str(getattr(tensor.dtype, "name", tensor.dtype)))

    model(adapter.map_tensors(zeros, adapter.model_inputs(model)), training=False)

"""The walk: one pass over a model that records what there is, for the decisions and the readers.

`walk(model)` checks that `model` is a model the package can work on, then
visits it once: each graph model's calls in graph order (the model and every
Functional or Sequential submodel, called in a graph or held by an attribute),
each call of a recurrent layer with its path of Keras names and whether a Keras
mask may reach it only at run time, and every recurrent layer or graph submodel
that a custom layer's or subclassed model's attributes hold (`surgery.Site`).
The result, an `Inventory`, is a record: it decides nothing. The plan
(`decide.py`) is a function of it and the options; the executors look places
up in it; `remove_trainable_initial_states`, `initial_states`, `context_maps`,
`inspect` and the check read it too. This module is the only one that lists
a model's calls, layers and attribute places (a test holds it so); the probe
batch asks it which layers read an input (`input_readers`).

Masks: Keras 3 hands a mask on past a submodel that drops it in its graph, so a
mask may reach a recurrent call at run time where the graph shows none. The
walk follows which tensors may carry one (a layer that supports masking passes
its inputs' on) so that the rewrite passes a mask explicitly exactly where one
may arrive, and nowhere else: an all-True mask would only slow the layer down.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rnn_state_rewriter.backend import Adapter, adapter_for
from rnn_state_rewriter.layers import TrainableInitialState
from rnn_state_rewriter.surgery import Site, find_sites

__all__ = [
    "Call",
    "Inventory",
    "input_readers",
    "RecurrentCall",
    "is_graph_model",
    "layers_in_tree",
    "model_adapter",
    "recurrent_layers",
    "state_layer_feeding",
    "walk",
]

SiteKey = tuple[int, int]  # (id of the graph model, index of the call in its graph order)
Call = tuple[Any, tuple[Any, ...], dict[str, Any], list[Any]]  # (layer, args, kwargs, outputs)


@dataclasses.dataclass(frozen=True)
class RecurrentCall:
    """A call of a recurrent layer in a graph model, as the walk met it.

    `path` is the layer's name prefixed by `name/` for each submodel or custom
    layer it sits in; `top` is the index of the call of the walked model's own
    graph that it is (or sits in); `runtime_mask` whether a Keras mask may reach
    it at run time though its graph shows none.
    """

    key: SiteKey
    path: str
    layer: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    top: int
    runtime_mask: bool = False


@dataclasses.dataclass
class Inventory:
    """What one walk of a model found (see the module's docstring).

    Attributes:
        adapter: the model's Keras generation.
        model: the model walked.
        tree: every layer of the model and of its nested graph submodels, once
            each, with the prefix of the submodels it sits in (`"encoder/"`); the
            model itself where it is subclassed.
        graphs: the calls of each graph model walked, by `id`, in graph order.
        trees: the layers of each graph model walked (`layers_in_tree`), by `id`.
        recurrent_calls: the calls of recurrent layers, in the order the walk
            met them (a submodel's where it is called).
        held: the recurrent layers and graph submodels reached through
            attributes, once per place, in the order met.
        sites: the sites each custom layer or subclassed model holds, by `id`
            of the holder, with their names from the model's root; the
            executors look them up in its copy by their steps
            (`surgery.resolve`).
    """

    adapter: Adapter
    model: Any
    tree: list[tuple[str, Any]]
    graphs: dict[int, list[Call]]
    trees: dict[int, list[tuple[str, Any]]]
    recurrent_calls: list[RecurrentCall]
    held: list[Site]
    sites: dict[int, list[Site]]

    @property
    def graph_sites(self) -> list[Site]:
        """The graph submodels reached through attributes (walked with their calls), once per place."""
        return [site for site in self.held if is_graph_model(self.adapter, site.layer)]

    @property
    def surgery_sites(self) -> list[Site]:
        """The recurrent layers reached through attributes, once per place."""
        return [site for site in self.held if not is_graph_model(self.adapter, site.layer)]

    def recurrent_layers(self) -> list[tuple[str, Any]]:
        """Every recurrent layer found, once each, with its path, in the order of the layers' lists."""
        return self._recurrent_in(self.model, "")

    def _recurrent_in(self, root: Any, prefix: str) -> list[tuple[str, Any]]:
        adapter = self.adapter
        found: list[tuple[str, Any]] = []
        roots = self.trees[id(root)] if is_graph_model(adapter, root) else [("", root)]
        for inner, layer in roots:
            if adapter.recurrent_kind(layer) is not None:
                found.append((prefix + inner + layer.name, layer))
            elif not is_graph_model(adapter, layer):
                for site in self.sites.get(id(layer), []):  # named from the root already
                    if is_graph_model(adapter, site.layer):
                        found += self._recurrent_in(site.layer, site.name + "/")
                    else:
                        found.append((site.name, site.layer))
        return found


def walk(model: Any) -> Inventory:
    """Checks that `model` is a model the package works on, and walks it once (see the module's docstring).

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if it is not built (a graph model without inputs, a
            subclassed model never called).
    """
    adapter = model_adapter(model)
    return _Walker(adapter, model).run()


class _Walker:
    def __init__(self, adapter: Adapter, model: Any) -> None:
        self.adapter = adapter
        self.model = model
        self.graphs: dict[int, list[Call]] = {}
        self.trees: dict[int, list[tuple[str, Any]]] = {}
        self.recurrent: dict[SiteKey, RecurrentCall] = {}
        self.held: dict[str, Site] = {}
        self.sites: dict[int, list[Site]] = {}
        self.walked: dict[tuple[int, tuple[bool, ...]], list[bool]] = {}
        self.top = 0

    def run(self) -> Inventory:
        adapter, model = self.adapter, self.model
        if is_graph_model(adapter, model):
            self.graph(model, "", (), top=True)
            tree = self.trees[id(model)]
            for prefix, layer in tree:  # a layer the graph does not call (never in a built model) is read too
                if not is_graph_model(adapter, layer) and adapter.recurrent_kind(layer) is None:
                    self.look_into(prefix, layer)
        else:
            tree = [("", model)]
            self.look_into(None, model)
        return Inventory(
            adapter,
            model,
            tree,
            self.graphs,
            self.trees,
            list(self.recurrent.values()),
            list(self.held.values()),
            self.sites,
        )

    def graph(self, model: Any, prefix: str, masked: tuple[bool, ...], top: bool = False) -> list[bool]:
        """Walks a graph model's calls; returns which of its outputs may carry a mask."""
        key = (id(model), masked)
        if key not in self.walked:
            self.walked[key] = self._graph(model, prefix, masked, top)
        return self.walked[key]

    def _graph(self, model: Any, prefix: str, masked: tuple[bool, ...], top: bool) -> list[bool]:
        adapter = self.adapter
        flags: dict[int, bool] = {}

        def flag(tensor: Any) -> bool:
            return flags.get(id(tensor), False) or adapter.mask_of(tensor) is not None

        inputs = adapter.flatten_tensors(adapter.model_inputs(model))
        for tensor, value in zip(inputs, masked or [False] * len(inputs), strict=True):
            flags[id(tensor)] = value
        if id(model) not in self.graphs:
            self.graphs[id(model)] = list(adapter.call_sites(model))
            self.trees[id(model)] = layers_in_tree(adapter, model)
        for index, (layer, args, kwargs, outputs) in enumerate(self.graphs[id(model)]):
            if top:
                self.top = index
            incoming = [flag(t) for t in adapter.flatten_tensors(args) if adapter.is_keras_tensor(t)]
            if adapter.recurrent_kind(layer) is not None:
                self.recurrent_call((id(model), index), prefix, layer, args, kwargs, incoming)
                produced = [any(incoming[:1])] * len(outputs)
            elif is_graph_model(adapter, layer):
                inner = len(adapter.flatten_tensors(adapter.model_inputs(layer)))
                given = tuple(incoming) if len(incoming) == inner else (any(incoming),) * inner
                produced = self.graph(layer, f"{prefix}{layer.name}/", given)
            else:
                self.look_into(prefix, layer)
                produced = [any(incoming) and bool(getattr(layer, "supports_masking", False))] * len(outputs)
            for tensor, value in zip(outputs, produced, strict=False):
                flags[id(tensor)] = value
        return [flag(t) for t in adapter.flatten_tensors(adapter.model_outputs(model))]

    def recurrent_call(
        self, key: SiteKey, prefix: str, layer: Any, args: Any, kwargs: Any, incoming: list[bool]
    ) -> None:
        """Records a recurrent call (a submodel's walked again: whether a mask reaches it merged)."""
        adapter = self.adapter
        first = adapter.flatten_tensors(args)[0] if args else None
        runtime_mask = bool(adapter.RUNTIME_MASKS and incoming[:1] == [True] and adapter.mask_of(first) is None)
        known = self.recurrent.get(key)
        if known is not None:
            self.recurrent[key] = dataclasses.replace(known, runtime_mask=known.runtime_mask or runtime_mask)
            return
        self.recurrent[key] = RecurrentCall(key, prefix + layer.name, layer, args, kwargs, self.top, runtime_mask)

    def look_into(self, prefix: str | None, layer: Any) -> None:
        """Records what a custom layer or subclassed model holds; walks the graph submodels it holds."""
        if id(layer) in self.sites:
            return
        inner = f"{prefix}{layer.name}/" if prefix is not None else ""
        self.sites[id(layer)] = sites = find_sites(self.adapter, layer, inner)
        for site in sites:
            if site.path in self.held:
                continue
            self.held[site.path] = site
            if is_graph_model(self.adapter, site.layer):
                self.graph(site.layer, site.name + "/", ())


# ----------------------------------------------------------------------------
# Checking a model, and the layers in its tree
# ----------------------------------------------------------------------------


def model_adapter(model: Any) -> Adapter:
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
    if not is_graph_model(adapter, model):
        if not model.built and not adapter.variables(model):
            raise ValueError(
                f"Model '{model.name}' ({type(model).__name__}) is a subclassed model that has not been "
                "called yet, so its layers have no weights. Call it once on a batch (e.g. `model.predict`) first."
            )
        return adapter
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


def is_graph_model(adapter: Adapter, layer: Any) -> bool:
    """Whether `layer` is a Functional or Sequential model, whose graph the rewrite can rebuild."""
    return bool(adapter.is_functional(layer) or adapter.is_sequential(layer))


def layers_in_tree(adapter: Adapter, model: Any) -> list[tuple[str, Any]]:
    """Every layer of a model and of its nested graph submodels, once each, with its submodel prefix."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(container: Any, prefix: str) -> None:
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            found.append((prefix, layer))
            if is_graph_model(adapter, layer):
                visit(layer, f"{prefix}{layer.name}/")

    visit(model, "")
    return found


def recurrent_layers(model: Any) -> list[tuple[str, Any]]:
    """Every recurrent layer the rewrite can reach, nested submodels included, with its path.

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
    return walk(model).recurrent_layers()


# Layers that hand their input on with its values unchanged: what reads their output reads the input.
_PASS_THROUGH = frozenset({"Reshape", "Flatten", "Permute", "RepeatVector", "Masking", "Identity", "InputLayer"})


def input_readers(adapter: Adapter, model: Any, tensor: Any) -> list[Any]:
    """The layers of `model` called on the input `tensor`, or on it reshaped (`Reshape`, `Flatten`, ...), and
    those reading it inside the wrappers (`TimeDistributed`) and graph submodels that read it."""
    found = []
    tensors = [tensor]
    for layer, args, kwargs, outputs in adapter.call_sites(model):
        if any(t is s for t in adapter.flatten_tensors((args, kwargs)) for s in tensors):
            found += _inside(adapter, layer)
            if type(layer).__name__ in _PASS_THROUGH:
                tensors += list(outputs)
    return found


def _inside(adapter: Adapter, layer: Any) -> list[Any]:
    """`layer`, and what reads its input inside it: the layer a wrapper wraps, the readers of a graph model's
    inputs."""
    found = [layer]
    inner = getattr(layer, "layer", None)
    if isinstance(inner, adapter.keras_api.layers.Layer):
        found += _inside(adapter, inner)
    if adapter.is_functional(layer) or adapter.is_sequential(layer):
        for tensor in adapter.flatten_tensors(adapter.model_inputs(layer)):
            found += input_readers(adapter, layer, tensor)
    return found


def state_layer_feeding(adapter: Adapter, layer: Any, args: Any, kwargs: Any) -> Any:
    """The `TrainableInitialState` whose outputs are a call site's whole `initial_state`, or None."""
    _, _, passed = adapter.split_initial_state(layer, args, kwargs)
    if passed is None:
        return None
    producers = {id(adapter.layer_of(t)): adapter.layer_of(t) for t in adapter.flatten_tensors(passed)}
    if len(producers) != 1:
        return None
    (found,) = producers.values()
    return found if isinstance(found, TrainableInitialState) else None

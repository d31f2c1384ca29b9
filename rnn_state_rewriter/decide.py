"""The decisions: the plan as a function of the walk's record and the options.

`decide(inventory, options)` reads what `walk.py` recorded and decides, for
every call of a recurrent layer and every recurrent layer reached through an
attribute, whether it gets a trainable initial state, and why not where it
does not. Every check of the options against the model is made here, once: the
layer selection, per-state lists against each layer's number of states, the
context and whether it reaches each call, call sites that already pass
`initial_state`. Nothing here walks the model or builds anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from rnn_state_rewriter.arguments import distinct_initializers, per_state
from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.context import Context, find_context
from rnn_state_rewriter.generation import Generation, batch_axis, generation_of
from rnn_state_rewriter.layer_copy import unvouched
from rnn_state_rewriter.options import LayerSelection, RetrofitOptions
from rnn_state_rewriter.plan import ADD, SKIP, Action, Decision, Plan, PlannedCall, Route
from rnn_state_rewriter.states import describe_kind, flatten_shapes, is_stateful, state_shapes
from rnn_state_rewriter.surgery import Site
from rnn_state_rewriter.walk import Inventory, RecurrentCall, SiteKey, is_graph_model, state_layer_feeding, walk

__all__ = ["decide", "make_plan", "plan_trainable_initial_states", "selector"]


def make_plan(model: Any, options: RetrofitOptions) -> Plan:
    """Walks `model` once and decides: the plan the executors carry out (see `plan_trainable_initial_states`)."""
    return decide(walk(model), options)


def decide(inventory: Inventory, options: RetrofitOptions) -> Plan:
    """The plan of a retrofit of the walked model with `options` (see the module's docstring).

    Raises:
        TypeError, ValueError: where an option does not fit the model (each
            error names the option and the layer).
    """
    model = inventory.model
    context = find_context(inventory, options.context, options.num_ids)
    found = inventory.recurrent_layers()
    selected = selector(options.layers, found)
    if options.layers is not None and found and not any(selected(path, layer) for path, layer in found):
        raise ValueError(
            f"Argument `layers` selects none of the recurrent layers of model '{model.name}': "
            f"{[path for path, _ in found]}. Received: layers={options.layers!r}"
        )
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no recurrent layer (RNN, LSTM, GRU, SimpleRNN, "
            "ConvLSTM or Bidirectional) to give a trainable initial state."
        )
    return _Decider(inventory, selected, options, context).plan()


def _unvouched(inventory: Inventory) -> str | None:
    """Why the copy of the walked model must be run to be vouched for (naming a layer), or None if it need not.

    None when the model is a Functional or Sequential model whose layers, at
    any depth, are all Keras' own layers, other than the preprocessing layers
    (`layer_copy.unvouched`): such a copy is exact by construction.
    """
    adapter, model = inventory.adapter, inventory.model
    if not is_graph_model(adapter, model):
        return f"model '{model.name}' is subclassed: the rewrite cannot read its `call`"
    for prefix, layer in inventory.tree:
        for part in [layer, *adapter.sublayers(layer)]:
            reason = None if is_graph_model(adapter, part) else unvouched(part)
            if reason:
                name = f"{prefix}{layer.name}" + ("" if part is layer else f" (its sublayer '{part.name}')")
                return f"layer '{name}': {reason}"
    return None


def _generation_or_none(cls: type) -> Generation | None:
    try:
        return generation_of(cls)
    except TypeError:
        return None


def selector(layers: LayerSelection, found: list[tuple[str, Any]]) -> Callable[[str, Any], bool]:
    """The predicate `(path, layer) -> bool` of a layer selection, checked against the layers found."""
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


class Names:
    """New layer names, unique in the model: `name`, else `name_1`, `name_2`, ..."""

    def __init__(self, taken: Iterable[str]) -> None:
        self.taken = set(taken)

    def new(self, name: str) -> str:
        candidate, suffix = name, 0
        while candidate in self.taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self.taken.add(candidate)
        return candidate


class _Decider:
    """Decides every recurrent call and attribute site of the record, then names and configures the states."""

    def __init__(
        self,
        inventory: Inventory,
        selected: Callable[[str, Any], bool],
        options: RetrofitOptions,
        context: Context | None,
    ) -> None:
        self.inventory = inventory
        self.adapter = inventory.adapter
        self.selected = selected
        self.options = options
        self.context = context
        # The per-state values to check against each layer's states.
        self.per_state = {
            "initializer": options.initializer,
            "regularizer": options.regularizer,
            "constraint": options.constraint,
        }
        self.shapes: dict[int, Any] = {}

    def plan(self) -> Plan:
        """Each decision with its per-state options and names; each graph's calls in the order the rebuild
        replays them (with a context, the calls that compute it first)."""
        inventory, model = self.inventory, self.inventory.model
        order = self.context.order if self.context is not None else range(len(inventory.graphs.get(id(model), [])))
        position = {index: place for place, index in enumerate(order)}
        calls = sorted(inventory.recurrent_calls, key=lambda call: position.get(call.top, 0))
        counts: dict[int, int] = {}
        sites: dict[SiteKey, Decision] = {}
        for call in calls:
            counts[id(call.layer)] = counts.get(id(call.layer), 0) + 1
            sites[call.key] = self.decide_call(call, counts[id(call.layer)] - 1)
        surgery = {site.path: self.decide_surgery(site) for site in inventory.surgery_sites}
        layers = {id(d.layer): d for d in [*sites.values(), *surgery.values()] if d.action is Action.ADD}
        options = _per_state_options(self.adapter, self.per_state, layers)
        names = Names([model.name, *(layer.name for layer in self.adapter.sublayers(model))])
        state_names: dict[int, str] = {}
        for key, decision in sites.items():  # in the order the rebuild meets them
            if decision.action is Action.ADD:
                layer = decision.layer
                if id(layer) not in state_names:  # a wrapper takes the name of the layer it replaces
                    wrapped = decision.route is Route.WRAP
                    state_names[id(layer)] = layer.name if wrapped else names.new(f"{layer.name}_initial_state")
                mask_name = names.new(f"{layer.name}_mask") if decision.runtime_mask else ""
                options[id(layer)] = {**options[id(layer)], "state_name": state_names[id(layer)]}
                decision = dataclasses.replace(
                    decision, mask_name=mask_name, **_conditioning(self.context, model, key, decision)
                )
            sites[key] = dataclasses.replace(decision, **options.get(id(decision.layer), {}))
        for decision in surgery.values():
            if decision.action is Action.ADD:
                _conditioning(self.context, model, None, decision)
        surgery = {path: dataclasses.replace(d, **options.get(id(d.layer), {})) for path, d in surgery.items()}
        graphs = {}
        for graph, graph_calls in inventory.graphs.items():
            indices = order if graph == id(model) else range(len(graph_calls))
            graphs[graph] = [PlannedCall(*graph_calls[i], sites.get((graph, i))) for i in indices]
        added = [d.path for d in [*sites.values(), *surgery.values()] if d.action is Action.ADD]
        submodels = {
            site.path: site.layer
            for site in inventory.graph_sites
            if any(path.startswith(site.name + "/") for path in added)
        }
        decisions = [*sites.values(), *surgery.values()]
        unvouched = _unvouched(inventory)
        check = self.options.run_check
        if check is None:
            check = self.options.sample is not None or unvouched is not None
        return Plan(
            self.adapter, model, self.options, decisions, graphs, surgery, submodels, inventory, unvouched, check
        )

    def decide_call(self, call: RecurrentCall, number: int) -> Decision:
        """The decision of one call of a recurrent layer in a graph."""
        layer = call.layer
        decision = _to_add(call.path, layer, call=number, runtime_mask=call.runtime_mask)
        reason = self.reason_to_skip(call.path, layer, call.args, call.kwargs)
        if reason:
            return dataclasses.replace(decision, action=SKIP, reason=reason, runtime_mask=False)
        route = Route.WRAP if decision.stateful else Route.GRAPH
        return self.with_states(decision, route=route)

    def decide_surgery(self, site: Site) -> Decision:
        """The decision of a recurrent layer reached through an attribute."""
        layer = site.layer
        decision = _to_add(site.name, layer, route=Route.SURGERY)
        if self.adapter.recurrent_kind(layer) == "trainable":
            return dataclasses.replace(decision, action=SKIP, reason="already has a trainable initial state")
        if not self.selected(site.name, layer):
            return dataclasses.replace(decision, action=SKIP, reason="not selected")
        return self.with_states(decision)

    def with_states(self, decision: Decision, **fields: Any) -> Decision:
        """`decision` with the state structure and shapes of its layer (and `fields`)."""
        structure = self.structure(decision.path, decision.layer)
        flat = tuple(tuple(s) for s in flatten_shapes(structure))
        return dataclasses.replace(decision, state_shapes=flat, structure=structure, **fields)

    def reason_to_skip(self, path: str, layer: Any, args: Any, kwargs: Any) -> str:
        adapter = self.adapter
        if adapter.recurrent_kind(layer) == "trainable":
            return "already has a trainable initial state (TrainableInitialStateRNN)"
        if not self.selected(path, layer):
            return "not selected"
        _, _, passed = adapter.split_initial_state(layer, args, kwargs)
        if passed is None:
            return ""
        if state_layer_feeding(adapter, layer, args, kwargs) is not None:
            return "already has a trainable initial state"
        return "its call passes initial_state"

    def structure(self, path: str, layer: Any) -> Any:
        """The layer's nested state shapes, read once per layer; per-state lists are checked against them."""
        if id(layer) not in self.shapes:
            structure = state_shapes(layer)
            count = len(flatten_shapes(structure))
            for argument, value in self.per_state.items():
                per_state(value, count, argument, f"layer '{path}'")
            self.shapes[id(layer)] = structure
        return self.shapes[id(layer)]


def _to_add(path: str, layer: Any, **fields: Any) -> Decision:
    """A decision to give `layer` a state, before its shapes are read."""
    return Decision(
        path,
        describe_kind(layer),
        ADD,
        layer=layer,
        stateful=is_stateful(layer),
        batch_axis=batch_axis(layer),
        **fields,
    )


def plan_trainable_initial_states(
    model: Any,
    *,
    layers: LayerSelection = None,
    initializer: Any = "zeros",
    regularizer: Any = None,
    constraint: Any = None,
    context: str | None = None,
    num_ids: int | None = None,
) -> list[Decision]:
    """What `add_trainable_initial_states` would do, one decision per recurrent call site.

    Nothing is built or changed. Takes the same arguments as
    `add_trainable_initial_states` (those that decide anything) and raises the
    same errors for them.

    Returns:
        A list of `Decision`s: the call sites of recurrent layers in the order
        the rewrite replays them (graph order; with a `context`, the calls that
        compute it first), then the recurrent layers held by custom layers or
        subclassed models (`route="surgery"`).

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> inputs = keras.Input((6, 2))
    >>> x = keras.layers.LSTM(4, return_sequences=True, name="lstm")(inputs)
    >>> x = keras.layers.GRU(3, stateful=False, name="gru")(x)
    >>> for d in rsr.plan_trainable_initial_states(keras.Model(inputs, x), layers=["gru"]):
    ...     print(d.path, d.kind, d.action, d.reason or d.state_shapes)
    lstm LSTM skip not selected
    gru GRU add ((3,),)

    ```
    """
    options = RetrofitOptions(
        layers=layers,
        initializer=initializer,
        regularizer=regularizer,
        constraint=constraint,
        context=context,
        num_ids=num_ids,
    )
    return make_plan(model, options).decisions


def _conditioning(context: Context | None, model: Any, key: SiteKey | None, decision: Decision) -> dict[str, Any]:
    """The context fields of a decision that adds states; the context must reach its call.

    Raises:
        ValueError: where the call is not in the model's own graph, or is one
            the context is computed from.
    """
    if context is None:
        return {}
    if key is None or key[0] != id(model):
        raise ValueError(
            f"Argument `context` conditions the states of the recurrent layers in the graph of model "
            f"'{model.name}' itself, but layer '{decision.path}' is inside a submodel or a custom "
            "layer, which the context does not reach. Leave it out with `layers=`, or pass the context "
            f"into that submodel as one of its inputs. Received: context={context.name!r}"
        )
    if key[1] in context.computing:
        raise ValueError(
            f"Argument `context` names '{context.name}', which is computed from the output of layer "
            f"'{decision.path}': a context must not depend on the layers it conditions. Leave that "
            f"layer out with `layers=`, or name another context. Received: context={context.name!r}"
        )
    return {
        "context": context.name,
        "context_dim": context.context_dim,
        "num_ids": context.num_ids,
        "context_tensor": context.tensor,
    }


def _per_state_options(
    adapter: Adapter, values: dict[str, Any], layers: dict[int, Decision]
) -> dict[int, dict[str, Any]]:
    """The initializer, regularizer and constraint of each state of every layer that gets states.

    One initializer object used for every state of every layer would give them
    all the same values; `distinct_initializers` re-seeds its later uses, so
    each state is its own draw across the model.
    """
    api = adapter.keras_api
    counts = {key: len(d.state_shapes) for key, d in layers.items()}

    def each(argument: str, key: int) -> list[Any]:
        return per_state(values[argument], counts[key], argument, f"layer '{layers[key].path}'")

    flat = [api.initializers.get("zeros" if v is None else v) for key in layers for v in each("initializer", key)]
    flat = distinct_initializers(flat)
    result: dict[int, dict[str, Any]] = {}
    start = 0
    for key in layers:
        result[key] = {
            "initializers": tuple(flat[start : start + counts[key]]),
            "regularizers": tuple(each("regularizer", key)),
            "constraints": tuple(each("constraint", key)),
        }
        start += counts[key]
    return result

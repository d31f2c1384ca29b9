"""The plan of a retrofit: one decision per recurrent call site, made once.

Finding comes before rebuilding. `plan_trainable_initial_states` walks a
model's graph, nested Functional and Sequential submodels included, and
decides for every call of a recurrent layer whether it gets a trainable initial
state, and why not where it does not. Every check is done here, once: the layer
selection, per-state lists against each layer's number of states, the context
and whether it reaches each call, call sites that already pass
`initial_state`. The rewrite executes the plan; the command line prints its
reasons.

The walk also works out where a Keras mask may reach a call only at run time
(Keras 3 hands masks on past submodels that drop them in the graph), so that a
mask is passed explicitly exactly there, and nowhere else: an all-True mask
would only slow the layer down (it disables the fused kernels of some backends).

Recurrent layers whose calls the graph does not show, inside a custom layer
or a subclassed model, are planned too: reached through attributes, they are
replaced by a wrapper (`route="surgery"`, see `surgery.py`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import Any

from rnn_state_rewriter.arguments import check_context, distinct_initializers, per_state
from rnn_state_rewriter.backend import Adapter, adapter_for
from rnn_state_rewriter.generation import Generation, batch_axis, generation_of
from rnn_state_rewriter.layers import TrainableInitialState
from rnn_state_rewriter.options import LayerSelection, RetrofitOptions
from rnn_state_rewriter.states import describe_kind, flatten_shapes, is_stateful, state_shapes
from rnn_state_rewriter.surgery import Site, find_sites

__all__ = [
    "Action",
    "Decision",
    "Plan",
    "PlannedCall",
    "Route",
    "make_plan",
    "plan_trainable_initial_states",
    "recurrent_layers",
    "LayerSelection",
]


class Action(str, enum.Enum):
    """What the retrofit does at a recurrent call site (compares equal to its value: `"add"`, `"skip"`)."""

    ADD = "add"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


class Route(str, enum.Enum):
    """How the retrofit reaches a recurrent layer (compares equal to its value: `"graph"`, `"wrap"`, `"surgery"`)."""

    GRAPH = "graph"  # the graph is rebuilt around its call
    WRAP = "wrap"  # a stateful layer: the graph is rebuilt with a `TrainableInitialStateRNN` around it
    SURGERY = "surgery"  # reached through an attribute, replaced by a `TrainableInitialStateRNN`

    def __str__(self) -> str:
        return self.value


ADD = Action.ADD
SKIP = Action.SKIP


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the retrofit does at one call of a recurrent layer.

    Attributes:
        path: the layer's name, prefixed by `name/` for each submodel (or
            custom layer) it sits in, e.g. `"encoder/lstm"`.
        kind: the kind of layer, e.g. `"LSTM"` or `"Bidirectional(GRU)"`.
        action: `"add"` (it gets a trainable initial state) or `"skip"`.
        reason: why it is skipped; empty when added.
        state_shapes: one shape per state, without batch axis (flattened for
            stacked cells, forward then backward for `Bidirectional`); empty
            where they were not needed.
        layer: the recurrent layer.
        call: which call of the layer this is (0 for its first call site).
        runtime_mask: whether a Keras mask may reach this call only at run
            time, so the rewrite passes it explicitly.
        structure: the state shapes nested as the layer takes them (None
            where skipped).
        route: `"graph"` where the graph is rebuilt around the call (a
            `TrainableInitialState` layer feeds its `initial_state`), `"wrap"`
            for a stateful layer in a graph (rebuilt with a
            `TrainableInitialStateRNN` around it, which resets to the learned
            state), or `"surgery"` where the layer is reached through an
            attribute (in a subclassed model or a custom layer) and replaced
            by a `TrainableInitialStateRNN` around it.
        stateful: whether the layer is stateful (its state carries over
            between batches; a reset returns it to the learned state).
        batch_axis: the axis of the layer's input that holds the batch (1 for
            a `time_major` tf-keras layer).
        initializers: the initializer of each state, each its own draw across
            the model (empty where skipped).
        regularizers: the regularizer of each state (empty where skipped).
        constraints: the constraint of each state (empty where skipped).
        state_name: the name of the new `TrainableInitialState` layer, unique
            in the model (graph route; empty where skipped).
        mask_name: the name of the `SequenceMask` layer that hands the call
            its run-time mask (empty where `runtime_mask` is False).
        context: the name of the model input or layer whose output
            conditions the states (empty: none).
        context_dim: the number of features of a float context (else None).
        num_ids: the number of ids of an integer context (else None).
    """

    path: str
    kind: str
    action: Action
    reason: str = ""
    state_shapes: tuple[tuple[int, ...], ...] = ()
    layer: Any = dataclasses.field(default=None, repr=False, compare=False)
    call: int = 0
    runtime_mask: bool = False
    structure: Any = dataclasses.field(default=None, repr=False, compare=False)
    route: Route = Route.GRAPH
    stateful: bool = False
    batch_axis: int = 0
    initializers: tuple[Any, ...] = dataclasses.field(default=(), repr=False, compare=False)
    regularizers: tuple[Any, ...] = dataclasses.field(default=(), repr=False, compare=False)
    constraints: tuple[Any, ...] = dataclasses.field(default=(), repr=False, compare=False)
    state_name: str = dataclasses.field(default="", repr=False, compare=False)
    mask_name: str = dataclasses.field(default="", repr=False, compare=False)
    context: str = ""
    context_dim: int | None = None
    num_ids: int | None = None
    context_tensor: Any = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Context:
    """The tensor that conditions the new states: a model input or a layer's output in the model's own graph.

    `calls` are the graph's calls in the order the rebuild replays them: those
    the context is computed from first, then the rest, each part in graph
    order. `after` is the position of the call that makes the context in it (-1
    for a model input): only calls after it can take it.
    """

    name: str
    tensor: Any
    after: int
    context_dim: int | None
    num_ids: int | None
    calls: list[Any] = dataclasses.field(default_factory=list, repr=False)


@dataclasses.dataclass(frozen=True)
class PlannedCall:
    """One call in a graph model, as the walk found it, with its decision (None: not a recurrent layer)."""

    layer: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[Any]
    decision: Decision | None


@dataclasses.dataclass
class Plan:
    """Everything a retrofit decided, made by one walk of the model (`make_plan`); the rewrite executes it.

    Attributes:
        adapter: the model's Keras generation.
        model: the model planned.
        options: what the retrofit was asked to do; the executors read it here.
        decisions: one per recurrent call site (graph order), then one per layer
            reached through attributes (`route="surgery"`).
        graphs: the calls of each graph model walked (the model and its graph
            submodels), by `id`, in graph order, each with its decision.
        surgery: the decisions of the layers reached through attributes, by
            the place that holds them (`surgery.Site.path`, attribute names).
        submodels: the graph submodels reached through attributes (inside a
            `TimeDistributed`, a custom layer) that hold layers to add states
            to, by the place that holds them (`surgery.Site.path`); the
            executor rebuilds each from `graphs`. Other graph submodels are
            left as they are.
    """

    adapter: Adapter
    model: Any
    options: RetrofitOptions
    decisions: list[Decision]
    graphs: dict[int, list[PlannedCall]]
    surgery: dict[str, Decision]
    submodels: dict[str, Any] = dataclasses.field(default_factory=dict)

    def added(self) -> list[Decision]:
        """The decisions that add states."""
        return [d for d in self.decisions if d.action is Action.ADD]


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
    return reachable_recurrent_layers(model_adapter(model), model)


def reachable_recurrent_layers(adapter: Adapter, model: Any) -> list[tuple[str, Any]]:
    """`recurrent_layers` of a model whose generation is known."""
    found: list[tuple[str, Any]] = []
    roots = layers_in_tree(adapter, model) if is_graph_model(adapter, model) else [("", model)]
    for prefix, layer in roots:
        if adapter.recurrent_kind(layer) is not None:
            found.append((prefix + layer.name, layer))
        elif not is_graph_model(adapter, layer):
            found += _held(adapter, layer, f"{prefix}{layer.name}/" if layer is not model else "")
    return found


def _held(adapter: Adapter, layer: Any, prefix: str) -> list[tuple[str, Any]]:
    """The recurrent layers a custom layer or subclassed model holds, through graph submodels too."""
    found = []
    for site in find_sites(adapter, layer, prefix):
        if is_graph_model(adapter, site.layer):
            found += [(f"{site.name}/{path}", inner) for path, inner in reachable_recurrent_layers(adapter, site.layer)]
        else:
            found.append((site.name, site.layer))
    return found


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


class Names:
    """New layer names, unique in the model: `name`, else `name_1`, `name_2`, ..."""

    def __init__(self, adapter: Adapter, model: Any) -> None:
        self.taken = {model.name} | {layer.name for layer in adapter.sublayers(model)}

    def new(self, name: str) -> str:
        candidate, suffix = name, 0
        while candidate in self.taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self.taken.add(candidate)
        return candidate


# ----------------------------------------------------------------------------
# The walk
# ----------------------------------------------------------------------------

SiteKey = tuple[int, int]  # (id of the graph model, index of the call site in `adapter.call_sites`)


class Planner:
    """Walks a model's graph once and decides every recurrent call site."""

    def __init__(
        self,
        adapter: Adapter,
        selected: Callable[[str, Any], bool],
        options: RetrofitOptions,
        context: Context | None = None,
    ) -> None:
        self.adapter = adapter
        self.context = context
        self.selected = selected
        self.options = options
        # The per-state values to check against each layer's states.
        self.per_state = {"initializer": options.initializer, "regularizer": options.regularizer}
        self.per_state["constraint"] = options.constraint
        self.sites: dict[SiteKey, Decision] = {}
        self.surgery: dict[str, Decision] = {}  # by path: layers reached through attributes
        self.calls: dict[int, int] = {}
        self.shapes: dict[int, Any] = {}
        self.walked: dict[tuple[int, tuple[bool, ...]], list[bool]] = {}
        self.looked_into: set[int] = set()
        self.submodels: dict[str, Any] = {}  # graph submodels held by attributes with states to add, by place
        self.calls_of: dict[int, list[tuple[Any, tuple[Any, ...], dict[str, Any], list[Any]]]] = {}

    @property
    def decisions(self) -> list[Decision]:
        return [*self.sites.values(), *self.surgery.values()]

    def walk(self, model: Any, prefix: str, masked: tuple[bool, ...]) -> list[bool]:
        """Plans the call sites of a graph model; returns which of its outputs may carry a mask."""
        key = (id(model), masked)
        if key not in self.walked:
            self.walked[key] = self._walk(model, prefix, masked)
        return self.walked[key]

    def _walk(self, model: Any, prefix: str, masked: tuple[bool, ...]) -> list[bool]:
        adapter = self.adapter
        flags: dict[int, bool] = {}

        def flag(tensor: Any) -> bool:
            return flags.get(id(tensor), False) or adapter.mask_of(tensor) is not None

        inputs = adapter.flatten_tensors(adapter.model_inputs(model))
        for tensor, value in zip(inputs, masked or [False] * len(inputs), strict=True):
            flags[id(tensor)] = value
        if id(model) not in self.calls_of:
            self.calls_of[id(model)] = list(adapter.call_sites(model))
        for index, (layer, args, kwargs, outputs) in enumerate(self.calls_of[id(model)]):
            incoming = [flag(t) for t in adapter.flatten_tensors(args) if adapter.is_keras_tensor(t)]
            if adapter.recurrent_kind(layer) is not None:
                self.decide((id(model), index), prefix, layer, args, kwargs, incoming)
                produced = [any(incoming[:1])] * len(outputs)
            elif is_graph_model(adapter, layer):
                inner = len(adapter.flatten_tensors(adapter.model_inputs(layer)))
                given = tuple(incoming) if len(incoming) == inner else (any(incoming),) * inner
                produced = self.walk(layer, f"{prefix}{layer.name}/", given)
            else:
                self.look_into(prefix, layer)
                produced = [any(incoming) and bool(getattr(layer, "supports_masking", False))] * len(outputs)
            for tensor, value in zip(outputs, produced, strict=False):
                flags[id(tensor)] = value
        return [flag(t) for t in adapter.flatten_tensors(adapter.model_outputs(model))]

    def decide(self, key: SiteKey, prefix: str, layer: Any, args: Any, kwargs: Any, incoming: list[bool]) -> None:
        """The decision of one call site (merged if a submodel's call site is walked again)."""
        adapter = self.adapter
        first = adapter.flatten_tensors(args)[0] if args else None
        runtime_mask = bool(adapter.RUNTIME_MASKS and incoming[:1] == [True] and adapter.mask_of(first) is None)
        if key in self.sites:
            known = self.sites[key]
            self.sites[key] = dataclasses.replace(known, runtime_mask=known.runtime_mask or runtime_mask)
            return
        call = self.calls.get(id(layer), 0)
        self.calls[id(layer)] = call + 1
        path = prefix + layer.name
        decision = Decision(
            path,
            describe_kind(layer),
            ADD,
            layer=layer,
            call=call,
            runtime_mask=runtime_mask,
            stateful=is_stateful(layer),
            batch_axis=batch_axis(layer),
        )
        reason = self.reason_to_skip(path, layer, args, kwargs)
        if reason:
            self.sites[key] = dataclasses.replace(decision, action=SKIP, reason=reason, runtime_mask=False)
            return
        structure = self.structure(path, layer)
        flat = tuple(tuple(s) for s in flatten_shapes(structure))
        route = Route.WRAP if decision.stateful else Route.GRAPH
        self.sites[key] = dataclasses.replace(decision, state_shapes=flat, structure=structure, route=route)

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

    def plan(self, model: Any) -> Plan:
        """The plan of the walk: each added decision with its per-state options, each graph's calls."""
        options = self.per_state_options()
        names = Names(self.adapter, model)
        state_names: dict[int, str] = {}
        sites = {}
        for key, decision in self.sites.items():  # in graph order, as the rebuild meets them
            if decision.action is Action.ADD:
                layer = decision.layer
                if id(layer) not in state_names:  # a wrapper takes the name of the layer it replaces
                    wrapped = decision.route is Route.WRAP
                    state_names[id(layer)] = layer.name if wrapped else names.new(f"{layer.name}_initial_state")
                mask_name = names.new(f"{layer.name}_mask") if decision.runtime_mask else ""
                options[id(layer)] = {**options[id(layer)], "state_name": state_names[id(layer)]}
                decision = dataclasses.replace(decision, mask_name=mask_name, **self.conditioning(key, model, decision))
            sites[key] = dataclasses.replace(decision, **options.get(id(decision.layer), {}))
        for decision in self.surgery.values():
            if decision.action is Action.ADD:
                self.conditioning(None, model, decision)
        surgery = {path: dataclasses.replace(d, **options.get(id(d.layer), {})) for path, d in self.surgery.items()}
        graphs = {
            graph: [PlannedCall(*call, sites.get((graph, index))) for index, call in enumerate(calls)]
            for graph, calls in self.calls_of.items()
        }
        decisions = [*sites.values(), *surgery.values()]
        return Plan(self.adapter, model, self.options, decisions, graphs, surgery, dict(self.submodels))

    def conditioning(self, key: SiteKey | None, model: Any, decision: Decision) -> dict[str, Any]:
        """The context fields of a decision that adds states; the context must reach its call.

        Raises:
            ValueError: where the call is not in the model's own graph, or comes
                before the context is computed.
        """
        context = self.context
        if context is None:
            return {}
        if key is None or key[0] != id(model):
            raise ValueError(
                f"Argument `context` conditions the states of the recurrent layers in the graph of model "
                f"'{model.name}' itself, but layer '{decision.path}' is inside a submodel or a custom "
                "layer, which the context does not reach. Leave it out with `layers=`, or pass the context "
                f"into that submodel as one of its inputs. Received: context={context.name!r}"
            )
        if key[1] <= context.after:
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

    def per_state_options(self) -> dict[int, dict[str, Any]]:
        """The initializer, regularizer and constraint of each state of every layer that gets states.

        One initializer object used for every state of every layer would give them
        all the same values; `distinct_initializers` re-seeds its later uses, so
        each state is its own draw across the model.
        """
        api = self.adapter.keras_api
        layers = {id(d.layer): d for d in self.decisions if d.action is Action.ADD}
        counts = {key: len(d.state_shapes) for key, d in layers.items()}

        def each(argument: str, key: int) -> list[Any]:
            return per_state(self.per_state[argument], counts[key], argument, f"layer '{layers[key].path}'")

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

    def look_into(self, prefix: str | None, layer: Any) -> None:
        """Plans the recurrent layers a custom layer or subclassed model holds: reached by surgery."""
        if id(layer) in self.looked_into:
            return
        self.looked_into.add(id(layer))
        inner = f"{prefix}{layer.name}/" if prefix is not None else ""
        for site in find_sites(self.adapter, layer, inner):
            if is_graph_model(self.adapter, site.layer):
                self.walk(site.layer, site.name + "/", ())
                if any(d.action is ADD and d.path.startswith(site.name + "/") for d in self.decisions):
                    self.submodels[site.path] = site.layer
            elif site.path not in self.surgery:
                self.surgery[site.path] = self.decide_surgery(site)

    def decide_surgery(self, site: Site) -> Decision:
        layer = site.layer
        decision = Decision(
            site.name,
            describe_kind(layer),
            ADD,
            layer=layer,
            route=Route.SURGERY,
            stateful=is_stateful(layer),
            batch_axis=batch_axis(layer),
        )
        if self.adapter.recurrent_kind(layer) == "trainable":
            return dataclasses.replace(decision, action=SKIP, reason="already has a trainable initial state")
        if not self.selected(site.name, layer):
            return dataclasses.replace(decision, action=SKIP, reason="not selected")
        structure = self.structure(site.name, layer)
        flat = tuple(tuple(s) for s in flatten_shapes(structure))
        return dataclasses.replace(decision, state_shapes=flat, structure=structure)


def make_plan(model: Any, options: RetrofitOptions) -> Plan:
    """Walks `model` once and returns the plan the rewrite executes (see `plan_trainable_initial_states`)."""
    adapter = model_adapter(model)
    conditioning = find_context(adapter, model, options.context, options.num_ids)
    found = reachable_recurrent_layers(adapter, model)
    selected = selector(options.layers, found)
    if options.layers is not None and found and not any(selected(path, layer) for path, layer in found):
        raise ValueError(
            f"Argument `layers` selects none of the recurrent layers of model '{model.name}': "
            f"{[path for path, _ in found]}. Received: layers={options.layers!r}"
        )
    planner = Planner(adapter, selected, options, conditioning)
    if conditioning is not None:  # the rebuild replays the calls that compute the context first
        planner.calls_of[id(model)] = conditioning.calls
    if is_graph_model(adapter, model):
        planner.walk(model, "", ())
    else:
        planner.look_into(None, model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no recurrent layer (RNN, LSTM, GRU, SimpleRNN, "
            "ConvLSTM or Bidirectional) to give a trainable initial state."
        )
    return planner.plan(model)


def find_context(adapter: Adapter, model: Any, name: Any, num_ids: Any) -> Context | None:
    """The context named `name` in the model's own graph, checked: floats `(batch, d)`, or ids with `num_ids`.

    Raises:
        TypeError: if `name` is not a string.
        ValueError: if it names nothing, a layer with several outputs or calls,
            or a tensor of the wrong rank or dtype.
    """
    owner = "`add_trainable_initial_states`"
    if name is None:
        if num_ids is not None:
            raise ValueError(f"Argument `num_ids` needs `context=`: the ids it counts. Received: num_ids={num_ids!r}")
        return None
    if not isinstance(name, str):
        raise TypeError(
            f"Argument `context` must be the name of a model input or layer. Received: context of type "
            f"{type(name).__name__}"
        )
    _, num_ids = check_context(None, num_ids, owner)
    if not is_graph_model(adapter, model):
        raise ValueError(
            f"Argument `context` needs a Functional or Sequential model, whose graph can pass it on; model "
            f"'{model.name}' is a subclassed {type(model).__name__}. Received: context={name!r}"
        )
    found: dict[str, list[tuple[int, Any]]] = {}
    for tensor in adapter.flatten_tensors(adapter.model_inputs(model)):
        found.setdefault(adapter.layer_of(tensor).name, []).append((-1, tensor))
    calls = list(adapter.call_sites(model))
    for index, (layer, _, _, outputs) in enumerate(calls):
        found.setdefault(layer.name, []).extend((index, output) for output in outputs)
    index, tensor = _named_tensor(model, found, name)
    first = _computing(adapter, calls, index)
    calls = [calls[i] for i in first] + [call for i, call in enumerate(calls) if i not in set(first)]
    after = len(first) - 1
    shape, dtype = tuple(tensor.shape), str(getattr(tensor.dtype, "name", tensor.dtype))
    if num_ids is not None:
        if "int" not in dtype or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise ValueError(
                f"Argument `context` with `num_ids` must name integer ids of shape (batch,) or (batch, 1); "
                f"'{name}' gives {dtype} of shape {shape}. Received: context={name!r}, num_ids={num_ids}"
            )
        return Context(name, tensor, after, None, num_ids, calls)
    if "int" in dtype:
        raise ValueError(
            f"Argument `context` names '{name}', which gives integer ids ({dtype}): pass `num_ids=` (how many "
            f"ids there are) to learn one state per id. Received: context={name!r}"
        )
    if "float" not in dtype or len(shape) != 2 or shape[1] is None:
        raise ValueError(
            f"Argument `context` must name floats of shape (batch, features), with features known; '{name}' "
            f"gives {dtype} of shape {shape}. Received: context={name!r}"
        )
    return Context(name, tensor, after, int(shape[1]), None, calls)


def _named_tensor(model: Any, found: dict[str, list[tuple[int, Any]]], name: str) -> tuple[int, Any]:
    """`(call index, tensor)` of `NAME`, or of `NAME:K`, the K-th tensor a layer with several outputs (or
    calls) gives, in graph order."""
    base, _, position = name.rpartition(":")
    if name not in found and base in found and position.isdigit() and int(position) < len(found[base]):
        return found[base][int(position)]
    if name not in found:
        raise ValueError(
            f"Argument `context` names no input or layer of model '{model.name}'. Inputs and layers of its "
            f"graph: {sorted(found)}. Received: context={name!r}"
        )
    if len(found[name]) != 1:
        raise ValueError(
            f"Argument `context` must name one tensor, but '{name}' gives {len(found[name])} (a layer with "
            f"several outputs, or called several times): name one as '{name}:K', K from 0 to "
            f"{len(found[name]) - 1}. Received: context={name!r}"
        )
    return found[name][0]


def _computing(adapter: Adapter, calls: list[Any], index: int) -> list[int]:
    """The indices of the calls a graph's call `index` depends on, itself included, in graph order."""
    made_by = {id(output): i for i, (_, _, _, outputs) in enumerate(calls) for output in outputs}
    needed: set[int] = set()
    pending = [index] if index >= 0 else []
    while pending:
        current = pending.pop()
        if current in needed:
            continue
        needed.add(current)
        _, args, kwargs, _ = calls[current]
        for value in adapter.flatten_tensors((args, kwargs)):
            if adapter.is_keras_tensor(value) and id(value) in made_by:
                pending.append(made_by[id(value)])
    return sorted(needed)


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

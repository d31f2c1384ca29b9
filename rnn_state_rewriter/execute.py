"""The executors: the plan carried out, looking decisions up by key, deciding nothing.

`Executor.run` makes the copy: a graph model's graph rebuilt, a subclassed
model copied from its config (`state_copy.copy_model`) or, with `in_place`,
changed itself; then the layers its attributes hold are operated on; then, as
the options say, every pre-existing weight frozen and the copy compiled like
the original. The graph route (`_rebuild_graph`) replays each graph's planned calls with a
`TrainableInitialState` in front of each call site that gets states, or a
`TrainableInitialStateRNN` around a stateful layer; surgery (`Executor` as the
replacement function of `surgery.replace`) wraps a recurrent layer held by an
attribute, and rebuilds a graph submodel held by one from the same plan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from rnn_state_rewriter import surgery
from rnn_state_rewriter.layers import SequenceMask, classes_of
from rnn_state_rewriter.plan import Action, Decision, Plan, Route
from rnn_state_rewriter.rebuild import GraphRebuild, Site
from rnn_state_rewriter.state_copy import compile_like, copy_model, freeze_all_but_states
from rnn_state_rewriter.walk import is_graph_model

__all__ = ["Executor"]


def _rebuild_graph(plan: Plan, graph: Any) -> tuple[Any, list[Any], GraphRebuild]:
    """The graph route over `graph` (the model or a graph submodel the plan walked): a `TrainableInitialState`
    in front of each call site the plan adds states to, or, for a stateful layer, a `TrainableInitialStateRNN`
    around it (route `"wrap"`)."""
    adapter = plan.adapter
    made: dict[int, Any] = {}

    def options(decision: Decision) -> dict[str, Any]:
        return {
            "initializer": list(decision.initializers),
            "regularizer": list(decision.regularizers),
            "constraint": list(decision.constraints),
            "noise_stddev": plan.options.noise_stddev,
            "context_dim": decision.context_dim,
            "num_ids": decision.num_ids,
            "name": decision.state_name,
        }

    def state_layer_for(decision: Decision) -> Any:
        layer = decision.layer
        if id(layer) not in made:
            made[id(layer)] = classes_of(adapter.GENERATION).state(
                decision.structure, batch_axis=decision.batch_axis, dtype=layer.dtype_policy, **options(decision)
            )
        return made[id(layer)]

    def wrapper_for(decision: Decision, clone: Any) -> Any:
        if id(decision.layer) not in made:
            made[id(decision.layer)] = classes_of(adapter.GENERATION).wrapper(clone, **options(decision))
        return made[id(decision.layer)]

    def on_call(site: Site) -> Any:
        decision = site.decision
        if decision is None or decision.action is not Action.ADD:
            return site.call_plain(adapter)
        args, kwargs, _ = adapter.split_initial_state(site.new_layer, site.args, site.kwargs)
        context = {"context": rebuild.new_tensor(decision.context_tensor)} if decision.context else {}
        mask = functools.partial(_run_time_mask, decision.mask_name) if decision.mask_name else None
        if decision.route is Route.WRAP:
            wrapper = wrapper_for(decision, site.new_layer)
            return adapter.call_with_initial_state(wrapper, args, {**kwargs, **context}, None, runtime_mask=mask)
        states = state_layer_for(decision)(args[0], **context)
        return adapter.call_with_initial_state(site.new_layer, args, kwargs, states, runtime_mask=mask)

    inventory = plan.inventory
    rebuild = GraphRebuild(
        adapter, lambda model: plan.graphs[id(model)], lambda model: inventory.trees[id(model)], on_call
    )
    return rebuild(graph), list(made.values()), rebuild


def _run_time_mask(name: str, sequences: Any) -> Any:
    """The mask that reaches `sequences` at run time, from a `SequenceMask` layer named `name` (Keras 3)."""
    return SequenceMask(name=name)(sequences)


class Executor:
    """Executes the plan: the graph route over graph models, and surgery on what their layers' attributes hold.

    A recurrent layer reached through an attribute that the plan adds states to
    gets a `TrainableInitialStateRNN` around it, named as it is; a graph
    submodel reached that way (inside a `TimeDistributed`, a custom layer) gets
    the graph route from the same plan, which walked it.
    """

    def __init__(self, plan: Plan) -> None:
        self.adapter = plan.adapter
        self.plan = plan
        self.variables: list[Any] = []
        self.made: set[int] = set()

    def run(self, first_call: Callable[[Any], Any]) -> tuple[Any, GraphRebuild | None]:
        """The retrofitted model, and the rebuild of its graph (None for a subclassed model).

        `first_call(copy)` calls a subclassed model's copy once, where building
        it leaves weights to create.
        """
        adapter, model, options = self.adapter, self.plan.model, self.plan.options
        rebuild = None
        if is_graph_model(adapter, model):
            new_model, rebuild = self.graph(model, "")
        else:
            new_model = model if options.in_place else copy_model(adapter, model, first_call)
            self.operate(model, new_model)
        if options.freeze_base:
            freeze_all_but_states(adapter, new_model)
        if not options.in_place:
            compile_like(adapter, new_model, model)
        return new_model, rebuild

    def graph(self, model: Any, prefix: str) -> tuple[Any, GraphRebuild]:
        """The copy of graph model `model` (planned at `prefix`), its layers' attributes operated on."""
        new_model, state_layers, rebuild = _rebuild_graph(self.plan, model)
        self.variables += [v for layer in state_layers for v in [*layer.state_variables, *layer.context_maps]]
        for inner, layer in self.plan.inventory.trees[id(model)]:
            clone = rebuild.clones.get(id(layer))
            if self.plan.inventory.sites.get(id(layer)) and clone is not None:
                self.operate(layer, clone, f"{prefix}{inner}{layer.name}/")
        return new_model, rebuild

    def operate(self, original: Any, copy: Any, prefix: str = "") -> None:
        """Surgery on `copy` at the places the walk found in `original` (named from `prefix`), looked up by
        their steps; then `copy` remembers the wrappers made here, for saving (`surgery.remember`)."""
        sites = [surgery.resolve(self.adapter, copy, site) for site in self.plan.inventory.sites[id(original)]]
        surgery.replace(self.adapter, sites, self)
        surgery.remember(self.adapter, copy, sites, prefix, self.made)

    def __call__(self, site: surgery.Site) -> Any:
        if is_graph_model(self.adapter, site.layer):
            original = self.plan.submodels.get(site.path)  # the copy holds a copy: rebuilt from the original
            if original is None:  # nothing to add inside (a `TimeDistributed` of Dense layers)
                return None
            return self.graph(original, site.name + "/")[0]
        decision = self.plan.surgery.get(site.path)
        if decision is None or decision.action is not Action.ADD:
            return None
        wrapper = classes_of(self.adapter.GENERATION).wrapper(
            site.layer,
            initializer=list(decision.initializers),
            regularizer=list(decision.regularizers),
            constraint=list(decision.constraints),
            noise_stddev=self.plan.options.noise_stddev,
            name=site.layer.name,
        )
        self.adapter.build_in_place_of(wrapper, site.layer)
        self.variables += wrapper.state_variables
        self.made.add(id(wrapper))
        return wrapper

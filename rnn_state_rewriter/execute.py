"""The executors: the plan carried out, looking decisions up by key, deciding nothing.

The graph route (`_rebuild_graph`) replays each graph's planned calls with a
`TrainableInitialState` in front of each call site that gets states, or a
`TrainableInitialStateRNN` around a stateful layer; surgery (`Executor` as the
replacement function of `surgery.replace`) wraps a recurrent layer held by an
attribute, and rebuilds a graph submodel held by one from the same plan.
"""

from __future__ import annotations

import functools
from typing import Any

from rnn_state_rewriter import surgery
from rnn_state_rewriter.layers import SequenceMask, classes_of
from rnn_state_rewriter.plan import Action, Decision, Plan, Route
from rnn_state_rewriter.rebuild import GraphRebuild, Site
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
        their steps; then `copy` remembers the wrappers for saving."""
        sites = [surgery.resolve(self.adapter, copy, site) for site in self.plan.inventory.sites[id(original)]]
        surgery.replace(self.adapter, sites, self)
        self.remember(copy, sites, prefix)

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

    def remember(self, root: Any, sites: list[surgery.Site], prefix: str) -> None:
        """Lets `root` save where the wrappers made here are (at `sites`, named from `prefix`), so that a
        `.keras` file loads them back.

        A wrapper that its owner's config carries already (the `layer` of a
        `TimeDistributed`) loads back through that config: the owner keeps its class.
        """
        now = [surgery.resolve(self.adapter, root, site) for site in sites]  # what each place holds now
        wrapped = {
            site.path[len(prefix) :]: surgery.wrapper_options(site.layer)
            for site in now
            if id(site.layer) in self.made and not surgery.config_holds(self.adapter, site.owner, site.layer)
        }
        if wrapped:
            surgery.remember(self.adapter, root, wrapped)

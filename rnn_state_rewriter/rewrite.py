"""The graph rewrite: add or remove trainable initial states in a built model.

Data flows one way: model -> plan (`plan.py`: one walk, one decision per
recurrent call site, with everything the rebuild needs) -> every layer cloned
(`layer_copy.py`) -> the plan's calls replayed into a new graph -> weights copied
-> self-check (`check.py`). The rebuild executes the plan: it walks no graph
again and decides nothing. The same code serves both Keras generations, through
the model's `Adapter`.

Cloned layers are built with zeros initializers swapped in (their original
initializers are put back right after, so configs are unchanged): the
pretrained weights overwrite whatever an initializer would produce, so running
orthogonal or glorot initializers on a large model would be wasted time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from rnn_state_rewriter import surgery
from rnn_state_rewriter.backend import Adapter, adapter_for
from rnn_state_rewriter.check import (
    Probe,
    call_model,
    check_copy,
    first_differing,
    needs_check,
    probe_batch,
    run_model,
)
from rnn_state_rewriter.layer_copy import (
    build_sublayers_like,
    clone_layer,
    compile_like,
    copy_weights,
    name_sublayers_like,
)
from rnn_state_rewriter.layers import SequenceMask, TrainableInitialState, classes_of
from rnn_state_rewriter.options import LayerSelection, RetrofitOptions
from rnn_state_rewriter.plan import (
    Action,
    Decision,
    Plan,
    PlannedCall,
    Route,
    is_graph_model,
    layers_in_tree,
    make_plan,
    model_adapter,
    state_layer_feeding,
)
from rnn_state_rewriter.rebuild import MISSING, GraphRebuild, Site
from rnn_state_rewriter.states import is_stateful, reset_carried_state

__all__ = [
    "add_trainable_initial_states",
    "remove_trainable_initial_states",
    "initial_states",
    "context_maps",
    "reset_states",
]


# ----------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------


def add_trainable_initial_states(
    model: Any,
    *,
    layers: LayerSelection = None,
    initializer: Any = "zeros",
    regularizer: Any = None,
    constraint: Any = None,
    noise_stddev: float = 0.0,
    context: str | None = None,
    num_ids: int | None = None,
    freeze_base: bool = False,
    check: bool | Literal["auto"] = "auto",
    sample: Any = None,
    in_place: bool = False,
) -> Any:
    """Returns a copy of `model` whose recurrent layers start from trainable states.

    The model is cloned; a `TrainableInitialState` layer named
    `<rnn name>_initial_state` is inserted in front of each selected recurrent
    layer, which is then called with `initial_state=` its outputs; every
    pretrained weight is copied. The original is left untouched and shares no
    variable with the result. With the default zeros initializer the result
    predicts exactly what the original predicts.

    Recurrent layers inside nested Functional or Sequential submodels are
    rewritten too; a layer used at several call sites gets one set of states.
    A stateful layer (`stateful=True`) is replaced by a
    `TrainableInitialStateRNN` around it, named as it was: it starts from the
    learned state, carries its state from batch to batch as before, and
    returns to the learned state on reset (`reset_states(model)`, the
    wrapper's `reset_state()`, tf-keras' `model.reset_states()`).
    Recurrent layers the graph does not show (held by a subclassed model, a
    custom layer or a wrapper such as `TimeDistributed`, at any depth) are
    replaced in the copy by a `TrainableInitialStateRNN` around their copied
    weights, named as they were, whose
    `get_initial_state` gives the learned state and which keeps an
    `initial_state` its caller passes. Left alone: call sites that already pass
    `initial_state` (a decoder fed by its encoder, or a layer already rewritten,
    so applying this twice adds nothing) and `TrainableInitialStateRNN` layers.
    `plan_trainable_initial_states` tells what will be done, and why.

    With `context=NAME`, every new state is conditioned on the output of the
    model input or layer `NAME`: floats of shape `(batch, features)` add a
    learned linear map of them to the learned state; integer ids of shape
    `(batch,)` or `(batch, 1)`, with `num_ids=N`, add a learned state per id.
    The maps start at zero, so the retrofit still predicts what the original
    predicts; `context_maps` reads them.

    Every layer is rebuilt as Keras' own saving rebuilds it (its config
    serialized, then its class's `from_config`), with the custom classes and
    functions the model holds in scope: no registration is needed. Every
    variable keeps its path. Its whole state is copied as Keras' own saving
    keeps it: variables, what `save_own_variables` saves (an adapted
    `Normalization`'s statistics), and a lookup layer's vocabulary (in memory:
    any term). A subclassed model is copied from its config, as Keras'
    `clone_model` copies it, its sublayers named as the original's.

    The copy checks itself where its construction cannot vouch for it (a
    subclassed model, a custom layer, a layer whose state is more than its
    variables; not a `Lambda`, whose copy holds the same function): it runs
    the original and the copy, with the new states at zero, on a small probe
    batch made from the input specs or the shapes a subclassed model was
    built on (or on `sample`), and raises `RetrofitMismatchError` naming the
    first layer whose outputs differ rather than return a model that predicts
    otherwise.
    A model of built-in layers whose whole state is their variables is exact
    by construction and is not run unless `check=True`. A layer
    that cannot be rebuilt from its config is reused by the copy if it owns no
    variables. A Sequential model comes back as a Functional model with the
    same layers. If `model` was compiled, the result is compiled with the same
    loss objects and functions, fresh metric objects and a fresh optimizer of
    the same configuration.

    Args:
        model: a built Keras model, `keras` or `tf_keras`: Functional,
            Sequential or subclassed.
        layers: which recurrent layers to rewrite: None for all, a list of
            names (`"lstm"`, or paths of Keras names: `"submodel/lstm"`,
            `"time_distributed/gru"`) or classes, or a predicate `layer -> bool`.
        initializer: initializer of the states: one for all, or a list with one
            per state (it must match every selected layer's number of states).
        regularizer: regularizer of the states, one or a list.
        constraint: constraint of the states, one or a list.
        noise_stddev: Gaussian noise added to the states in training only.
        context: the name of a model input or layer, in the model's own
            graph, whose output conditions every new state (`"name:K"`: the
            K-th tensor of a layer with several outputs; None: none).
        num_ids: with an integer `context`, how many ids it holds (ids run
            from 0 to `num_ids - 1`).
        freeze_base: if True, every pre-existing weight becomes non-trainable,
            so only the initial states train.
        check: `"auto"` (the default) to compare the copy with the original
            on a probe batch where the construction cannot vouch for the copy;
            True to compare always; False never.
        sample: inputs for that comparison (a small batch, nested as the
            model's inputs; a tuple of the arguments of a subclassed model's
            `call` where it takes several); None to make one.
        in_place: for a subclassed model that cannot be copied from its
            config: retrofit the model itself (checked against its outputs
            before the change) and return it.

    Returns:
        A new model of the same Keras generation.

    Raises:
        TypeError: if `model` is not a Keras model, or holds a layer that
            owns variables and cannot be rebuilt from its config (checked
            before anything is built; a subclassed model that cannot be copied
            can be retrofitted with `in_place=True`).
        ValueError: if the model is not built, has no recurrent layer the
            rewrite can reach (the message names those it cannot reach),
            `layers` names an unknown layer, a per-state list does not match
            a layer, `noise_stddev` is negative, `check` is not one of its
            values, a layer that creates its weights on first call has never
            been called, or `context` names no tensor of the model's own graph,
            one of the wrong rank or dtype, one computed from a layer it would
            condition, or the model has selected recurrent layers the context
            does not reach (inside submodels or custom layers).
        RetrofitMismatchError: (a `ValueError`) if the copy does not predict
            what the original predicts; its `layer` names the first layer
            whose outputs differ. A plain `ValueError`, in one line naming
            `sample=` and `check=False`, if the original cannot run on the
            probe batch.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential(
    ...     [keras.Input((6, 2)), keras.layers.LSTM(4, name="lstm"), keras.layers.Dense(1)]
    ... )
    >>> new_model = rsr.add_trainable_initial_states(model)
    >>> x = np.random.rand(3, 6, 2)
    >>> bool(np.allclose(model.predict(x, verbose=0), new_model.predict(x, verbose=0)))
    True
    >>> [layer.name for layer in new_model.layers if "initial_state" in layer.name]
    ['lstm_initial_state']

    ```
    """
    options = RetrofitOptions(
        layers=layers,
        initializer=initializer,
        regularizer=regularizer,
        constraint=constraint,
        noise_stddev=noise_stddev,
        context=context,
        num_ids=num_ids,
        freeze_base=freeze_base,
        check=check,
        sample=sample,
        in_place=in_place,
    )
    return retrofit(model, options)[0]


def retrofit(model: Any, options: RetrofitOptions, plan: Plan | None = None) -> tuple[Any, Probe | None]:
    """`add_trainable_initial_states`, also returning what its self-check measured (None if not checked).

    `plan`, if given, is the plan of `model` made with the same options
    (`make_plan`), executed as it is.
    """
    if plan is None:
        plan = make_plan(model, options)
    elif plan.model is not model:
        raise ValueError(f"Argument `plan` is the plan of model '{plan.model.name}', not of model '{model.name}'")
    adapter = plan.adapter
    graph = is_graph_model(adapter, model)
    if options.in_place and graph:
        raise ValueError(
            f"Argument `in_place=True` is for subclassed models; model '{model.name}' is a "
            f"{type(model).__name__} model, which is always copied. Received: in_place=True"
        )
    run_check = options.run_check
    if run_check is None:
        run_check = options.sample is not None or needs_check(adapter, model) is not None
    wrap = _Wrap(plan)
    expected = None
    sample = options.sample
    if graph:
        new_model, rebuild = wrap.graph(model, "")
        variables: list[Any] = []
        diagnose = functools.partial(first_differing, adapter, rebuild.outputs, model, new_model)
    else:
        given = sample
        inputs = functools.cache(lambda: probe_batch(adapter, model) if given is None else given)
        if options.in_place:
            expected = run_model(adapter, model, inputs()) if run_check else None
            new_model = model
        else:
            new_model = copy_subclassed(adapter, model, inputs)
        surgery.replace(adapter, surgery.find_sites(adapter, new_model), wrap)
        wrap.remember(new_model)
        sample, variables, diagnose = (inputs() if run_check else None), [], None
    variables += wrap.variables
    probe = None
    if run_check:
        probe = check_copy(
            adapter, model, new_model, state_variables=variables, sample=sample, expected=expected, diagnose=diagnose
        )
    if options.freeze_base:
        _freeze_all_but_states(adapter, new_model)
    if not options.in_place:
        compile_like(adapter, new_model, model)
    return new_model, probe


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

    rebuild = GraphRebuild(adapter, lambda model: plan.graphs[id(model)], on_call)
    return rebuild(graph), list(made.values()), rebuild


def _run_time_mask(name: str, sequences: Any) -> Any:
    """The mask that reaches `sequences` at run time, from a `SequenceMask` layer named `name` (Keras 3)."""
    return SequenceMask(name=name)(sequences)


class _Wrap:
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
        adapter = self.adapter
        new_model, state_layers, rebuild = _rebuild_graph(self.plan, model)
        self.variables += [v for layer in state_layers for v in [*layer.state_variables, *layer.context_maps]]
        for inner, layer in layers_in_tree(adapter, new_model):
            if not is_graph_model(adapter, layer) and adapter.recurrent_kind(layer) is None:
                surgery.replace(adapter, surgery.find_sites(adapter, layer, f"{prefix}{inner}{layer.name}/"), self)
                self.remember(layer)
        return new_model, rebuild

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

    def remember(self, root: Any) -> None:
        """Lets `root` save where the wrappers made here are, so that a `.keras` file loads them back.

        A wrapper that its owner's config carries already (the `layer` of a
        `TimeDistributed`) loads back through that config: the owner keeps its class.
        """
        wrapped = {
            site.path: surgery.wrapper_options(site.layer)
            for site in surgery.find_sites(self.adapter, root)
            if id(site.layer) in self.made and not surgery.config_holds(self.adapter, site.owner, site.layer)
        }
        if wrapped:
            surgery.remember(self.adapter, root, wrapped)


def state_layers_in(adapter: Adapter, model: Any) -> list[Any]:
    """The `TrainableInitialState` layers and wrappers anywhere in a model."""
    return [
        layer
        for layer in adapter.sublayers(model)
        if isinstance(layer, TrainableInitialState) or adapter.recurrent_kind(layer) == "trainable"
    ]


def copy_subclassed(
    adapter: Adapter, model: Any, inputs: Callable[[], Any], skip: Callable[[Any], bool] | None = None
) -> Any:
    """A copy of a subclassed model, made as Keras copies it: from its config, built, its whole state copied.

    `inputs()` gives a batch to call the copy on, where building it from its
    build config leaves weights to create.

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
    copy_weights(adapter, [(model, copy)], lambda: call_model(copy, inputs()), skip=skip)
    return copy


def _freeze_all_but_states(adapter: Adapter, model: Any) -> None:
    """Every pre-existing layer non-trainable; the state layers and wrappers (their states) stay trainable."""
    for layer in adapter.sublayers(model):
        if isinstance(layer, (adapter.keras_api.Model, TrainableInitialState)):
            continue
        if adapter.recurrent_kind(layer) == "trainable":
            layer.layer.trainable = False
            continue
        layer.trainable = False


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
    adapter = model_adapter(model)

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

    def unwrap(layer: Any, original: Any = None) -> None:
        """Unwraps what `layer` holds; a graph submodel is removed from `original`'s at the same place."""
        if is_graph_model(adapter, layer) or adapter.recurrent_kind(layer) is not None:
            return
        held = {site.path: site.layer for site in surgery.find_sites(adapter, original)} if original else {}

        def removed(site: surgery.Site) -> Any:  # a graph submodel with nothing added is kept as it was copied
            submodel = held.get(site.path, site.layer)
            if not any(_is_added(adapter)(sub) for _, sub in layers_in_tree(adapter, submodel)):
                return None
            return remove_trainable_initial_states(submodel)

        surgery.unwrap_all(adapter, layer, removed)

    if not is_graph_model(adapter, model):
        new_model = copy_subclassed(adapter, model, lambda: probe_batch(adapter, model), skip=_is_added(adapter))
        unwrap(new_model, model)
        compile_like(adapter, new_model, model)
        return new_model

    def calls(graph: Any) -> list[PlannedCall]:
        return [PlannedCall(*call, None) for call in adapter.call_sites(graph)]

    def unwrap_carried(layer: Any, clone: Any) -> None:
        if not surgery.is_pending(clone):
            unwrap(clone, layer)

    # Wrappers a clone's config carries (a `TimeDistributed`'s) go before it is built, so that the layers
    # they wrapped are built in their place, with their variable paths (a graph submodel there is removed
    # from the original's, built where it was); those a clone puts back once built (`surgery.Remembers`)
    # go after.
    rebuild = GraphRebuild(adapter, calls, on_call, substitute, skip=_is_added(adapter), prepare=unwrap_carried)
    new_model = rebuild(model)
    for _, layer in layers_in_tree(adapter, new_model):
        unwrap(layer)
    compile_like(adapter, new_model, model)
    return new_model


def _is_added(adapter: Adapter) -> Callable[[Any], bool]:
    """Whether a layer is one the retrofit added (a wrapper, a state layer, a mask), which a removal drops."""
    return lambda layer: (
        isinstance(layer, (TrainableInitialState, SequenceMask)) or (adapter.recurrent_kind(layer) == "trainable")
    )


def initial_states(model: Any) -> dict[str, list[np.ndarray]]:
    """The learned initial states of a model, by recurrent layer.

    Args:
        model: a model returned by `add_trainable_initial_states` (or any
            Functional or Sequential model with `TrainableInitialState` layers or
            `TrainableInitialStateRNN` wrappers), `keras` or `tf_keras`.

    Returns:
        A dict keyed by the recurrent layer's path of Keras names, as in its
        variable paths (`lstm`, `submodel/lstm`, `time_distributed/gru`,
        `my_layer/gru`), each value a list with one array per state (flattened for
        stacked cells, forward then backward for `Bidirectional`), without the
        batch axis. States conditioned on a context add its map to these
        (`context_maps`).

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential([keras.Input((6, 2)), keras.layers.LSTM(4, name="lstm")])
    >>> states = rsr.initial_states(rsr.add_trainable_initial_states(model))
    >>> {name: [s.shape for s in values] for name, values in states.items()}
    {'lstm': [(4,), (4,)]}

    ```
    """
    return _state_values(model, "state_variables")


def context_maps(model: Any) -> dict[str, list[np.ndarray]]:
    """The learned maps from a context to the initial states, by recurrent layer (those conditioned on one).

    Each state's map is a kernel of shape `(features, prod(state_shape))` for a
    float context (the state is `initial_state + context @ kernel`, reshaped),
    or a table of shape `(num_ids, *state_shape)` for ids (the state is
    `initial_state + table[id]`).

    Args:
        model: a model returned by `add_trainable_initial_states(..., context=...)`,
            or any model with such layers, `keras` or `tf_keras`.

    Returns:
        A dict keyed as `initial_states`, with one array per state, for the
        layers whose states are conditioned on a context.

    Example:

    ```python
    >>> import keras
    >>> import rnn_state_rewriter as rsr
    >>> series = keras.Input((6, 2), name="series")
    >>> series_id = keras.Input((), dtype="int32", name="series_id")
    >>> model = keras.Model([series, series_id], keras.layers.GRU(4, name="gru")(series))
    >>> new_model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=10)
    >>> {name: [m.shape for m in maps] for name, maps in rsr.context_maps(new_model).items()}
    {'gru': [(10, 4)]}

    ```
    """
    return {name: maps for name, maps in _state_values(model, "context_maps").items() if maps}


def _state_values(model: Any, attribute: str) -> dict[str, list[np.ndarray]]:
    """The values of `attribute` (a list of variables) of every state layer and wrapper, by recurrent layer."""
    adapter = model_adapter(model)
    result: dict[str, list[np.ndarray]] = {}

    def values(layer: Any) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in getattr(layer, attribute)]

    def add_call_sites(container: Any, prefix: str) -> None:
        for layer, args, kwargs, _ in adapter.call_sites(container):
            if adapter.recurrent_kind(layer) in ("rnn", "bidirectional"):
                state_layer = state_layer_feeding(adapter, layer, args, kwargs)
                if state_layer is not None:
                    result.setdefault(prefix + layer.name, values(state_layer))

    def add_held(layer: Any, prefix: str) -> None:
        for site in surgery.find_sites(adapter, layer, prefix):
            if adapter.recurrent_kind(site.layer) == "trainable":
                result.setdefault(site.name, values(site.layer))
            elif is_graph_model(adapter, site.layer):
                for name, states in _state_values(site.layer, attribute).items():
                    result.setdefault(f"{site.name}/{name}", states)

    if not is_graph_model(adapter, model):
        add_held(model, "")
        return result
    if adapter.is_functional(model):
        add_call_sites(model, "")
    for prefix, layer in layers_in_tree(adapter, model):
        if adapter.recurrent_kind(layer) == "trainable":
            result[prefix + layer.name] = values(layer)
        elif adapter.is_functional(layer):
            add_call_sites(layer, f"{prefix}{layer.name}/")
        elif not is_graph_model(adapter, layer) and adapter.recurrent_kind(layer) is None:
            add_held(layer, f"{prefix}{layer.name}/")
    return result


def reset_states(model: Any) -> None:
    """Resets every stateful recurrent layer of a model: the next batch starts from its initial state.

    A layer with a trainable initial state (a `TrainableInitialStateRNN`,
    which `add_trainable_initial_states` puts around stateful layers) starts
    again from the learned state; a plain stateful layer from zeros. Keras 3
    models have no `reset_states()`; tf-keras' `model.reset_states()` does the
    same as this.

    Args:
        model: a Keras model or layer, `keras` or `tf_keras`, of any kind.

    Example:

    ```python
    >>> import keras, numpy as np
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential(
    ...     [keras.Input(batch_shape=(2, 5, 3)), keras.layers.GRU(4, stateful=True, name="gru")]
    ... )
    >>> new_model = rsr.add_trainable_initial_states(model)
    >>> x = np.random.rand(2, 5, 3)
    >>> first = new_model.predict(x, verbose=0)
    >>> rsr.reset_states(new_model)
    >>> bool(np.allclose(first, new_model.predict(x, verbose=0)))
    True

    ```
    """
    adapter = adapter_for(model, argument="model")
    inside: set[int] = set()
    for layer in [model, *adapter.sublayers(model)]:
        if id(layer) in inside:
            continue
        kind = adapter.recurrent_kind(layer)
        if kind is None:
            continue
        inside.update(id(sublayer) for sublayer in adapter.sublayers(layer))
        if not is_stateful(layer):
            continue
        if kind == "trainable":  # the wrapper's reset also sets its learned start for the next batch
            layer.reset_state()
        else:
            reset_carried_state(layer)

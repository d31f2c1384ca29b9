"""`add_trainable_initial_states`: plan, execute, check.

Data flows one way: model -> the walk (`walk.py`: one pass, a record of what
there is) -> the decisions (`decide.py`: one per recurrent call site or
attribute site, whether to check, with the options, in a `plan.Plan`) -> the
plan executed (`execute.py`: every layer cloned, `layer_copy.py`, the plan's
calls replayed into a new graph, `rebuild.py`, held layers wrapped,
`surgery.py`, every weight and state copied, `state_copy.py`) -> the
self-check (`check.py`). The same code serves both Keras generations, through
the model's `Adapter`.

Cloned layers are built with zeros initializers swapped in (their original
initializers are put back right after, so configs are unchanged): the
pretrained weights overwrite whatever an initializer would produce, so running
orthogonal or glorot initializers on a large model would be wasted time.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from rnn_state_rewriter.check import Probe, check_copy, first_differing
from rnn_state_rewriter.decide import make_plan
from rnn_state_rewriter.execute import Executor
from rnn_state_rewriter.options import LayerSelection, RetrofitOptions
from rnn_state_rewriter.plan import Plan
from rnn_state_rewriter.probing import call_model, probe_batch, run_model
from rnn_state_rewriter.walk import is_graph_model

__all__ = ["add_trainable_initial_states", "retrofit"]


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
    if options.in_place and is_graph_model(adapter, model):
        raise ValueError(
            f"Argument `in_place=True` is for subclassed models; model '{model.name}' is a "
            f"{type(model).__name__} model, which is always copied. Received: in_place=True"
        )
    inputs = functools.cache(lambda: probe_batch(adapter, model) if options.sample is None else options.sample)
    # changed in place, the model's outputs before the change are what the check compares with
    expected = run_model(adapter, model, inputs()) if options.in_place and plan.check else None
    executor = Executor(plan)
    new_model, rebuild = executor.run(lambda copy: call_model(copy, inputs()))
    if not plan.check:
        return new_model, None
    if rebuild is not None:  # a graph: the check makes its probe batch itself, and can name a layer
        sample = options.sample
        diagnose = functools.partial(first_differing, adapter, rebuild.outputs, model, new_model)
    else:
        sample, diagnose = inputs(), None
    probe = check_copy(
        adapter,
        model,
        new_model,
        state_variables=executor.variables,
        sample=sample,
        expected=expected,
        diagnose=diagnose,
    )
    return new_model, probe

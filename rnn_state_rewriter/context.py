"""The context a retrofit conditions states on: a model input or a layer's output, found in the walk's record.

`context=` names a tensor of the model's own graph: floats `(batch, d)`, mapped
to each state by a learned map, or integer ids with `num_ids=`, one state per id.
Its calls are replayed first by the rebuild, so that every recurrent call after
them can take it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rnn_state_rewriter.arguments import check_context
from rnn_state_rewriter.walk import Call, Inventory, is_graph_model

__all__ = ["Context", "find_context"]


@dataclasses.dataclass(frozen=True)
class Context:
    """The tensor that conditions the new states: a model input or a layer's output in the model's own graph.

    `computing` holds the indices (in graph order) of the calls the context is
    computed from, the one that makes it included: none of them can take it.
    `order` is the order the rebuild replays the graph's calls in: those first,
    then the rest, each part in graph order.
    """

    name: str
    tensor: Any
    computing: frozenset[int]
    order: tuple[int, ...]
    context_dim: int | None
    num_ids: int | None


def find_context(inventory: Inventory, name: Any, num_ids: Any) -> Context | None:
    """The context named `name` in the model's own graph, checked: floats `(batch, d)`, or ids with `num_ids`.

    Raises:
        TypeError: if `name` is not a string.
        ValueError: if it names nothing, a layer with several outputs or calls,
            or a tensor of the wrong rank or dtype.
    """
    adapter, model = inventory.adapter, inventory.model
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
    calls = inventory.graphs[id(model)]
    for index, (layer, _, _, outputs) in enumerate(calls):
        found.setdefault(layer.name, []).extend((index, output) for output in outputs)
    index, tensor = _named_tensor(model, found, name)
    first = _computing(inventory, calls, index)
    order = (*first, *(i for i in range(len(calls)) if i not in set(first)))
    shape, dtype = tuple(tensor.shape), str(getattr(tensor.dtype, "name", tensor.dtype))
    if num_ids is not None:
        if "int" not in dtype or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise ValueError(
                f"Argument `context` with `num_ids` must name integer ids of shape (batch,) or (batch, 1); "
                f"'{name}' gives {dtype} of shape {shape}. Received: context={name!r}, num_ids={num_ids}"
            )
        return Context(name, tensor, frozenset(first), order, None, num_ids)
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
    return Context(name, tensor, frozenset(first), order, int(shape[1]), None)


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


def _computing(inventory: Inventory, calls: list[Call], index: int) -> list[int]:
    """The indices of the calls a graph's call `index` depends on, itself included, in graph order."""
    adapter = inventory.adapter
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

"""The plan of a retrofit: what the decisions (`decide.py`) made of the walk's record, for the executors.

One `Decision` per call of a recurrent layer in a graph and per recurrent
layer reached through an attribute, with why it is skipped where it is; each
graph's calls in the order the rebuild replays them, each with its decision;
the options; whether the copy must run to be checked; and the walk's record
itself (`walk.Inventory`). The executors look decisions up here by key and
decide nothing.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.options import RetrofitOptions
from rnn_state_rewriter.walk import Inventory

__all__ = ["Action", "Decision", "Plan", "PlannedCall", "Route"]


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
class PlannedCall:
    """One call in a graph model, as the walk found it, with its decision (None: not a recurrent layer)."""

    layer: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[Any]
    decision: Decision | None


@dataclasses.dataclass
class Plan:
    """Everything a retrofit decided (`decide.make_plan`); the executors carry it out.

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
        inventory: the walk's record of the model.
        unvouched: why the construction cannot vouch for the copy (naming a
            layer: a subclassed model, a custom layer, a preprocessing layer),
            or None where the copy is exact by construction.
        check: whether the retrofit runs the copy against the original (the
            option `check`; with `"auto"`, where a reason is above or a
            `sample` was given).
    """

    adapter: Adapter
    model: Any
    options: RetrofitOptions
    decisions: list[Decision]
    graphs: dict[int, list[PlannedCall]]
    surgery: dict[str, Decision]
    submodels: dict[str, Any]
    inventory: Inventory
    unvouched: str | None
    check: bool

    def added(self) -> list[Decision]:
        """The decisions that add states."""
        return [d for d in self.decisions if d.action is Action.ADD]

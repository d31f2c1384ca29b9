"""What a retrofit is asked to do: `RetrofitOptions`, checked once, carried by the plan to the executors.

`add_trainable_initial_states` and `plan_trainable_initial_states` take their
arguments one by one, as Keras functions do, and make one `RetrofitOptions` of
them; from there it is one value. What can be checked without the model is
checked when it is made (`noise_stddev`, `check`); what depends on
the model (`layers`, per-state lists, `context`) is checked by the planner,
which reads the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

from rnn_state_rewriter.arguments import check_noise_stddev

__all__ = ["LayerSelection", "RetrofitOptions"]

# Which recurrent layers a retrofit rewrites: all (None), names or Keras-name paths, classes, or a predicate.
LayerSelection = None | str | type | Sequence[str | type] | Callable[[Any], bool]

_OWNER = "`add_trainable_initial_states`"


@dataclasses.dataclass(frozen=True)
class RetrofitOptions:
    """The arguments of `add_trainable_initial_states` after the model, as one checked value.

    Raises:
        ValueError: if `noise_stddev` is not a number >= 0, or `check` is not
            `"auto"`, True or False.
    """

    layers: LayerSelection = None
    initializer: Any = "zeros"
    regularizer: Any = None
    constraint: Any = None
    noise_stddev: float = 0.0
    context: str | None = None
    num_ids: int | None = None
    freeze_base: bool = False
    check: bool | Literal["auto"] = "auto"
    sample: Any = dataclasses.field(default=None, repr=False, compare=False)
    in_place: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_stddev", check_noise_stddev(self.noise_stddev, _OWNER))
        if self.check != "auto" and not isinstance(self.check, bool):
            raise ValueError(f'Argument `check` must be "auto", True or False. Received: check={self.check!r}')

    @property
    def run_check(self) -> bool | None:
        """`check` as True (always), False (never) or None (where the construction cannot vouch for the copy)."""
        return None if self.check == "auto" else bool(self.check)

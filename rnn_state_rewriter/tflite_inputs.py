"""The inputs of a TFLite conversion and of its check: their specs (batch fixed, time steps where asked)
and random values for them. Shared by `export.py` and `streaming_export.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_arguments", "input_spec", "random_inputs"]


def check_arguments(model: Any, batch_size: int, steps: int | None) -> None:
    from rnn_state_rewriter.generation import generation_of

    generation_of(model)  # TypeError for objects of neither Keras
    if not hasattr(model, "predict"):
        raise TypeError(f"`model` must be a Keras model. Received: model={model!r}")
    for argument, value in (("batch_size", batch_size), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"Argument `{argument}` must be a positive integer. Received: {argument}={value!r}")


def input_spec(
    index: int, tensor: Any, batch_size: int, steps: int | None, name: str = ""
) -> tuple[str, list[int | None], str]:
    shape = [None if d is None else int(d) for d in tuple(getattr(tensor.shape, "as_list", lambda: tensor.shape)())]
    shape[0] = batch_size
    if steps is not None and len(shape) > 2 or (steps is not None and len(shape) == 2 and shape[1] is None):
        if shape[1] not in (None, steps):
            raise ValueError(f"Input `{tensor.name}` has {shape[1]} time steps, not steps={steps}")
        shape[1] = steps
    unknown = [axis for axis, d in enumerate(shape) if d is None and axis != 1]
    if unknown:
        raise ValueError(
            f"Input `{tensor.name}` has an unknown dimension at axis {unknown[0]} (shape {tuple(shape)}); "
            "TFLite needs every dimension but time fixed: give the model's `Input` a full shape"
        )
    return name or f"x{index}", shape, str(getattr(tensor.dtype, "name", tensor.dtype))


def random_inputs(specs: Sequence[tuple[str, list[int | None], str]], rng: Any, steps: int | None) -> list[Any]:
    batch = []
    for _, shape, dtype in specs:
        concrete = [steps if d is None else d for d in shape]
        if dtype.startswith(("int", "uint")):
            batch.append(rng.integers(0, 2, size=concrete).astype(dtype))
        elif dtype == "bool":
            batch.append(rng.random(concrete) < 0.5)
        else:
            batch.append(rng.normal(size=concrete).astype(dtype))
    return batch

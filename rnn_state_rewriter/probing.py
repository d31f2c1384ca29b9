"""The probe batch: inputs a model accepts, made from what it was built on, and running models on them.

Made from the model's input specs (numbers; integer ids within the range of
the embeddings that read them, floats included; words of the vocabularies of
the lookup layers that read them), or from the shapes a subclassed model was
built on (several inputs included; ids where numbers fail). `call_model` and
`run_model` run a model on such a batch, a tuple being the arguments of a
subclassed model's `call`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.layer_copy import describe_error
from rnn_state_rewriter.walk import input_readers

__all__ = ["BATCH", "STEPS", "Zeroed", "as_numpy", "call_model", "probe_batch", "run_model", "spreads"]

BATCH = 3
STEPS = 4  # where the time axis is unknown


# ----------------------------------------------------------------------------
# Running a model on its inputs
# ----------------------------------------------------------------------------

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _arguments(model: Any) -> int:
    """How many positional arguments the model's `call` requires (0 where Python cannot read its signature)."""
    try:
        parameters = inspect.signature(model.call).parameters.values()
    except (TypeError, ValueError):  # a call without a signature Python can read
        return 0
    return len([p for p in parameters if p.kind in _POSITIONAL and p.default is inspect.Parameter.empty])


def spreads(model: Any, inputs: Any) -> bool:
    """Whether `inputs` are the several arguments of the model's `call`: a tuple of as many values as the
    positional arguments `call` requires, when it requires more than one (`call(self, x, features, hidden)`)."""
    count = _arguments(model)
    return isinstance(inputs, tuple) and count > 1 and len(inputs) == count


def call_model(model: Any, inputs: Any) -> Any:
    """`model(inputs)` in inference, or `model(*inputs)` where they are the arguments of its `call` (`spreads`)."""
    return model(*inputs, training=False) if spreads(model, inputs) else model(inputs, training=False)


def run_model(adapter: Adapter, model: Any, inputs: Any) -> Any:
    """The model's outputs on `inputs` in inference, as fast as the generation allows (`adapter.predict`)."""
    return call_model(model, inputs) if spreads(model, inputs) else adapter.predict(model, inputs)


# ----------------------------------------------------------------------------
# The probe batch
# ----------------------------------------------------------------------------


def _id_range(layers: list[Any]) -> int:
    """How many integer ids every reader accepts: the smallest `input_dim` of the embeddings (or `num_ids` of
    the states conditioned on ids), else 10."""
    dims = [int(getattr(layer, "input_dim", 0) or getattr(layer, "num_ids", 0) or 0) for layer in layers]
    dims = [d for d in dims if d > 0]
    return max(1, min([10, *dims]))


def _reads_ids(layers: list[Any]) -> bool:
    """Whether one of the layers reads integer ids (an `Embedding`, a table of states per id), whatever the dtype."""
    return any(int(getattr(layer, "input_dim", 0) or getattr(layer, "num_ids", 0) or 0) > 0 for layer in layers)


def _words(layers: list[Any]) -> list[str]:
    """Words the lookup layers reading a string input know (some unknown ones too)."""
    words: list[str] = []
    for layer in layers:
        vocabulary = getattr(layer, "get_vocabulary", None)
        if callable(vocabulary):
            try:
                words += [str(w) for w in vocabulary() if str(w) and not str(w).startswith("[")]
            except Exception:  # a layer not adapted yet: any words will do
                continue
    return words[:50] + ["zebra", "quokka"]


def _sample(adapter: Adapter, model: Any, tensor: Any, rng: np.random.Generator) -> np.ndarray:
    shape = list(tensor.shape)
    batch = shape[0] if shape and shape[0] is not None else BATCH
    shape = [batch, *(STEPS if dim is None else dim for dim in shape[1:])]
    dtype = str(getattr(tensor.dtype, "name", tensor.dtype))
    readers = input_readers(adapter, model, tensor)
    if dtype == "string":
        words = _words(readers)
        flat = [" ".join(rng.choice(words, size=3)) for _ in range(int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    if dtype == "bool":
        mask = np.ones(shape, bool)
        if len(shape) > 1:
            mask[: batch // 2 + 1, ..., -1] = False  # some right padding, as masks in batches have
        return mask
    if "int" in dtype or _reads_ids(readers):  # ids, held as floats too (an `Input` of floats into an `Embedding`)
        return rng.integers(0, _id_range(readers), size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def _built_shapes(model: Any) -> Any:
    """The input shapes a subclassed model was built on, nested as its input (None if it records none)."""
    shapes = (model.get_build_config() or {}).get("input_shape")

    def valid(value: Any) -> bool:
        if _is_shape(value):
            return True
        if isinstance(value, dict):
            return bool(value) and all(valid(v) for v in value.values())
        return isinstance(value, (list, tuple)) and bool(value) and all(valid(v) for v in value)

    return shapes if valid(shapes) else None


def _candidates(adapter: Adapter, model: Any, shapes: Any, rng: np.random.Generator) -> list[Any]:
    """Probe batches for a subclassed model built on `shapes`: each input numbers or integer ids (within the
    range of every embedding it holds), ids first where its first layer is an `Embedding`; every mix of the
    two for up to four inputs."""
    layers = adapter.sublayers(model)
    count = _count_shapes(shapes)

    def batch(kinds: list[bool]) -> Any:
        kinds_left = list(kinds)

        def leaf(shape: Any) -> np.ndarray:
            dims = [BATCH, *(STEPS if d is None else d for d in list(shape)[1:])]
            if kinds_left.pop(0):
                return rng.integers(0, _id_range(layers), size=dims).astype("int32")
            return rng.normal(size=dims).astype("float32")

        def nest(value: Any) -> Any:
            if _is_shape(value):
                return leaf(value)
            if isinstance(value, dict):
                return {key: nest(item) for key, item in value.items()}
            return tuple(nest(item) for item in value) if isinstance(value, tuple) else [nest(v) for v in value]

        return nest(shapes)

    ids_first = _reads_ids(layers[:1])
    mixes = [[ids_first] * count, [not ids_first] * count]
    if 1 < count <= 4:
        mixes += [[bool(bits >> i & 1) for i in range(count)] for bits in range(1, 2**count - 1)]
    return [batch(kinds) for kinds in mixes]


def _count_shapes(value: Any) -> int:
    if _is_shape(value):
        return 1
    items = value.values() if isinstance(value, dict) else value
    return sum(_count_shapes(item) for item in items)


def probe_batch(adapter: Adapter, model: Any, seed: int = 0) -> Any:
    """A small batch for `model`, made from its input specs, nested as its inputs.

    A subclassed model has no input specs: its batch is made from the shapes it
    was built with (one input or several, nested as they were), of numbers or
    of integer ids: the first of those the model runs on (its carried states
    are put back after).

    Raises:
        ValueError: for a subclassed model that records no input shapes, or
            runs on no batch made from them: pass `sample=`.
    """
    rng = np.random.default_rng(seed)
    if adapter.is_functional(model) or adapter.is_sequential(model):
        return adapter.map_tensors(lambda t: _sample(adapter, model, t, rng), adapter.model_inputs(model))
    shapes = _built_shapes(model)
    if shapes is None or _arguments(model) > 1:
        recorded = (model.get_build_config() or {}).get("input_shape")
        several = f" for each of the {_arguments(model)} arguments of its `call`" if _arguments(model) > 1 else ""
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) does not record the shapes of its inputs{several} to "
            f"make a probe batch from (its build config gives {recorded!r}). Pass a small batch of its inputs as "
            "`sample=` (a tuple of the arguments of its `call`, where it takes several), or skip the "
            "self-check with `check=False`."
        )
    failures = []
    with Zeroed(adapter.carried_states(model)):
        for candidate in _candidates(adapter, model, shapes, rng):
            try:
                run_model(adapter, model, candidate)
                return candidate
            except Exception as error:  # noqa: BLE001 (whatever the model's code raises on a batch it does not take)
                failures.append(error)
    raise ValueError(
        f"Model '{model.name}' ({type(model).__name__}) does not run on a probe batch made from the shapes it "
        f"was built on, {shapes!r}, of numbers or of integer ids ({describe_error(failures[-1])}). Pass a small "
        "batch of its inputs as `sample=`, or skip the self-check with `check=False`."
    )


class Zeroed:
    """Sets variables to zero for a `with` block and puts their values back after."""

    def __init__(self, variables: Sequence[Any]) -> None:
        self.variables = list(variables)
        self.saved: list[np.ndarray] = []

    def __enter__(self) -> None:
        self.saved = [as_numpy(v) for v in self.variables]
        for variable, value in zip(self.variables, self.saved, strict=True):
            variable.assign(np.zeros_like(value))

    def __exit__(self, *exc: object) -> None:
        for variable, value in zip(self.variables, self.saved, strict=True):
            variable.assign(value)


def as_numpy(value: Any) -> np.ndarray:
    """A tensor's values as a NumPy array (a PyTorch tensor detached and moved to the CPU first)."""
    if hasattr(value, "detach"):  # a PyTorch tensor
        value = value.detach().cpu()
    return np.asarray(value)

"""The retrofit checks its own promise: the copy, at zero states, predicts what the original predicts.

By default (`check="auto"`) the check runs wherever the construction alone
cannot vouch for the copy: a subclassed model, a custom layer or a `Lambda`
(code the rewrite cannot read), a preprocessing layer (statistics and
vocabularies: state that is more than variables). A model made only of Keras'
other built-in layers is copied exactly by construction (the config rebuilds
the same layer, the saving methods Keras' own files rely on carry its state),
and is not run; `check=True` runs it anyway.

Where it runs, after a copy is built, both models run on one small probe batch, made from
the model's input specs (numbers; integer ids within the range of the
embeddings that read them; words of the vocabularies of the lookup layers that
read them) or given by the user, with every new state set to zero for the
comparison and put back after. Where the outputs differ, the check finds the
first layer whose outputs differ and raises `RetrofitMismatchError` naming
it: a layer whose state the copy could not reproduce is reported instead of
returning a wrong model.

Running a model moves the carried state of its stateful layers; the check puts
it back, in the original and the copy alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnn_state_rewriter._adapter import Adapter
from rnn_state_rewriter.generation import KERAS_PACKAGES
from rnn_state_rewriter.plan import layers_in_tree

__all__ = ["RetrofitMismatchError", "Probe", "check_copy", "needs_check", "probe_batch", "wants_check"]

BATCH = 3
STEPS = 4  # where the time axis is unknown


class RetrofitMismatchError(ValueError):
    """The retrofitted copy of a model does not predict what the original predicts.

    Attributes:
        layer: the path of the first layer whose outputs differ (None if only
            the model's outputs could be compared).
        max_change: the largest absolute change in the model's outputs.
    """

    def __init__(self, message: str, layer: str | None, max_change: float) -> None:
        super().__init__(message)
        self.layer = layer
        self.max_change = max_change


class Probe:
    """What the check measured: the largest absolute change in the outputs, on how many samples."""

    def __init__(self, max_change: float, samples: int) -> None:
        self.max_change = max_change
        self.samples = samples

    def __repr__(self) -> str:
        return f"Probe(max_change={self.max_change:.3g}, samples={self.samples})"


# ----------------------------------------------------------------------------
# Whether to check
# ----------------------------------------------------------------------------


def wants_check(check: object) -> bool | None:
    """`check` as True (always), False (never) or None (where the construction cannot vouch for the copy)."""
    if check == "auto":
        return None
    if isinstance(check, bool):
        return check
    raise ValueError(f'Argument `check` must be "auto", True or False. Received: check={check!r}')


def _unvouched(layer: Any) -> str | None:
    """Why rebuilding `layer` from its config and copying its saved state may not give the same layer.

    Keras' own layers (`keras.layers`, `tf_keras.layers`) are rebuilt exactly
    from their configs, and their saving methods carry their whole state, as
    Keras' own file format relies on; and so are this package's layers. Not
    vouched for: custom classes and wrappers of user code (`Lambda`,
    `JaxLayer`, `TorchModuleWrapper`), whose behaviour their config may not
    describe, and preprocessing layers, whose state (statistics, vocabularies)
    is more than their variables.
    """
    cls = type(layer)
    module = cls.__module__
    if module.split(".")[0] == "rnn_state_rewriter":
        return None
    keras_layer = ".layers." in module or module.endswith(".input_layer")
    if module.split(".")[0] not in KERAS_PACKAGES or not keras_layer or cls.__name__ == "Lambda":
        return f"its class {cls.__name__} runs code the rewrite cannot read"
    if ".preprocessing." in module:
        return "its state is more than its variables"
    return None


def needs_check(adapter: Adapter, model: Any) -> str | None:
    """Why the copy of `model` must be run to be vouched for (naming a layer), or None if it need not.

    None when `model` is a Functional or Sequential model whose layers, at
    any depth, are all Keras' own layers, other than `Lambda` and the
    preprocessing layers: such a copy is exact by construction.
    """
    if not (adapter.is_functional(model) or adapter.is_sequential(model)):
        return f"model '{model.name}' is subclassed: the rewrite cannot read its `call`"
    for prefix, layer in layers_in_tree(adapter, model):
        for part in [layer, *adapter.sublayers(layer)]:
            if adapter.is_functional(part) or adapter.is_sequential(part):
                continue
            reason = _unvouched(part)
            if reason:
                name = f"{prefix}{layer.name}" + ("" if part is layer else f" (its sublayer '{part.name}')")
                return f"layer '{name}': {reason}"
    return None


# ----------------------------------------------------------------------------
# The probe batch
# ----------------------------------------------------------------------------


def _readers(adapter: Adapter, model: Any, tensor: Any) -> list[Any]:
    """The layers of `model` (any depth) called on the input `tensor`."""
    found = []
    for layer, args, kwargs, _ in adapter.call_sites(model):
        if any(t is tensor for t in adapter.flatten_tensors((args, kwargs))):
            found.append(layer)
    return found


def _id_range(layers: list[Any]) -> int:
    """How many integer ids every reader accepts: the smallest `input_dim` of the embeddings (or `num_ids` of
    the states conditioned on ids), else 10."""
    dims = [int(getattr(layer, "input_dim", 0) or getattr(layer, "num_ids", 0) or 0) for layer in layers]
    dims = [d for d in dims if d > 0]
    return max(1, min([10, *dims]))


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
    if dtype == "string":
        words = _words(_readers(adapter, model, tensor))
        flat = [" ".join(rng.choice(words, size=3)) for _ in range(int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    if dtype == "bool":
        mask = np.ones(shape, bool)
        if len(shape) > 1:
            mask[: batch // 2 + 1, ..., -1] = False  # some right padding, as masks in batches have
        return mask
    if "int" in dtype:
        return rng.integers(0, _id_range(_readers(adapter, model, tensor)), size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def probe_batch(adapter: Adapter, model: Any, seed: int = 0) -> Any:
    """A small batch for `model`, made from its input specs, nested as its inputs.

    A subclassed model has no input specs: its batch is made from the shape it
    was built with, of the dtype its first layer reads (integer ids for an
    `Embedding`, floats otherwise).

    Raises:
        ValueError: for a subclassed model built on several inputs or on none
            recorded: pass `sample=`.
    """
    rng = np.random.default_rng(seed)
    if adapter.is_functional(model) or adapter.is_sequential(model):
        return adapter.map_tensors(lambda t: _sample(adapter, model, t, rng), adapter.model_inputs(model))
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (list, tuple)) or not all(d is None or isinstance(d, int) for d in shape):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) does not record one input shape to make a probe "
            f"batch from (its build config gives {shape!r}). Pass a small batch of its inputs as `sample=`."
        )
    first = next(iter(adapter.sublayers(model)), None)
    ids = int(getattr(first, "input_dim", 0) or 0)
    dims = [BATCH, *(STEPS if d is None else d for d in shape[1:])]
    if ids:
        return rng.integers(0, min(10, ids), size=dims).astype("int32")
    return rng.normal(size=dims).astype("float32")


# ----------------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------------


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a PyTorch tensor
        value = value.detach().cpu()
    return np.asarray(value)


def _tolerance(reference: np.ndarray) -> float:
    """How far two runs of the same computation may differ: float rounding, looser for 16-bit floats."""
    if not np.issubdtype(reference.dtype, np.floating):
        return 0.0
    scale = float(np.nanmax(np.abs(reference))) if reference.size else 0.0
    relative = 1e-2 if reference.dtype.itemsize <= 2 else 1e-4
    return relative * (1.0 + scale)


def largest_change(adapter: Adapter, expected: Any, actual: Any) -> tuple[float, bool]:
    """The largest absolute difference of two nested outputs, and whether it is within rounding."""
    worst, within = 0.0, True
    for a, b in zip(adapter.flatten_tensors(expected), adapter.flatten_tensors(actual), strict=True):
        a, b = _numpy(a), _numpy(b)
        if a.shape != b.shape:
            return float("inf"), False
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            same = bool(np.all(a == b))
            worst, within = (worst, within) if same else (float("inf"), False)
            continue
        fa, fb = a.astype("float64"), b.astype("float64")
        nan = np.isnan(fa) | np.isnan(fb)
        if np.any(np.isnan(fa) != np.isnan(fb)):
            return float("inf"), False
        change = float(np.max(np.abs(fa - fb)[~nan])) if np.any(~nan) else 0.0
        worst = max(worst, change)
        within = within and change <= _tolerance(a)
    return worst, within


class _Zeroed:
    """Sets variables to zero for a `with` block and puts their values back after."""

    def __init__(self, variables: Sequence[Any]) -> None:
        self.variables = list(variables)
        self.saved: list[np.ndarray] = []

    def __enter__(self) -> None:
        self.saved = [_numpy(v) for v in self.variables]
        for variable, value in zip(self.variables, self.saved, strict=True):
            variable.assign(np.zeros_like(value))

    def __exit__(self, *exc: object) -> None:
        for variable, value in zip(self.variables, self.saved, strict=True):
            variable.assign(value)


def check_copy(
    adapter: Adapter,
    original: Any,
    copy: Any,
    *,
    state_variables: Sequence[Any],
    sample: Any = None,
    expected: Any = None,
    diagnose: Callable[[Any], str | None] | None = None,
) -> Probe:
    """Runs `original` and `copy` (its new states at zero) on a probe batch and compares their outputs.

    Args:
        adapter: the generation of both models.
        original, copy: the model given and its retrofitted copy.
        state_variables: the copy's new state variables, set to zero for the comparison.
        sample: inputs to compare on; None to make a probe batch from the input specs.
        expected: the original's outputs on `sample`, measured (with
            `adapter.predict`) before an in-place retrofit; then `original` is not run.
        diagnose: called with the inputs where the outputs differ; returns the
            path of the first layer whose outputs differ, if it can tell.

    Returns:
        A `Probe` with the largest change measured.

    Raises:
        RetrofitMismatchError: if the outputs differ by more than rounding.
    """
    inputs = probe_batch(adapter, copy) if sample is None else sample  # the copy's readers: context ids too
    carried = [*adapter.carried_states(original), *adapter.carried_states(copy)]
    with _Zeroed(carried), _Zeroed(state_variables):
        if expected is None:
            expected = adapter.predict(original, inputs)
        actual = adapter.predict(copy, inputs)
        change, within = largest_change(adapter, expected, actual)
        if within:
            return Probe(change, len(_numpy(adapter.flatten_tensors(inputs)[0])))
        layer = diagnose(inputs) if diagnose is not None else None
    where = f" The first layer whose outputs differ is '{layer}'." if layer else ""
    raise RetrofitMismatchError(
        f"The retrofitted copy of model '{original.name}' does not predict what the original predicts "
        f"(largest change {change:.3g} on a probe batch, with the new states at zero).{where} That layer "
        "keeps state its config and its saving methods do not carry, or computes differently when "
        "rebuilt: give its class `get_config()` and `save_own_variables`/`load_own_variables` (or "
        "`save_assets`/`load_assets`) that describe all of it. To inspect the copy anyway, pass "
        "`check=False`.",
        layer,
        change,
    )


def first_differing(adapter: Adapter, pairs: list[tuple[str, Any, Any]], original: Any, copy: Any, inputs: Any) -> Any:
    """The path of the first `(path, old outputs, new outputs)` whose values differ on `inputs`, or None."""
    api = adapter.keras_api
    olds = [old for _, old, _ in pairs]
    news = [new for _, _, new in pairs]
    if not olds:
        return None
    old_values = api.Model(adapter.model_inputs(original), olds)(inputs, training=False)
    new_values = api.Model(adapter.model_inputs(copy), news)(inputs, training=False)
    for (path, _, _), a, b in zip(pairs, old_values, new_values, strict=True):
        if not largest_change(adapter, a, b)[1]:
            return path
    return None

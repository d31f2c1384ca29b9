"""The retrofit checks its own promise: the copy, at zero states, predicts what the original predicts.

By default (`check="auto"`) the check runs wherever the construction alone
cannot vouch for the copy: a subclassed model or a custom layer (code the
rewrite cannot read), a preprocessing layer (statistics and vocabularies:
state that is more than variables). A model made only of Keras' other built-in
layers is copied exactly by construction (the config rebuilds the same layer,
the saving methods Keras' own files rely on carry its state), and is not run;
nor is one with a `Lambda`, whose copy holds the same live function;
`check=True` runs it anyway.

Where it runs, after a copy is built, both models run on one small probe batch,
made from the model's input specs (numbers; integer ids within the range of the
embeddings that read them, floats included; words of the vocabularies of the
lookup layers that read them), from the shapes a subclassed model was built on
(several inputs included; ids where numbers fail), or given by the user, with
every new state set to zero for the comparison and put back after. Where the
original itself cannot run on the probe batch, the error says so and names
`sample=` and `check=False`. Where the outputs differ, the check finds the
first layer whose outputs differ and raises `RetrofitMismatchError` naming
it: a layer whose state the copy could not reproduce is reported instead of
returning a wrong model.

Running a model moves the carried state of its stateful layers; the check puts
it back, in the original and the copy alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.generation import KERAS_PACKAGES
from rnn_state_rewriter.layer_copy import describe_error
from rnn_state_rewriter.plan import layers_in_tree

__all__ = [
    "RetrofitMismatchError",
    "Probe",
    "call_model",
    "check_copy",
    "needs_check",
    "probe_batch",
    "run_model",
]

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


def _unvouched(layer: Any) -> str | None:
    """Why rebuilding `layer` from its config and copying its saved state may not give the same layer.

    Keras' own layers (`keras.layers`, `tf_keras.layers`) are rebuilt exactly
    from their configs, and their saving methods carry their whole state, as
    Keras' own file format relies on; and so are this package's layers. Not
    vouched for: custom classes and wrappers of user code (`JaxLayer`,
    `TorchModuleWrapper`), whose behaviour their config may not describe, and
    preprocessing layers, whose state (statistics, vocabularies) is more than
    their variables. A `Lambda` is vouched for: its copy holds the same live
    function, mask and arguments (`layer_copy`).
    """
    cls = type(layer)
    module = cls.__module__
    if module.split(".")[0] == "rnn_state_rewriter":
        return None
    keras_layer = ".layers." in module or module.endswith(".input_layer")
    if module.split(".")[0] not in KERAS_PACKAGES or not keras_layer:
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


# Layers that hand their input on with its values unchanged: what reads their output reads the input.
_PASS_THROUGH = frozenset({"Reshape", "Flatten", "Permute", "RepeatVector", "Masking", "Identity", "InputLayer"})


def _readers(adapter: Adapter, model: Any, tensor: Any) -> list[Any]:
    """The layers of `model` called on the input `tensor`, or on it reshaped (`Reshape`, `Flatten`, ...), and
    those reading it inside the wrappers (`TimeDistributed`) and graph submodels that read it."""
    found = []
    tensors = [tensor]
    for layer, args, kwargs, outputs in adapter.call_sites(model):
        if any(t is s for t in adapter.flatten_tensors((args, kwargs)) for s in tensors):
            found += _inside(adapter, layer)
            if type(layer).__name__ in _PASS_THROUGH:
                tensors += list(outputs)
    return found


def _inside(adapter: Adapter, layer: Any) -> list[Any]:
    """`layer`, and what reads its input inside it: the layer a wrapper wraps, the readers of a graph model's
    inputs."""
    found = [layer]
    inner = getattr(layer, "layer", None)
    if isinstance(inner, adapter.keras_api.layers.Layer):
        found += _inside(adapter, inner)
    if adapter.is_functional(layer) or adapter.is_sequential(layer):
        for tensor in adapter.flatten_tensors(adapter.model_inputs(layer)):
            found += _readers(adapter, layer, tensor)
    return found


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
    readers = _readers(adapter, model, tensor)
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
    with _Zeroed(adapter.carried_states(model)):
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
            expected = _run_original(adapter, original, inputs, given=sample is not None)
        actual = run_model(adapter, copy, inputs)
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


def _run_original(adapter: Adapter, model: Any, inputs: Any, *, given: bool) -> Any:
    """The original's outputs on the probe batch; a model that cannot run on it is said so in one line.

    Raises:
        ValueError: if the original model raises on the batch (not the copy: nothing is known of it yet).
    """
    try:
        return run_model(adapter, model, inputs)
    except Exception as error:  # whatever the model's own code or the backend raises
        made = "the `sample` given" if given else "a probe batch made from its input specs"
        raise ValueError(
            f"The self-check of the retrofit could not run the original model '{model.name}' on {made} "
            f"({describe_error(error)}), so it cannot compare the copy with it. Pass a small batch of the "
            "model's inputs as `sample=` (values its layers accept: ids in range, labels that fit), or skip "
            "the self-check with `check=False`."
        ) from None


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

"""The retrofit checks its own promise: the copy, at zero states, predicts what the original predicts.

By default (`check="auto"`) the check runs wherever the construction alone
cannot vouch for the copy: a subclassed model or a custom layer (code the
rewrite cannot read), a preprocessing layer (statistics and vocabularies:
state that is more than variables). A model made only of Keras' other built-in
layers is copied exactly by construction (the config rebuilds the same layer,
the saving methods Keras' own files rely on carry its state), and is not run;
nor is one with a `Lambda`, whose copy holds the same live function;
`check=True` runs it anyway.

Where it runs, after a copy is built, both models run on one small probe batch
(`probing.py`), made from the model's input specs (numbers; integer ids within the range of the
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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnn_state_rewriter.backend import Adapter
from rnn_state_rewriter.layer_copy import describe_error
from rnn_state_rewriter.probing import Zeroed, as_numpy, probe_batch, run_model

__all__ = [
    "RetrofitMismatchError",
    "Probe",
    "check_copy",
]


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
# Comparing
# ----------------------------------------------------------------------------


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
        a, b = as_numpy(a), as_numpy(b)
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
    with Zeroed(carried), Zeroed(state_variables):
        if expected is None:
            expected = _run_original(adapter, original, inputs, given=sample is not None)
        actual = run_model(adapter, copy, inputs)
        change, within = largest_change(adapter, expected, actual)
        if within:
            return Probe(change, len(as_numpy(adapter.flatten_tensors(inputs)[0])))
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

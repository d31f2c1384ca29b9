"""A streaming model in one TFLite flatbuffer: a `step` signature and a `start` signature.

`step` takes a chunk of the model's inputs and the states, and gives the
model's outputs and the states after the chunk; `start` takes the context (where
the states are conditioned on one; else nothing) and gives the states a stream
starts from. Both are traced from `streaming.py`'s model and start, their
variables frozen into constants (as `to_tflite` does: the loops become TFLite
`WHILE` loops of builtin ops), put together in one SavedModel of two signatures,
and converted with builtin ops only. Before it is returned, the flatbuffer's
`start` is compared with `start_states` and a stream of two chunks through its
`step` with the streaming model, on random inputs.

TensorFlow is imported only when a flatbuffer is made.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from typing import Any

import numpy as np

from rnn_state_rewriter.streaming import conditioned, start_tensors, streaming_model
from rnn_state_rewriter.tflite_inputs import input_spec, random_inputs
from rnn_state_rewriter.walk import Inventory, state_layer_feeding, walk

__all__ = ["streaming_tflite"]

TOLERANCE = 1e-5


def streaming_tflite(model: Any, batch_size: int, steps: int | None, tf: Any) -> bytes:
    """`to_tflite(model, streaming=True, ...)`: see `export.to_tflite`."""
    inventory = walk(model)
    stream = streaming_model(model)
    count = len(inventory.model.inputs)
    chunk_specs = [input_spec(i, t, batch_size, steps, f"x{i}") for i, t in enumerate(stream.inputs[:count])]
    state_specs = [_state_spec(t, batch_size) for t in stream.inputs[count:]]
    state_names = [name for name, _, _ in state_specs]
    output_names = [f"y{i}" for i in range(len(stream.outputs) - len(state_specs))]
    context = _context_spec(inventory, batch_size)

    def step(*inputs: Any) -> list[Any]:
        return list(stream(list(inputs), training=False))

    def start(*given: Any) -> list[Any]:
        return [tf.convert_to_tensor(s) for s in start_tensors(inventory, batch_size, given[0] if given else None)]

    def spec(name: str, shape: list[int | None], dtype: str) -> Any:
        return tf.TensorSpec(shape, tf.as_dtype(dtype), name=name)

    frozen_step = _frozen(tf, step, [spec(*s) for s in [*chunk_specs, *state_specs]])
    frozen_start = _frozen(tf, start, [spec(*context)] if context else [])
    module = tf.Module()
    module.step = tf.function(  # type: ignore[attr-defined]
        lambda *inputs: dict(zip([*output_names, *state_names], frozen_step(*inputs), strict=True)),
        input_signature=[spec(*s) for s in [*chunk_specs, *state_specs]],
        autograph=False,
    )
    module.start = tf.function(  # type: ignore[attr-defined]
        lambda *given: dict(zip(state_names, frozen_start(*given), strict=True)),
        input_signature=[spec(*context)] if context else [],
        autograph=False,
    )
    with tempfile.TemporaryDirectory(prefix="rnn_state_rewriter_streaming_") as folder:
        path = os.path.join(folder, "saved_model")
        signatures = {"step": module.step.get_concrete_function(), "start": module.start.get_concrete_function()}
        tf.saved_model.save(module, path, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["step", "start"])
        try:
            flatbuffer = bytes(converter.convert())
        except Exception as error:  # the converter's own ConverterError, or anything it raises
            first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise ValueError(f"TFLite cannot convert the streaming model of `{model.name}`: {first}") from error
    _check(tf, inventory, stream, flatbuffer, chunk_specs, state_names, output_names, context, batch_size)
    return flatbuffer


def _frozen(tf: Any, function: Any, specs: list[Any]) -> Any:
    """`function` traced on `specs` with its variables frozen into constants: it returns a flat list."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(tf.function(function, autograph=False).get_concrete_function(*specs))


def _state_spec(tensor: Any, batch_size: int) -> tuple[str, list[int | None], str]:
    name = re.sub(r":\d+$", "", tensor.name)
    shape: list[int | None] = [batch_size, *(int(d) for d in tuple(tensor.shape)[1:])]
    return name, shape, str(getattr(tensor.dtype, "name", tensor.dtype))


def _context_spec(inventory: Inventory, batch_size: int) -> tuple[str, list[int | None], str] | None:
    """The `start` signature's input: the context of the conditioned states, if any."""
    adapter = inventory.adapter
    for call in inventory.recurrent_calls:
        source = state_layer_feeding(adapter, call.layer, call.args, call.kwargs)
        if adapter.recurrent_kind(call.layer) == "trainable":
            source = call.layer
        if source is not None and conditioned(source):
            if source.num_ids is not None:
                return "context", [batch_size], "int32"
            return "context", [batch_size, int(source.context_dim)], "float32"
    return None


def _check(
    tf: Any,
    inventory: Inventory,
    stream: Any,
    flatbuffer: bytes,
    chunk_specs: list[Any],
    state_names: list[str],
    output_names: list[str],
    context: Any,
    batch_size: int,
) -> None:
    """The flatbuffer's `start` against `start_states`, and two chunks through `step` against the streaming
    model, on random inputs; raises where they differ beyond 1e-5."""
    model = inventory.model

    with warnings.catch_warnings():  # the check's own interpreter: its deprecation notice is not the caller's
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    rng = np.random.default_rng(0)
    given = {}
    if context is not None:
        _, shape, dtype = context
        values = rng.integers(0, _ids(inventory), size=shape) if dtype == "int32" else rng.normal(size=shape)
        given = {"context": values.astype(dtype)}
    started = interpreter.get_signature_runner("start")(**given)
    expected = [np.asarray(s) for s in start_tensors(inventory, batch_size, given.get("context"))]
    worst = max((_difference(started[n], e) for n, e in zip(state_names, expected, strict=True)), default=0.0)
    states = [started[name] for name in state_names]
    step = interpreter.get_signature_runner("step")
    variable = any(len(shape) > 1 and shape[1] is None for _, shape, _ in chunk_specs)
    for steps in (5, 3) if variable else (None, None):
        chunk = random_inputs(chunk_specs, rng, steps)
        got = step(
            **{name: x for (name, _, _), x in zip(chunk_specs, chunk, strict=True)},
            **dict(zip(state_names, states, strict=True)),
        )
        want = [np.asarray(v) for v in stream([*chunk, *states], training=False)]
        names = [*output_names, *state_names]
        worst = max(worst, *(_difference(got[n], w) for n, w in zip(names, want, strict=True)))
        states = [got[name] for name in state_names]
    if not worst <= TOLERANCE:
        raise ValueError(
            f"the streaming TFLite conversion of model `{model.name}` does not compute what Keras computes "
            f"(largest difference {worst:.3g}, more than {TOLERANCE:g}); refused"
        )


def _ids(inventory: Inventory) -> int:
    counts = [
        int(layer.num_ids)
        for _, layer in inventory.tree
        if getattr(layer, "num_ids", None) is not None and hasattr(layer, "state_variables")
    ]
    return min(counts, default=2)


def _difference(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b), initial=0.0)) if a.shape == b.shape else float("inf")

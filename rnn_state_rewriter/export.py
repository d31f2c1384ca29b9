"""Export to TFLite that keeps the learned initial states: `to_tflite`.

The route, measured on TensorFlow 2.21 for SimpleRNN, LSTM, GRU,
Bidirectional and stacked layers of both Keras generations: trace
`model(x, training=False)` as a concrete function with a fixed input
signature and convert that function *without* the model as the converter's
trackable object. The variables are then frozen into constants, the
recurrent loops become TFLite `WHILE` loops of builtin ops, and the learned
states stay constants the loop starts from. The other routes drop or break
the states (see the README's export section): tf-keras' fused LSTM kernel
ignores a constant initial state, and with the model as trackable object the
Keras 3 loops read variables the interpreter does not have.

TensorFlow is imported only when `to_tflite` is called.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_state_rewriter.tflite_inputs import check_arguments, input_spec, random_inputs

TOLERANCE = 1e-5
_CHECK_STEPS = (5, 9)  # time steps the check runs when the model's are variable


def to_tflite(model: Any, *, batch_size: int = 1, steps: int | None = None, streaming: bool = False) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer that predicts what Keras predicts.

    With `streaming=True`, the flatbuffer runs the model one chunk at a time
    (`rsr.streaming_model`), in two signatures: `step` takes the chunk (`x0`,
    `x1`, ... as the model's inputs) and the states (named as the streaming
    model's state inputs, `lstm_state_0`, ...) and gives the outputs (`y0`, ...)
    and the states after the chunk, under the same names; `start` takes the
    context (`context`, where the states are conditioned on one) and gives the
    states a stream starts from (`rsr.start_states`). A stateful model is
    welcome there: the stream carries its state instead of the layer.

    The flatbuffer uses TFLite builtin ops only (no Select TF ops, no
    unrolling) and keeps learned initial states. Before returning, it runs
    the TFLite interpreter on random inputs (twice over, on one interpreter)
    and compares with Keras; it refuses if they differ beyond 1e-5.

    Args:
        model: a built Keras 3 (TensorFlow backend) or tf-keras model with
            known inputs (Functional or Sequential), one input or several.
        batch_size: the batch size of the flatbuffer's inputs (streams side by side), fixed.
        steps: the number of time steps (axis 1 of every sequence input:
            rank 3 or more, or rank 2 of unknown length; a rank-2 input of
            fixed length, such as a context, keeps it). Default: the model's
            own; where the model's is `None`, the flatbuffer accepts any
            number (resize its inputs before `allocate_tensors`). With
            `streaming=True`: the steps of one chunk (default: any).
        streaming: a flatbuffer of `step` and `start` signatures (see above).

    Returns:
        The flatbuffer, to write to a `.tflite` file.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: a bad `batch_size` or `steps`, a model without known
            inputs or with an unknown dimension other than batch and time,
            a Keras 3 model on a backend other than TensorFlow, a stateful
            recurrent layer (unless streaming), a layer that cannot stream
            (streaming), or a conversion that does not predict what Keras
            predicts.
        ImportError: TensorFlow is not installed.

    Example:

    ```python
    >>> import numpy as np, keras, tensorflow as tf
    >>> import rnn_state_rewriter as rsr
    >>> model = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    >>> model = rsr.add_trainable_initial_states(model, initializer="random_normal")
    >>> interpreter = tf.lite.Interpreter(model_content=rsr.to_tflite(model, batch_size=2))
    >>> interpreter.allocate_tensors()
    >>> x = np.ones((2, 6, 3), "float32")
    >>> interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    >>> interpreter.invoke()
    >>> out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    >>> bool(np.allclose(out, model.predict(x, verbose=0), atol=1e-5))
    True

    ```
    """
    if streaming:  # the chunk takes any number of steps, whatever the model's own
        from rnn_state_rewriter.streaming_export import streaming_tflite

        check_arguments(model, batch_size, steps)
        return streaming_tflite(model, batch_size, steps, _tensorflow(model))
    specs = _input_specs(model, batch_size, steps)
    _refuse_stateful(model)
    tf = _tensorflow(model)

    def call(*inputs: Any) -> Any:
        return model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    function = tf.function(call).get_concrete_function(
        *[tf.TensorSpec(shape, tf.as_dtype(dtype), name=name) for name, shape, dtype in specs]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])  # no trackable_obj: see above
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter's own ConverterError, or anything it raises
        first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        raise ValueError(f"TFLite cannot convert model `{model.name}`: {first}") from error
    _check_against_keras(model, flatbuffer, specs)
    return bytes(flatbuffer)


def _input_specs(model: Any, batch_size: int, steps: int | None) -> list[tuple[str, list[int | None], str]]:
    """(name, shape, dtype) of each input, batch fixed, time steps fixed where asked."""
    check_arguments(model, batch_size, steps)
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"Model `{model.name}` has no known inputs (a subclassed or unbuilt model); "
            "build it as a Functional or Sequential model with `Input` layers"
        )
    return [input_spec(index, tensor, batch_size, steps) for index, tensor in enumerate(inputs)]


def _refuse_stateful(model: Any) -> None:
    """A flatbuffer holds constants, not the variables a stateful layer carries its state in."""
    from rnn_state_rewriter.backend import adapter_for
    from rnn_state_rewriter.states import is_recurrent, is_stateful

    for layer in adapter_for(model).sublayers(model):
        if is_recurrent(layer) and is_stateful(layer):
            raise ValueError(
                f"Layer '{layer.name}' of model `{model.name}` is stateful: it carries its state in variables "
                "between calls, which a TFLite flatbuffer of constants cannot hold. Export a copy built with "
                "`stateful=False` (its weights set from this one) and feed the state back as an input."
            )


def _tensorflow(model: Any) -> Any:
    from rnn_state_rewriter.backend import adapter_for

    backend = adapter_for(model, argument="model").backend()
    if backend != "tensorflow":
        raise ValueError(
            f"TFLite export needs TensorFlow: model `{model.name}` runs on the {backend!r} backend. "
            "Save it as a .keras file and convert it where KERAS_BACKEND=tensorflow, or export it to "
            "ONNX with model.export(path, format='onnx')"
        )
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError("TFLite export needs TensorFlow: pip install tensorflow") from None
    return tf


def _check_against_keras(model: Any, flatbuffer: bytes, specs: Sequence[tuple[str, list[int | None], str]]) -> None:
    """Runs the interpreter on random inputs, twice over on one interpreter, and compares with Keras."""
    import tensorflow as tf

    with warnings.catch_warnings():  # the check's own interpreter: its deprecation notice is not the caller's
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    variable = any(len(shape) > 1 and shape[1] is None for _, shape, _ in specs)
    rng = np.random.default_rng(0)
    batches = [random_inputs(specs, rng, steps) for steps in (_CHECK_STEPS if variable else (None, None))]
    for batch in [*batches, batches[0]]:  # the first again: repeated invokes must not drift
        keras_outputs = model(batch[0] if len(batch) == 1 else batch, training=False)
        expected = [np.asarray(x) for x in tf.nest.flatten(keras_outputs)]
        got = _run(interpreter, batch)
        difference = float("inf")
        if [g.shape for g in got] == [e.shape for e in expected]:
            difference = max(
                (float(np.max(np.abs(g - e), initial=0.0)) for g, e in zip(got, expected, strict=True)), default=0.0
            )
        if not difference <= TOLERANCE:
            raise ValueError(
                f"the TFLite conversion of model `{model.name}` does not predict what Keras predicts "
                f"(largest difference {difference:.3g}, more than {TOLERANCE:g}); refused"
            )


def _run(interpreter: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Invokes an allocated interpreter; returns the outputs in Keras' flat order.

    The flatbuffer's inputs are named `x0`, `x1`, ... in the order of
    `model.inputs`, its outputs `Identity`, `Identity_1`, ... in the flat
    order of the model's outputs. Inputs of another shape (another number of
    steps) are resized first.
    """
    details = sorted(interpreter.get_input_details(), key=lambda d: _output_index(d["name"]))
    if any(tuple(d["shape"]) != x.shape for d, x in zip(details, inputs, strict=True)):
        for detail, x in zip(details, inputs, strict=True):
            interpreter.resize_tensor_input(detail["index"], x.shape)
        interpreter.allocate_tensors()
    for detail, x in zip(details, inputs, strict=True):
        interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    outputs = sorted(interpreter.get_output_details(), key=lambda d: _output_index(d["name"]))
    return [interpreter.get_tensor(d["index"]).copy() for d in outputs]


def _output_index(key: str) -> int:
    digits = re.findall(r"\d+", key)
    return int(digits[-1]) if digits else 0

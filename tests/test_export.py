"""Export paths users ship with: SavedModel, TFLite (`to_tflite` and the routes that fail), ONNX.

Every model here has learned (non-zero) initial states that change its
predictions, so an export that drops them is caught.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import rnn_state_rewriter as rsr
from rnn_state_rewriter import export

X = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
KINDS = ["SimpleRNN", "LSTM", "GRU", "Bidirectional", "stacked"]


def retrofitted(K, kind="LSTM", batch_size=None, unroll=False, steps=6):
    """A plain model, its retrofit with random (learned-like) states, and the retrofit's predictions."""
    K.utils.set_random_seed(0)
    layers = K.layers
    inputs = K.Input((steps, 3), batch_size=batch_size)
    if kind == "SimpleRNN":
        x = layers.SimpleRNN(4, name="rnn")(inputs)
    elif kind == "LSTM":
        x = layers.LSTM(4, unroll=unroll, name="lstm")(inputs)
    elif kind == "GRU":
        x = layers.GRU(4, name="gru")(inputs)
    elif kind == "Bidirectional":
        x = layers.Bidirectional(layers.LSTM(3), name="bi")(inputs)
    else:
        x = layers.GRU(3, name="gru")(layers.LSTM(4, return_sequences=True, name="lstm")(inputs))
    plain = K.Model(inputs, layers.Dense(2, name="head")(x))
    new = rsr.add_trainable_initial_states(plain, initializer="random_normal")
    x_check = X[:, :steps] if steps else X
    expected = new.predict(x_check, verbose=0)
    assert np.abs(expected - plain.predict(x_check, verbose=0)).max() > 1e-4, "learned states must matter here"
    return plain, new, expected


def interpret(flatbuffer, *inputs, times=1):
    """Runs a TFLite flatbuffer `times` times on one interpreter; returns every run's outputs."""
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    return [export._run(interpreter, list(inputs)) for _ in range(times)]


# ---------------------------------------------------------------- to_tflite


@pytest.mark.parametrize("kind", KINDS)
def test_to_tflite_keeps_learned_states_and_repeats(K, kind):
    _, model, expected = retrofitted(K, kind)
    runs = interpret(rsr.to_tflite(model, batch_size=2), X, times=3)
    for (got,) in runs:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(runs[0][0], runs[2][0])


def test_to_tflite_with_variable_steps(K):
    _, model, _ = retrofitted(K, "LSTM", steps=None)
    flatbuffer = rsr.to_tflite(model)
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [1, -1, 3]
    for steps in (2, 11, 4):
        x = np.random.default_rng(steps).normal(size=(1, steps, 3)).astype("float32")
        (got,) = export._run(interpreter, [x])
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_to_tflite_fixes_the_steps_asked_for(K):
    _, model, _ = retrofitted(K, "GRU", steps=None)
    interpreter = tf.lite.Interpreter(model_content=rsr.to_tflite(model, batch_size=3, steps=5))
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [3, 5, 3]
    _, fixed, _ = retrofitted(K, "GRU", steps=6)
    with pytest.raises(ValueError, match="6 time steps, not steps=5"):
        rsr.to_tflite(fixed, steps=5)


def test_to_tflite_with_several_inputs_and_outputs(K):
    K.utils.set_random_seed(0)
    sequence, context = K.Input((6, 3), name="sequence"), K.Input((2,), name="context")
    h = K.layers.LSTM(4, name="lstm")(sequence)
    joined = K.layers.Concatenate()([h, K.layers.Dense(4)(context)])
    plain = K.Model([sequence, context], [K.layers.Dense(1, name="a")(joined), K.layers.Dense(3, name="b")(h)])
    model = rsr.add_trainable_initial_states(plain, initializer="random_normal")
    c = np.random.default_rng(1).normal(size=(2, 2)).astype("float32")
    (got,) = interpret(rsr.to_tflite(model, batch_size=2), X, c)
    for g, e in zip(got, model.predict([X, c], verbose=0), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5)


@pytest.mark.parametrize("context, num_ids", [("series_id", 5), ("features", None)])
def test_to_tflite_keeps_states_conditioned_on_a_context_input(K, context, num_ids):
    series = K.Input((6, 3), name="series")
    series_id, features = K.Input((), dtype="int32", name="series_id"), K.Input((2,), name="features")
    plain = K.Model([series, series_id, features], K.layers.GRU(4, name="gru")(series))
    model = rsr.add_trainable_initial_states(plain, context=context, num_ids=num_ids)
    for variable in model.get_layer("gru_initial_state").context_maps:
        variable.assign(np.random.default_rng(2).normal(size=tuple(variable.shape)).astype("float32"))
    inputs = [X, np.array([0, 4], "int32"), np.random.default_rng(1).normal(size=(2, 2)).astype("float32")]
    expected = model.predict(inputs, verbose=0)
    assert np.abs(expected - plain.predict(inputs, verbose=0)).max() > 1e-3, "the context must matter here"
    (got,) = interpret(rsr.to_tflite(model, batch_size=2, steps=6), *inputs)
    np.testing.assert_allclose(got[0], expected, atol=1e-5)


def test_to_tflite_refuses_stateful_layers_and_names_them(K):
    plain = K.Sequential([K.Input(batch_shape=(2, 6, 3)), K.layers.LSTM(3, stateful=True, name="streaming")])
    for model in (plain, rsr.add_trainable_initial_states(plain)):
        with pytest.raises(ValueError, match="Layer 'streaming' .* is stateful"):
            rsr.to_tflite(model, batch_size=2)


def test_to_tflite_refuses_a_conversion_that_differs_from_keras(K, monkeypatch):
    _, model, _ = retrofitted(K, "GRU")
    real_run = export._run
    monkeypatch.setattr(export, "_run", lambda interpreter, inputs: [o + 1e-3 for o in real_run(interpreter, inputs)])
    with pytest.raises(ValueError, match="does not predict what Keras predicts"):
        rsr.to_tflite(model, batch_size=2)


@pytest.mark.parametrize(
    "arguments, error, match",
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 1.5}, ValueError, "batch_size"),
        ({"steps": 0}, ValueError, "steps"),
    ],
)
def test_to_tflite_bad_arguments(K, arguments, error, match):
    _, model, _ = retrofitted(K, "GRU")
    with pytest.raises(error, match=match):
        rsr.to_tflite(model, **arguments)


def test_to_tflite_refuses_non_models_and_unknown_shapes(K):
    with pytest.raises(TypeError):
        rsr.to_tflite(object())
    with pytest.raises(TypeError, match="Keras model"):
        rsr.to_tflite(K.layers.LSTM(3))
    inputs = K.Input((6, None, 3))
    pooled = K.layers.TimeDistributed(K.layers.GlobalAveragePooling1D())(inputs)
    model = K.Model(inputs, K.layers.LSTM(2)(pooled))
    with pytest.raises(ValueError, match="unknown dimension at axis 2"):
        rsr.to_tflite(model)


def test_to_tflite_needs_the_tensorflow_backend():
    code = textwrap.dedent(
        """
        import os
        os.environ["KERAS_BACKEND"] = "jax"
        import keras, rnn_state_rewriter as rsr
        model = keras.Sequential([keras.Input((4, 3)), keras.layers.GRU(2)])
        try:
            rsr.to_tflite(model)
        except ValueError as error:
            print(error)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "TFLite export needs TensorFlow" in result.stdout, result.stderr[-2000:]
    assert "'jax' backend" in result.stdout


# ---------------------------------------------------------------- the other TFLite routes, as measured


def test_tflite_with_unrolled_lstm_matches_keras(K):
    """`unroll=True` with a fixed batch: the converter's default route works in both generations."""
    _, model, expected = retrofitted(K, "LSTM", unroll=True, batch_size=2)
    (got,) = interpret(tf.lite.TFLiteConverter.from_keras_model(model).convert(), X)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_tf_keras_default_route_silently_drops_the_lstm_state():
    """tf-keras `from_keras_model` fuses the LSTM into TFLite's LSTM op, which ignores the constant
    initial state: the flatbuffer predicts what the zero-state model predicts, and a second invoke
    on the same interpreter drifts (the op keeps its state). GRU and SimpleRNN are not fused and work."""
    tf_keras = pytest.importorskip("tf_keras")
    plain, model, expected = retrofitted(tf_keras, "LSTM", batch_size=2)
    first, second = interpret(tf.lite.TFLiteConverter.from_keras_model(model).convert(), X, times=2)
    assert np.abs(first[0] - expected).max() > 1e-4
    np.testing.assert_allclose(first[0], plain.predict(X, verbose=0), atol=1e-5)
    assert np.abs(second[0] - first[0]).max() > 1e-4
    _, gru, gru_expected = retrofitted(tf_keras, "GRU", batch_size=2)
    (got,) = interpret(tf.lite.TFLiteConverter.from_keras_model(gru).convert(), X)[0]
    np.testing.assert_allclose(got, gru_expected, atol=1e-5)


def test_keras3_saved_model_route_does_not_convert(tmp_path):
    """Keras 3 `model.export()` serves a signature with a free batch size, whose loop TFLite's
    builtin ops cannot hold (`from_keras_model` works when the model's batch size is fixed)."""
    import keras

    _, model, expected = retrofitted(keras, "LSTM", batch_size=2)
    model.export(str(tmp_path / "served"), verbose=False)
    with pytest.raises(Exception, match="TensorListReserve"):
        tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "served")).convert()
    (got,) = interpret(tf.lite.TFLiteConverter.from_keras_model(model).convert(), X)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_concrete_function_with_the_model_as_trackable_object_fails(K, is_keras3):
    """The route `to_tflite` takes, but with the model passed as trackable object: Keras 3 loops
    then read variables the interpreter does not hold; tf-keras' LSTM is fused and drops its state."""
    plain, model, expected = retrofitted(K, "LSTM")
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec((2, 6, 3)))
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([function], model).convert()
    if is_keras3:
        with pytest.raises(RuntimeError, match="READ_VARIABLE|variable != nullptr"):
            interpret(flatbuffer, X)
        return
    (got,) = interpret(flatbuffer, X)[0]
    np.testing.assert_allclose(got, plain.predict(X, verbose=0), atol=1e-5)


# ---------------------------------------------------------------- SavedModel and ONNX


def test_saved_model_served_through_tf_saved_model_load(K, is_keras3, tmp_path):
    _, model, expected = retrofitted(K, "Bidirectional")
    path = str(tmp_path / "served")
    if is_keras3:
        model.export(path, verbose=False)
        loaded = tf.saved_model.load(path)  # kept: its variables die with it
        served = loaded.serve(tf.constant(X)).numpy()
    else:
        model.save(path, save_format="tf")
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
        served = next(iter(signature(tf.constant(X)).values())).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_onnx_keeps_learned_states(K, is_keras3, tmp_path):
    """Keras 3: `model.export(path, format="onnx")` (after one call); tf-keras: `tf2onnx.convert.from_keras`."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")  # Keras 3 converts through it on the TensorFlow backend too
    _, model, expected = retrofitted(K, "Bidirectional")
    path = str(tmp_path / "model.onnx")
    if is_keras3:
        model(X[:1])  # Keras 3.15 refuses to export a model that was never called
        model.export(path, format="onnx", verbose=False)
    else:
        import tf2onnx

        signature = [tf.TensorSpec((None, 6, 3), tf.float32, name="x")]
        tf2onnx.convert.from_keras(model, input_signature=signature, output_path=path)
    session = onnxruntime.InferenceSession(path)
    name = session.get_inputs()[0].name
    first, second = session.run(None, {name: X})[0], session.run(None, {name: X})[0]
    np.testing.assert_allclose(first, expected, atol=1e-5)
    np.testing.assert_array_equal(first, second)


# ---------------------------------------------------------------- to_tflite(streaming=True)


def _signatures(flatbuffer):
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    return interpreter, interpreter.get_signature_runner("step"), interpreter.get_signature_runner("start")


def _builtin_only(flatbuffer):
    """The flatbuffer's operator codes name no custom (Select TF) operator."""
    return b"Flex" not in flatbuffer


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_a_streaming_flatbuffer_steps_from_its_start_as_keras_runs_the_whole(K, chunk):
    inputs = K.Input((None, 3), name="x")
    x = K.layers.LSTM(4, return_sequences=True, name="lstm")(inputs)
    x = K.layers.GRU(3, return_sequences=True, name="gru")(x)
    model = rsr.add_trainable_initial_states(K.Model(inputs, K.layers.Dense(2, name="head")(x)), initializer="ones")
    flatbuffer = rsr.to_tflite(model, streaming=True, batch_size=2, steps=chunk)
    assert _builtin_only(flatbuffer)
    interpreter, step, start = _signatures(flatbuffer)
    assert sorted(interpreter.get_signature_list()) == ["start", "step"]
    states = start()
    names = ["lstm_state_0", "lstm_state_1", "gru_state_0"]
    assert sorted(states) == sorted(names)
    for name, value in zip(names, rsr.start_states(model, batch_size=2), strict=True):
        np.testing.assert_allclose(states[name], value, atol=1e-6)
    size = chunk or 3
    outputs = []
    for begin in range(0, 6, size):
        result = step(x0=X[:, begin : begin + size], **states)
        outputs.append(result["y0"])
        states = {name: result[name] for name in names}
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), np.asarray(model(X, training=False)), atol=1e-5)


def test_a_streaming_flatbuffer_starts_each_id_from_its_own_state(K):
    series = K.Input((None, 3), name="series")
    series_id = K.Input((), dtype="int32", name="series_id")
    x = K.layers.GRU(4, return_sequences=True, name="gru")(series)
    model = K.Model([series, series_id], K.layers.Dense(1, name="head")(x))
    model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=5)
    for layer in model.layers:
        for variable in getattr(layer, "context_maps", []):
            variable.assign(np.random.default_rng(1).normal(size=variable.shape).astype("float32"))
    ids = np.array([4, 1], dtype="int32")
    _, step, start = _signatures(rsr.to_tflite(model, streaming=True, batch_size=2, steps=3))
    states = start(context=ids)
    np.testing.assert_allclose(states["gru_state_0"], rsr.start_states(model, 2, context=ids)[0], atol=1e-6)
    first = step(x0=X[:, :3], x1=ids, **states)
    second = step(x0=X[:, 3:], x1=ids, gru_state_0=first["gru_state_0"])
    whole = np.asarray(model([X, ids], training=False))
    np.testing.assert_allclose(np.concatenate([first["y0"], second["y0"]], axis=1), whole, atol=1e-5)


def test_a_stateful_model_streams_in_a_flatbuffer(K):
    inputs = K.Input(batch_shape=(2, 3, 3), name="x")
    x = K.layers.LSTM(4, stateful=True, return_sequences=True, name="lstm")(inputs)
    model = rsr.add_trainable_initial_states(K.Model(inputs, x), initializer="ones")
    with pytest.raises(ValueError, match="stateful"):
        rsr.to_tflite(model, batch_size=2)
    _, step, start = _signatures(rsr.to_tflite(model, streaming=True, batch_size=2))
    rsr.reset_states(model)
    states = start()
    for begin in (0, 3):
        result = step(x0=X[:, begin : begin + 3], **states)
        np.testing.assert_allclose(result["y0"], model.predict(X[:, begin : begin + 3], verbose=0), atol=1e-5)
        states = {name: result[name] for name in states}


def test_a_streaming_flatbuffer_refuses_what_cannot_stream(K):
    inputs = K.Input((None, 3), name="x")
    model = K.Model(inputs, K.layers.Bidirectional(K.layers.LSTM(3), name="bi")(inputs))
    with pytest.raises(ValueError, match="Layer 'bi' .* cannot stream"):
        rsr.to_tflite(model, streaming=True)


def test_a_streaming_model_exports_to_onnx_and_streams_in_onnxruntime(K, is_keras3, tmp_path):
    """Keras 3: `model.export(path, format="onnx")`; tf-keras: `tf2onnx.convert.from_keras`."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    inputs = K.Input((None, 3), name="x")
    x = K.layers.LSTM(4, return_sequences=True, name="lstm")(inputs)
    model = rsr.add_trainable_initial_states(K.Model(inputs, K.layers.Dense(1, name="head")(x)), initializer="ones")
    stream = rsr.streaming_model(model)
    states = rsr.start_states(model, batch_size=2)
    path = str(tmp_path / "stream.onnx")
    if is_keras3:
        stream([X[:, :3], *states])  # Keras 3.15 refuses to export a model that was never called
        stream.export(path, format="onnx", verbose=False)
    else:
        import tf2onnx

        signature = [tf.TensorSpec((None, None, 3), tf.float32, name="x")]
        signature += [tf.TensorSpec((None, 4), tf.float32, name=f"lstm_state_{i}") for i in range(2)]
        tf2onnx.convert.from_keras(stream, input_signature=signature, output_path=path)
    session = onnxruntime.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    first = session.run(None, dict(zip(names, [X[:, :2], *states], strict=True)))
    second = session.run(None, dict(zip(names, [X[:, 2:], *first[1:]], strict=True)))
    whole = np.asarray(model(X, training=False))
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], axis=1), whole, atol=1e-5)


def test_a_streaming_model_exports_as_a_saved_model_that_streams(K, is_keras3, tmp_path):
    inputs = K.Input((None, 3), name="x")
    x = K.layers.GRU(4, return_sequences=True, name="gru")(inputs)
    model = rsr.add_trainable_initial_states(K.Model(inputs, K.layers.Dense(1, name="head")(x)), initializer="ones")
    stream = rsr.streaming_model(model)
    states = rsr.start_states(model, batch_size=2)
    path = str(tmp_path / "stream")
    if is_keras3:
        stream.export(path, format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(path)
        serve = loaded.serve
    else:
        stream.save(path, save_format="tf")
        loaded = tf.saved_model.load(path)
        names = [t.name.split(":")[0] for t in stream.inputs]
        signature = loaded.signatures["serving_default"]

        def serve(values):
            outputs = signature(**{n: tf.constant(v) for n, v in zip(names, values, strict=True)})
            return [outputs[name] for name in stream.output_names]

    first = serve([X[:, :3], *states])
    second = serve([X[:, 3:], *[np.asarray(s) for s in first[1:]]])
    whole = np.asarray(model(X, training=False))
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], axis=1), whole, atol=1e-5)

"""Export paths users ship with: SavedModel served through tf.saved_model.load, and TFLite."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import rnn_state_rewriter as rsr

X = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")


def retrofitted(K, unroll=False, batch_size=None, bidirectional=False):
    K.utils.set_random_seed(0)
    inputs = K.Input((6, 3), batch_size=batch_size)
    x = K.layers.LSTM(4, return_sequences=True, unroll=unroll, name="lstm")(inputs)
    if bidirectional:
        x = K.layers.Bidirectional(K.layers.GRU(3, return_sequences=True), name="bi")(x)
    plain = K.Model(inputs, K.layers.Dense(1, name="head")(x))
    new = rsr.add_trainable_initial_states(plain, initializer="random_normal")
    expected = new.predict(X, verbose=0)
    assert np.abs(expected - plain.predict(X, verbose=0)).max() > 1e-4, "learned states must matter here"
    return plain, new, expected


def test_saved_model_served_through_tf_saved_model_load(K, is_keras3, tmp_path):
    _, model, expected = retrofitted(K, bidirectional=True)
    path = str(tmp_path / "served")
    if is_keras3:
        model.export(path, verbose=False)
        loaded = tf.saved_model.load(path)
        served = loaded.serve(tf.constant(X)).numpy()
    else:
        model.save(path, save_format="tf")
        loaded = tf.saved_model.load(path)
        signature = loaded.signatures["serving_default"]
        served = next(iter(signature(tf.constant(X)).values())).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def _tflite(K, model, tmp_path):
    if K.__name__ == "keras":
        model.export(str(tmp_path / "for_tflite"), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "for_tflite"))
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], X.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], X)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_tflite_with_unrolled_lstm_matches_keras(K, tmp_path):
    _, model, expected = retrofitted(K, unroll=True, batch_size=2)
    np.testing.assert_allclose(_tflite(K, model, tmp_path), expected, atol=1e-5)


def test_tflite_with_a_looping_lstm_does_not_work(K, is_keras3, tmp_path):
    """Where TFLite cannot carry the learned state, this shows how it fails (the README says so).

    Keras 3: the converter refuses the LSTM's loop (plain models too, without
    Select TF ops). tf-keras: the converter fuses the LSTM into TFLite's
    sequence-LSTM op, which ignores the initial state it is given: the
    converted model predicts what the zero-state model predicts.
    """
    plain, model, expected = retrofitted(K, batch_size=2)
    if is_keras3:
        with pytest.raises(Exception, match="TensorListReserve"):
            _tflite(K, model, tmp_path)
        return
    got = _tflite(K, model, tmp_path)
    assert np.abs(got - expected).max() > 1e-4
    np.testing.assert_allclose(got, plain.predict(X, verbose=0), atol=1e-5)

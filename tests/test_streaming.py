"""Streaming: a model run chunk by chunk, its states fed back, gives what it gives on the whole sequence;
a stream starts (and restarts) from `start_states`, the learned start of a retrofitted model."""

from __future__ import annotations

import numpy as np
import pytest

import rnn_state_rewriter as rsr

STEPS, FEATURES, BATCH, IDS = 7, 3, 2, 5


def _sequences(seed=0, batch=BATCH, steps=STEPS):
    return np.random.default_rng(seed).normal(size=(batch, steps, FEATURES)).astype("float32")


def _stacked(K, last_sequences=True, batch=None, stateful=False):
    inputs = K.Input(batch_shape=(batch, None, FEATURES), name="x")
    x = K.layers.LSTM(4, return_sequences=True, stateful=stateful, name="lstm")(inputs)
    x = K.layers.TimeDistributed(K.layers.Dense(5, activation="tanh"), name="per_step")(x)
    x = K.layers.LayerNormalization(name="norm")(x)
    x = K.layers.Dropout(0.5, name="dropout")(x)
    x = K.layers.GRU(3, return_sequences=last_sequences, stateful=stateful, name="gru")(x)
    return K.Model(inputs, K.layers.Dense(2, name="head")(x))


def _shifted(model, **options):
    """A retrofit whose learned start is far from zero, so that a stream from zeros would differ."""
    return rsr.add_trainable_initial_states(model, initializer="random_normal", **options)


def _stream(stream, states, chunks, extra=()):
    """Runs `stream` over `chunks` (each a list of the model's inputs), carrying the states; the outputs of
    each chunk, and the states after the last."""
    count = len(stream.outputs) - len(states)
    outputs = []
    for chunk in chunks:
        results = stream([*chunk, *extra, *states], training=False)
        results = [np.asarray(r.detach().cpu() if hasattr(r, "detach") else r) for r in results]
        outputs.append(results[:count])
        states = results[count:]
    return outputs, states


def _run(model, inputs):
    """The model on whole sequences, called directly: Keras 3's `TimeDistributed` computes wrong values in
    a `predict` function traced for another number of time steps, so `predict` on prefixes cannot be the
    reference."""
    outputs = model(inputs, training=False)
    return np.asarray(outputs.detach().cpu() if hasattr(outputs, "detach") else outputs)


def _chunks(x, size):
    return [[x[:, start : start + size]] for start in range(0, x.shape[1], size)]


@pytest.mark.parametrize("size", [1, 3, STEPS])
def test_chunk_by_chunk_is_the_whole_sequence(K, size):
    model = _shifted(_stacked(K))
    x = _sequences()
    whole = _run(model, x)
    stream = rsr.streaming_model(model)
    outputs, _ = _stream(stream, rsr.start_states(model, batch_size=BATCH), _chunks(x, size))
    np.testing.assert_allclose(np.concatenate([o[0] for o in outputs], axis=1), whole, atol=1e-5)


def test_inputs_and_outputs_are_named_by_layer_and_state(K):
    stream = rsr.streaming_model(_shifted(_stacked(K)))
    names = [t.name.split(":")[0] for t in stream.inputs]
    assert names == ["x", "lstm_state_0", "lstm_state_1", "gru_state_0"]
    assert len(stream.outputs) == 4
    assert [layer.name for layer in stream.layers if layer.name.endswith("_after")] == [
        "lstm_state_0_after",
        "lstm_state_1_after",
        "gru_state_0_after",
    ]


def test_a_last_layer_without_sequences_gives_the_prefix(K):
    model = _shifted(_stacked(K, last_sequences=False))
    x = _sequences()
    stream = rsr.streaming_model(model)
    outputs, _ = _stream(stream, rsr.start_states(model, batch_size=BATCH), _chunks(x, 3))
    for index, end in enumerate([3, 6, STEPS]):  # after each chunk: the model on the sequence so far
        np.testing.assert_allclose(outputs[index][0], _run(model, x[:, :end]), atol=1e-5)


def test_a_reset_starts_a_second_stream_afresh(K):
    model = _shifted(_stacked(K))
    stream = rsr.streaming_model(model)
    _stream(stream, rsr.start_states(model, batch_size=BATCH), _chunks(_sequences(1), 2))
    second = _sequences(2)
    outputs, _ = _stream(stream, rsr.start_states(model, batch_size=BATCH), _chunks(second, 2))
    whole = _run(model, second)
    np.testing.assert_allclose(np.concatenate([o[0] for o in outputs], axis=1), whole, atol=1e-5)


def test_a_plain_model_streams_from_zeros(K):
    model = _stacked(K)
    assert all(not s.any() for s in rsr.start_states(model, batch_size=3))
    x = _sequences()
    outputs, _ = _stream(rsr.streaming_model(model), rsr.start_states(model, batch_size=BATCH), _chunks(x, 4))
    np.testing.assert_allclose(np.concatenate([o[0] for o in outputs], axis=1), _run(model, x), atol=1e-5)


def test_the_streaming_model_shares_the_per_step_layers_and_copies_the_recurrent_ones(K):
    model = _shifted(_stacked(K))
    stream = rsr.streaming_model(model)
    layers = {layer.name: layer for layer in stream.layers}
    assert layers["head"] is model.get_layer("head")
    assert layers["lstm"] is not model.get_layer("lstm")
    assert not layers["lstm"].stateful


def _with_ids(K):
    series = K.Input((None, FEATURES), name="series")
    series_id = K.Input((), dtype="int32", name="series_id")
    x = K.layers.GRU(4, return_sequences=True, name="gru")(series)
    return K.Model([series, series_id], K.layers.Dense(1, name="head")(x))


def test_each_id_starts_from_its_own_learned_state(K):
    model = _shifted(_with_ids(K), context="series_id", num_ids=IDS)
    for layer in model.layers:  # one state per id, each its own (they start at zero: as the original)
        for variable in getattr(layer, "context_maps", []):
            variable.assign(np.random.default_rng(3).normal(size=variable.shape).astype("float32"))
    x, ids = _sequences(), np.array([1, 4], dtype="int32")
    starts = rsr.start_states(model, batch_size=BATCH, context=ids)
    assert starts[0].shape == (BATCH, 4)
    assert not np.allclose(starts[0][0], starts[0][1])
    outputs, _ = _stream(rsr.streaming_model(model), starts, [[x[:, :3], ids], [x[:, 3:], ids]])
    whole = _run(model, [x, ids])
    np.testing.assert_allclose(np.concatenate([o[0] for o in outputs], axis=1), whole, atol=1e-5)
    with pytest.raises(ValueError, match="conditioned on a context: pass `context=`"):
        rsr.start_states(model, batch_size=BATCH)


def test_a_float_context_conditions_the_start(K):
    series = K.Input((None, FEATURES), name="series")
    features = K.Input((2,), name="features")
    x = K.layers.LSTM(4, return_sequences=True, name="lstm")(series)
    model = K.Model([series, features], K.layers.Dense(1, name="head")(x))
    model = _shifted(model, context="features")
    for layer in model.layers:  # a map that is not zero, so that the context matters
        for variable in getattr(layer, "context_maps", []):
            variable.assign(np.full(variable.shape, 0.3, dtype="float32"))
    x, features = _sequences(), np.array([[1.0, -1.0], [0.5, 2.0]], dtype="float32")
    starts = rsr.start_states(model, batch_size=BATCH, context=features)
    outputs, _ = _stream(rsr.streaming_model(model), starts, [[x[:, :2], features], [x[:, 2:], features]])
    np.testing.assert_allclose(np.concatenate([o[0] for o in outputs], axis=1), _run(model, [x, features]), atol=1e-5)


def test_a_stateful_retrofit_streams_as_it_carries_its_state(K):
    model = _shifted(_stacked(K, batch=BATCH, stateful=True))
    x = _sequences()
    rsr.reset_states(model)
    carried = [_run(model, x[:, :4]), _run(model, x[:, 4:])]
    stream = rsr.streaming_model(model)
    outputs, _ = _stream(stream, rsr.start_states(model, batch_size=BATCH), [[x[:, :4]], [x[:, 4:]]])
    for streamed, kept in zip(outputs, carried, strict=True):
        np.testing.assert_allclose(streamed[0], kept, atol=1e-5)


def test_an_embedding_and_a_masked_sequence_stream(K):
    """At a masked step a layer repeats its last output, which a chunk that starts masked has not seen:
    the outputs there are the mask's to hide; every other output, and the states, are the whole run's."""
    tokens = K.Input((None,), dtype="int32", name="tokens")
    x = K.layers.Embedding(9, 4, mask_zero=True, name="embedding")(tokens)
    x = K.layers.LSTM(3, return_sequences=True, name="lstm")(x)
    x = K.layers.GRU(2, return_sequences=True, name="gru")(x)
    model = _shifted(K.Model(tokens, K.layers.Dense(1, name="head")(x)))
    ids = np.array([[3, 4, 0, 0, 5, 6], [1, 0, 2, 8, 0, 7]], dtype="int32")
    stream = rsr.streaming_model(model)
    outputs, states = _stream(stream, rsr.start_states(model, batch_size=2), _chunks(ids, 2))
    streamed = np.concatenate([o[0] for o in outputs], axis=1)
    kept = ids != 0
    np.testing.assert_allclose(streamed[kept], _run(model, ids)[kept], atol=1e-5)
    _, whole = _stream(stream, rsr.start_states(model, batch_size=2), [[ids]])
    for a, b in zip(states, whole, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _refused(K, name):
    inputs = K.Input((STEPS, FEATURES), name="x")
    x = inputs
    if name == "bidirectional":
        x = K.layers.Bidirectional(K.layers.LSTM(3, return_sequences=True), name="bidirectional")(x)
    elif name == "pooling":
        x = K.layers.LSTM(3, return_sequences=True, name="lstm")(x)
        x = K.layers.GlobalAveragePooling1D(name="pooling")(x)
    elif name == "convolution":
        x = K.layers.Conv1D(3, 3, padding="same", name="convolution")(x)
        x = K.layers.LSTM(3, name="lstm")(x)
    elif name == "attention":
        x = K.layers.LSTM(3, return_sequences=True, name="lstm")(x)
        x = K.layers.Attention(name="attention")([x, x])
    elif name == "time_norm":
        x = K.layers.LayerNormalization(axis=1, name="time_norm")(K.layers.LSTM(3, return_sequences=True)(x))
    return K.Model(inputs, x)


@pytest.mark.parametrize("name", ["bidirectional", "pooling", "convolution", "attention", "time_norm"])
def test_layers_that_mix_time_steps_are_refused_by_name(K, name):
    model = _refused(K, name)
    with pytest.raises(ValueError, match=f"Layer '{name}' .* cannot stream"):
        rsr.streaming_model(model)


def test_layers_that_read_no_time_axis_are_welcome(K):
    series = K.Input((None, FEATURES), name="series")
    features = K.Input((2,), name="features")
    context = K.layers.Dense(3, name="context_net")(features)  # a per-sequence input: no time axis
    last = K.layers.LSTM(4, name="lstm")(series)
    x = K.layers.Concatenate(name="join")([last, context])
    x = K.layers.Reshape((7, 1), name="reshape")(x)  # after the recurrent layer: reads no time axis
    model = K.Model([series, features], K.layers.Flatten(name="flat")(x))
    stream = rsr.streaming_model(model)
    x, f = _sequences(), np.ones((BATCH, 2), dtype="float32")
    outputs, _ = _stream(stream, rsr.start_states(model, batch_size=BATCH), [[x[:, :3], f], [x[:, 3:], f]])
    np.testing.assert_allclose(outputs[-1][0], _run(model, [x, f]), atol=1e-5)


def test_a_subclassed_model_is_refused(K):
    from conftest import subclassed_model

    model = subclassed_model(K)
    with pytest.raises(ValueError, match="subclassed"):
        rsr.streaming_model(model)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_start_states_takes_a_positive_batch_size(K, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        rsr.start_states(_stacked(K), batch_size=batch_size)


def test_a_model_built_for_a_fixed_length_takes_chunks_of_any_length(K):
    inputs = K.Input((STEPS, FEATURES), name="x")
    model = _shifted(K.Model(inputs, K.layers.Dense(1, name="head")(K.layers.GRU(4, name="gru")(inputs))))
    stream = rsr.streaming_model(model)
    assert tuple(stream.inputs[0].shape) == (None, None, FEATURES)
    x = _sequences()
    states = rsr.start_states(model, batch_size=BATCH)
    for chunk in _chunks(x, 2):
        prediction, *states = stream.predict_on_batch([*chunk, *states])
    np.testing.assert_allclose(prediction, _run(model, x), atol=1e-5)


def test_the_streaming_model_exports_to_onnx_on_jax_and_pytorch(K, is_keras3, tmp_path):
    """Keras 3's `model.export(format="onnx")` from JAX (jax2onnx) or PyTorch (torch.onnx): the exporter
    traces the loop at its sample's length, one step, so the ONNX model streams one step at a time."""
    from conftest import BACKEND

    if not is_keras3 or BACKEND == "tensorflow":
        pytest.skip("TensorFlow and tf-keras export to ONNX through tf2onnx: tests/test_export.py")
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx" if BACKEND == "jax" else "onnxscript")
    inputs = K.Input((None, FEATURES), name="x")
    x = K.layers.LSTM(4, return_sequences=True, name="lstm")(inputs)
    model = _shifted(K.Model(inputs, K.layers.Dense(1, name="head")(x)))
    stream = rsr.streaming_model(model)
    x, states = _sequences(), rsr.start_states(model, batch_size=BATCH)
    stream([x[:, :1], *states])  # Keras 3.15 refuses to export a model that was never called
    path = str(tmp_path / "stream.onnx")
    stream.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path)
    names = [i.name for i in session.get_inputs()]
    outputs = []
    for step in range(STEPS):
        results = session.run(None, dict(zip(names, [x[:, step : step + 1], *states], strict=True)))
        outputs.append(results[0])
        states = results[1:]
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), _run(model, x), atol=1e-5)


def test_the_streaming_model_exports_as_a_torch_program_that_steps(K, is_keras3, tmp_path):
    """Keras 3's `model.export(format="torch")` on PyTorch: an ExportedProgram traced at its sample's shape
    (one stream, one step), which then streams one step at a time."""
    from conftest import BACKEND

    if not is_keras3 or BACKEND != "torch":
        pytest.skip("format='torch' exports from the PyTorch backend")
    import torch

    inputs = K.Input((None, FEATURES), name="x")
    x = K.layers.GRU(4, return_sequences=True, name="gru")(inputs)
    model = _shifted(K.Model(inputs, K.layers.Dense(1, name="head")(x)))
    stream = rsr.streaming_model(model)
    x, states = _sequences(batch=1), rsr.start_states(model, batch_size=1)
    stream([x[:, :1], *states])
    path = str(tmp_path / "stream.pt2")
    stream.export(path, format="torch", verbose=False)
    program = torch.export.load(path).module()
    states, outputs = [torch.tensor(s) for s in states], []
    for step in range(STEPS):
        results = program([torch.tensor(x[:, step : step + 1]), *states])
        outputs.append(results[0].detach().numpy())
        states = list(results[1:])
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), _run(model, x), atol=1e-5)

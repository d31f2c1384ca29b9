"""Stateful recurrent layers with a trainable initial state: they start from it, carry their state from
batch to batch as before, and return to it on reset; retrofitted, they predict as the original.

Batches are fed by calling the model (`model(x)`), which carries state on every backend (Keras 3's JAX
trainer runs `predict` and `fit` statelessly, so there a stateful layer carries nothing between them,
retrofitted or not).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradients, to_numpy

import rnn_state_rewriter as rsr

BATCH, STEPS, FEATURES = 2, 4, 3


def _kinds(K):
    L = K.layers
    return {
        "LSTM": lambda: L.LSTM(3, stateful=True, name="rnn"),
        "GRU": lambda: L.GRU(2, stateful=True, name="rnn"),
        "SimpleRNN": lambda: L.SimpleRNN(2, stateful=True, name="rnn"),
        "Bidirectional(LSTM)": lambda: L.Bidirectional(L.LSTM(2, stateful=True), name="rnn"),
        "stacked cells": lambda: L.RNN([L.LSTMCell(2), L.GRUCell(3)], stateful=True, name="rnn"),
    }


KINDS = ["LSTM", "GRU", "SimpleRNN", "Bidirectional(LSTM)", "stacked cells"]


def _model(K, kind):
    inputs = K.Input(batch_shape=(BATCH, STEPS, FEATURES))
    x = _kinds(K)[kind]()(inputs)
    return K.Model(inputs, K.layers.Dense(1, name="head")(x))


def _batches(count=3, seed=0):
    return np.random.default_rng(seed).normal(size=(count, BATCH, STEPS, FEATURES)).astype("float32")


def _run(model, batches):
    return [to_numpy(model(batch)) for batch in batches]


def _set_learned(wrapper, seed=1):
    rng = np.random.default_rng(seed)
    for variable in wrapper.state_variables:
        variable.assign(rng.normal(size=tuple(variable.shape)).astype("float32"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_retrofitted_stateful_model_predicts_as_the_original_over_batches_and_after_resets(K, kind):
    model = _model(K, kind)
    new_model = rsr.add_trainable_initial_states(model)
    (decision,) = rsr.plan_trainable_initial_states(model)
    assert (decision.action, decision.route, decision.stateful) == ("add", "wrap", True)
    wrapper = new_model.get_layer("rnn")
    assert isinstance(wrapper, rsr.TrainableInitialStateRNN) and wrapper.stateful
    batches = _batches()
    before = _run(model, batches)
    after = _run(new_model, batches)
    assert not np.allclose(before[0], before[1])  # the state is carried
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    rsr.reset_states(model)
    rsr.reset_states(new_model)
    np.testing.assert_allclose(_run(model, batches[:1])[0], _run(new_model, batches[:1])[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_the_first_batch_after_a_reset_starts_from_the_learned_state_and_the_next_carries_on(K, kind):
    new_model = rsr.add_trainable_initial_states(_model(K, kind))
    wrapper = new_model.get_layer("rnn")
    _set_learned(wrapper)
    learned = [to_numpy(v) for v in wrapper.state_variables]
    # The same weights, not stateful, run over both batches joined in time from the learned state.
    config = {**wrapper.layer.get_config(), "stateful": False}
    plain = type(wrapper.layer).from_config(config)
    inputs = K.Input((None, FEATURES))
    start = [K.Input((value.shape[-1],)) for value in learned]
    reference = K.Model([inputs, *start], new_model.get_layer("head")(plain(inputs, initial_state=start)))
    plain.set_weights(wrapper.layer.get_weights())
    first, second = _batches(2)
    starts = [np.repeat(value[None], BATCH, axis=0) for value in learned]

    rsr.reset_states(new_model)
    np.testing.assert_allclose(to_numpy(new_model(first)), to_numpy(reference([first, *starts])), atol=1e-5)
    joined = np.concatenate([first, second], axis=1)
    np.testing.assert_allclose(to_numpy(new_model(second)), to_numpy(reference([joined, *starts])), atol=1e-5)
    wrapper.reset_state()  # the layer's own reset does the same
    np.testing.assert_allclose(to_numpy(new_model(first)), to_numpy(reference([first, *starts])), atol=1e-5)


def test_the_gradient_reaches_the_learned_state_through_the_first_batch_after_a_reset_only(K):
    new_model = rsr.add_trainable_initial_states(_model(K, "GRU"))
    wrapper = new_model.get_layer("rnn")
    _set_learned(wrapper)
    first, second = _batches(2)
    rsr.reset_states(new_model)
    (grad,) = gradients(new_model, first, wrapper.state_variables)
    assert grad is not None and np.abs(grad).sum() > 0
    new_model(first)  # carried on: the next batch starts from the carried state, not the learned one
    (grad,) = gradients(new_model, second, wrapper.state_variables)
    assert grad is None or np.abs(grad).sum() == 0


def test_every_reset_users_call_returns_to_the_learned_state(K, is_keras3):
    new_model = rsr.add_trainable_initial_states(_model(K, "LSTM"))
    wrapper = new_model.get_layer("rnn")
    _set_learned(wrapper)
    batch = _batches(1)
    rsr.reset_states(new_model)
    expected = to_numpy(new_model(batch[0]))
    resets = [wrapper.reset_state, wrapper.reset_states, lambda: rsr.reset_states(new_model)]
    if not is_keras3:
        resets.append(new_model.reset_states)  # tf-keras' own, which asks each layer whether it is stateful
    for reset in resets:
        new_model(batch[0])
        reset()
        np.testing.assert_allclose(to_numpy(new_model(batch[0])), expected, atol=1e-6)


def test_a_reset_to_given_states_starts_from_them(K, is_keras3):
    if is_keras3:
        pytest.skip("Keras 3's reset_state takes no states")
    new_model = rsr.add_trainable_initial_states(_model(K, "GRU"))
    wrapper = new_model.get_layer("rnn")
    _set_learned(wrapper)
    given = np.full((BATCH, 2), 0.5, "float32")
    wrapper.reset_states(given)
    from_given = to_numpy(new_model(_batches(1)[0]))
    wrapper.reset_states()
    assert not np.allclose(from_given, to_numpy(new_model(_batches(1)[0])))


def test_a_reloaded_stateful_model_starts_reset_from_its_learned_state(K, tmp_path):
    new_model = rsr.add_trainable_initial_states(_model(K, "Bidirectional(LSTM)"))
    _set_learned(new_model.get_layer("rnn"))
    batches = _batches()
    _run(new_model, batches)  # mid-stream when saved: the carried state is not saved, as in Keras
    path = str(tmp_path / "stateful.keras")
    new_model.save(path)
    loaded = K.models.load_model(path)
    rsr.reset_states(new_model)
    for a, b in zip(_run(new_model, batches), _run(loaded, batches), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert loaded.get_layer("rnn").stateful


def test_removing_the_states_gives_back_the_plain_stateful_layer(K):
    model = _model(K, "GRU")
    plain = rsr.remove_trainable_initial_states(rsr.add_trainable_initial_states(model))
    assert type(plain.get_layer("rnn")) is type(model.get_layer("rnn"))
    batches = _batches()
    for a, b in zip(_run(model, batches), _run(plain, batches), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_self_check_leaves_carried_states_and_reset_flags_as_they_were(K):
    model = _model(K, "LSTM")
    new_model = rsr.add_trainable_initial_states(model, check=True)
    wrapper = new_model.get_layer("rnn")
    assert float(to_numpy(wrapper.starts_fresh)) == 1.0
    assert all(np.abs(to_numpy(v)).sum() == 0 for v in wrapper.states)
    _set_learned(wrapper)
    rsr.reset_states(new_model)
    expected = to_numpy(new_model(_batches(1)[0]))
    rsr.reset_states(new_model)
    again = rsr.add_trainable_initial_states(model, check=True)
    assert again is not new_model
    np.testing.assert_allclose(to_numpy(new_model(_batches(1)[0])), expected, atol=1e-6)


def test_stateful_layers_in_a_submodel_and_a_custom_layer_get_learned_states(K):
    inner_in = K.Input(batch_shape=(BATCH, STEPS, FEATURES))
    inner = K.Model(inner_in, K.layers.GRU(2, stateful=True, name="gru")(inner_in), name="encoder")

    class Holder(K.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lstm = K.layers.LSTM(2, stateful=True, name="lstm")

        def build(self, input_shape):
            self.lstm.build(input_shape)

        def call(self, x):
            return self.lstm(x)

    inputs = K.Input(batch_shape=(BATCH, STEPS, FEATURES))
    outputs = K.layers.Concatenate()([inner(inputs), Holder(name="holder")(inputs)])
    model = K.Model(inputs, outputs)
    new_model = rsr.add_trainable_initial_states(model, check=False)
    decisions = {d.path: d for d in rsr.plan_trainable_initial_states(model)}
    assert {path: (d.action, d.route) for path, d in decisions.items()} == {
        "encoder/gru": ("add", "wrap"),
        "holder/lstm": ("add", "surgery"),
    }
    batches = _batches()
    for a, b in zip(_run(model, batches), _run(new_model, batches), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert set(rsr.initial_states(new_model)) == {"encoder/gru", "holder/lstm"}


def test_the_wrapper_gives_a_stateful_layer_a_learned_start(K):
    wrapper = rsr.TrainableInitialStateRNN(K.layers.GRU(2, stateful=True), initializer="ones")
    model = K.Sequential([K.Input(batch_shape=(BATCH, STEPS, FEATURES)), wrapper])
    batches = _batches()
    first = to_numpy(model(batches[0]))
    model(batches[1])
    wrapper.reset_state()
    np.testing.assert_allclose(to_numpy(model(batches[0])), first, atol=1e-6)
    assert wrapper.stateful and len(wrapper.states) == 1
    assert len(wrapper.weights) == len(wrapper.layer.weights) + 1  # the reset flag is not a weight


def test_a_mixed_precision_stateful_model_retrofits_and_predicts_as_the_original(K):
    K.mixed_precision.set_global_policy("mixed_float16")
    model = _model(K, "LSTM")
    new_model = rsr.add_trainable_initial_states(model)
    batches = _batches()
    for batch in batches:  # through `predict`: the symbolic path, where tf-keras compares dtypes
        np.testing.assert_allclose(
            model.predict(batch, verbose=0, batch_size=BATCH),
            new_model.predict(batch, verbose=0, batch_size=BATCH),
            atol=1e-3,
        )


def test_resetting_a_model_skips_wrappers_around_layers_that_are_not_stateful(K):
    inputs = K.Input(batch_shape=(BATCH, STEPS, FEATURES))
    x = rsr.TrainableInitialStateRNN(K.layers.GRU(2, return_sequences=True), name="plain")(inputs)
    model = K.Model(inputs, K.layers.LSTM(2, stateful=True, name="rnn")(x))
    new_model = rsr.add_trainable_initial_states(model)
    first = to_numpy(new_model(_batches(1)[0]))
    new_model(_batches(1)[0])
    rsr.reset_states(new_model)  # the wrapper around the GRU is not stateful: left alone, no error
    np.testing.assert_allclose(to_numpy(new_model(_batches(1)[0])), first, atol=1e-6)

"""Subclassed models and recurrent layers inside custom layers get learned states, by layer surgery."""

from __future__ import annotations

import functools
import textwrap

import numpy as np
import pytest
from conftest import BACKEND, assert_same_weights, run_on_backend, snapshot, to_numpy

import rnn_state_rewriter as rsr

IDS = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 1], [2, 2, 3, 3, 4]], "int32")


def text_generation_model(K, is_keras3, get_config=True):
    """The text generation tutorial's `MyModel`: the model asks its GRU for the starting state."""

    class MyModel(K.Model):
        def __init__(self, vocab_size=12, embedding_dim=4, rnn_units=5, **kwargs):
            super().__init__(**kwargs)
            self.vocab_size, self.embedding_dim, self.rnn_units = vocab_size, embedding_dim, rnn_units
            self.embedding = K.layers.Embedding(vocab_size, embedding_dim)
            self.gru = K.layers.GRU(rnn_units, return_sequences=True, return_state=True, name="gru")
            self.dense = K.layers.Dense(vocab_size)

        def call(self, inputs, states=None, return_state=False, training=False):
            x = self.embedding(inputs, training=training)
            if states is None:
                states = self.gru.get_initial_state(K.ops.shape(x)[0] if is_keras3 else x)
            x, states = self.gru(x, initial_state=states, training=training)
            x = self.dense(x, training=training)
            return (x, states) if return_state else x

        def get_config(self):
            if not get_config:
                raise NotImplementedError
            units = {"vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim, "rnn_units": self.rnn_units}
            return {**super().get_config(), **units}

    model = MyModel()
    model(IDS)
    return model


def test_subclassed_model_gets_a_learned_state_its_code_asks_for(K, is_keras3):
    model = text_generation_model(K, is_keras3)
    before = snapshot(model)
    (decision,) = rsr.plan_trainable_initial_states(model)
    assert (decision.path, decision.action, decision.route) == ("gru", "add", "surgery")
    new = rsr.add_trainable_initial_states(model)
    assert new is not model and isinstance(new, type(model))
    assert new.gru.gives_trainable_initial_state
    np.testing.assert_allclose(to_numpy(new(IDS)), to_numpy(model(IDS)), atol=1e-6)
    assert list(rsr.initial_states(new)) == ["gru"]

    new.compile(K.optimizers.Adam(0.05), K.losses.SparseCategoricalCrossentropy(from_logits=True))
    new.fit(IDS, IDS, epochs=2, verbose=0)
    assert np.abs(rsr.initial_states(new)["gru"][0]).max() > 1e-3, "the state did not train"
    assert_same_weights(before, snapshot(model))
    learned = rsr.initial_states(new)["gru"][0]
    asked = to_numpy(new.gru.get_initial_state(2 if is_keras3 else np.zeros((2, 5, 4), "float32"))[0])
    np.testing.assert_allclose(np.reshape(asked, (2, -1)), np.stack([learned, learned]), atol=1e-6)

    plain = rsr.remove_trainable_initial_states(new)
    assert not getattr(plain.gru, "gives_trainable_initial_state", False)
    shifted = new(IDS)
    np.testing.assert_allclose(to_numpy(plain(IDS)), to_numpy(rsr.remove_trainable_initial_states(new)(IDS)))
    assert np.abs(to_numpy(plain(IDS)) - to_numpy(shifted)).max() > 1e-5


def test_a_model_that_cannot_be_copied_is_refused_with_the_in_place_route(K, is_keras3, tmp_path):
    model = text_generation_model(K, is_keras3, get_config=False)
    expected = to_numpy(model(IDS))
    with pytest.raises(TypeError, match="in_place=True"):
        rsr.add_trainable_initial_states(model)
    same = rsr.add_trainable_initial_states(model, in_place=True, initializer="ones")
    assert same is model and model.gru.gives_trainable_initial_state
    assert np.abs(to_numpy(model(IDS)) - expected).max() > 1e-4, "a state of ones must change the outputs"

    # Saving: the weights, loaded into a fresh model retrofitted the same way.
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    fresh = text_generation_model(K, is_keras3, get_config=False)
    rsr.add_trainable_initial_states(fresh, in_place=True)
    fresh.load_weights(path)
    np.testing.assert_allclose(to_numpy(fresh(IDS)), to_numpy(model(IDS)), atol=1e-6)


def test_a_passed_initial_state_is_kept_by_the_wrapped_decoder(K):
    class Seq2Seq(K.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.encoder = K.layers.LSTM(4, return_state=True, name="encoder")
            self.decoder = K.layers.LSTM(4, return_sequences=True, name="decoder")

        def call(self, inputs):
            _, h, c = self.encoder(inputs)
            return self.decoder(inputs, initial_state=[h, c])

    model = Seq2Seq()
    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")
    model(x)
    new = rsr.add_trainable_initial_states(model, layers=["decoder"], initializer="ones", in_place=False)
    assert list(rsr.initial_states(new)) == ["decoder"]
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(model(x)), atol=1e-6)  # the encoder's state rules


def test_recurrent_layers_inside_a_custom_layer_of_a_functional_model(K, tmp_path):
    class Block(K.layers.Layer):
        """Holds its recurrent layers in a list and a dict, as custom layers do."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.stack = [
                K.layers.LSTM(3, return_sequences=True, name="lstm"),
                K.layers.GRU(3, return_sequences=True, name="gru"),
            ]
            self.by_name = {"last": K.layers.SimpleRNN(2, name="simple_rnn")}

        def call(self, inputs):
            x = inputs
            for layer in self.stack:
                x = layer(x)
            return self.by_name["last"](x)

    inputs = K.Input((5, 2))
    model = K.Model(inputs, K.layers.Dense(1)(Block(name="block")(inputs)))
    x = np.random.default_rng(1).normal(size=(4, 5, 2)).astype("float32")
    decisions = rsr.plan_trainable_initial_states(model)
    assert [(d.path, d.action) for d in decisions] == [  # keyed by Keras names, as variable paths are
        ("block/lstm", "add"),
        ("block/gru", "add"),
        ("block/simple_rnn", "add"),
    ]
    new = rsr.add_trainable_initial_states(model)
    assert sorted(rsr.initial_states(new)) == ["block/gru", "block/lstm", "block/simple_rnn"]
    np.testing.assert_allclose(new.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    new.compile(K.optimizers.Adam(0.05), "mse")
    new.fit(x, np.ones((4, 1)), epochs=2, verbose=0)
    assert all(np.abs(v[0]).max() > 1e-3 for v in rsr.initial_states(new).values())
    plain = rsr.remove_trainable_initial_states(new)
    assert rsr.initial_states(plain) == {}


def test_a_functional_submodel_held_by_a_subclassed_model(K):
    inner_in = K.Input((5, 2))
    encoder = K.Model(inner_in, K.layers.LSTM(3, name="lstm")(inner_in), name="encoder")

    class Wrapper(K.Model):
        def __init__(self, encoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.head = K.layers.Dense(1)

        def call(self, inputs):
            return self.head(self.encoder(inputs))

    model = Wrapper(encoder)
    x = np.random.default_rng(2).normal(size=(3, 5, 2)).astype("float32")
    expected = to_numpy(model(x))
    new = rsr.add_trainable_initial_states(model, in_place=True, sample=x)
    assert new is model and new.encoder is not encoder
    assert list(rsr.initial_states(new)) == ["encoder/lstm"]
    np.testing.assert_allclose(to_numpy(new(x)), expected, atol=1e-6)


# ---------------------------------------------------------------- saving


@functools.cache
def registered_text_generation_class(K, is_keras3):
    """The tutorial's model as a class Keras can reload: registered, once per generation."""
    base = type(text_generation_model(K, is_keras3))
    name = f"RegisteredTextGeneration_{K.__name__}"
    return K.saving.register_keras_serializable("rsr_test_surgery", name)(type(name, (base,), {}))


def test_a_subclassed_model_reloads_from_a_keras_file_with_its_learned_states(K, is_keras3, tmp_path):
    model = registered_text_generation_class(K, is_keras3)()
    model(IDS)
    new = rsr.add_trainable_initial_states(model, initializer="random_normal")
    path = str(tmp_path / "model.keras")
    new.save(path)
    reloaded = K.models.load_model(path)
    assert reloaded.gru.gives_trainable_initial_state
    np.testing.assert_allclose(to_numpy(reloaded(IDS)), to_numpy(new(IDS)), atol=1e-6)
    np.testing.assert_allclose(rsr.initial_states(reloaded)["gru"][0], rsr.initial_states(new)["gru"][0])
    plain = rsr.remove_trainable_initial_states(reloaded)
    np.testing.assert_allclose(to_numpy(plain(IDS)), to_numpy(model(IDS)), atol=1e-6)


def test_a_custom_layer_in_a_functional_model_reloads_with_its_learned_states(K, tmp_path):
    name = f"RsrSurgeryBlock_{K.__name__}"
    registered = K.saving.get_registered_object(f"rsr_test_surgery>{name}")
    if registered is None:

        class Block(K.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.lstm = K.layers.LSTM(3, name="lstm")

            def call(self, inputs):
                return self.lstm(inputs)

        registered = K.saving.register_keras_serializable("rsr_test_surgery", name)(Block)
    inputs = K.Input((5, 2))
    model = K.Model(inputs, K.layers.Dense(1)(registered(name="block")(inputs)))
    x = np.random.default_rng(3).normal(size=(4, 5, 2)).astype("float32")
    new = rsr.add_trainable_initial_states(model, initializer="ones")
    path = str(tmp_path / "model.keras")
    new.save(path)
    reloaded = K.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-6)
    assert list(rsr.initial_states(reloaded)) == ["block/lstm"]
    again = rsr.add_trainable_initial_states(reloaded)  # already there: nothing added, nothing lost
    np.testing.assert_allclose(again.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-6)


def test_the_time_series_feedback_model_warms_up_from_the_learned_state(K, is_keras3):
    """The time series tutorial's `FeedBack`: an RNN over a cell it also calls step by step itself."""
    stack = K.ops.stack if is_keras3 else __import__("tensorflow").stack

    class FeedBack(K.Model):
        def __init__(self, units=8, out_steps=3, **kwargs):
            super().__init__(**kwargs)
            self.out_steps, self.units = out_steps, units
            self.lstm_cell = K.layers.LSTMCell(units)
            self.lstm_rnn = K.layers.RNN(self.lstm_cell, return_state=True, name="lstm_rnn")
            self.dense = K.layers.Dense(2)

        def call(self, inputs, training=None):
            x, *state = self.lstm_rnn(inputs)
            predictions = [self.dense(x)]
            for _ in range(1, self.out_steps):
                x, state = self.lstm_cell(predictions[-1], states=state, training=training)
                predictions.append(self.dense(x))
            return stack(predictions, axis=1)

        def get_config(self):
            return {**super().get_config(), "units": self.units, "out_steps": self.out_steps}

    model = FeedBack()
    x = np.random.default_rng(4).normal(size=(4, 6, 2)).astype("float32")
    model(x)
    new = rsr.add_trainable_initial_states(model)
    assert list(rsr.initial_states(new)) == ["lstm_rnn"]
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(model(x)), atol=1e-6)
    new.compile(K.optimizers.Adam(0.05), "mse")
    new.fit(x, np.ones((4, 3, 2), "float32"), epochs=2, verbose=0)
    assert np.abs(rsr.initial_states(new)["lstm_rnn"][0]).max() > 1e-3


def test_a_fresh_process_loads_a_retrofitted_custom_layer_after_importing_the_package(tmp_path):
    """The loader of retrofitted objects is registered by `import rnn_state_rewriter` (after `keras`)."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras
        import rnn_state_rewriter as rsr

        @keras.saving.register_keras_serializable("rsr_fresh_process")
        class Block(keras.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.lstm = keras.layers.LSTM(3)

            def call(self, inputs):
                return self.lstm(inputs)

        path, x = sys.argv[2], np.ones((2, 5, 2), "float32")
        if sys.argv[1] == "write":
            inputs = keras.Input((5, 2))
            model = keras.Model(inputs, Block(name="block")(inputs))
            rsr.add_trainable_initial_states(model, initializer="ones").save(path)
        else:
            states = rsr.initial_states(keras.models.load_model(path))
            print(sorted(states), [v.tolist() for v in states["block/lstm"]])
        """
    )
    path = str(tmp_path / "model.keras")
    assert run_on_backend(BACKEND, code, "write", path).returncode == 0
    result = run_on_backend(BACKEND, code, "read", path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['block/lstm'] [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]"


def test_noise_applies_to_layers_reached_by_surgery_and_the_file_keeps_it(K, tmp_path):
    @K.saving.register_keras_serializable(package="test_surgery_noise")
    class Encoder(K.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lstm = K.layers.LSTM(4)

        def call(self, x):
            return self.lstm(x)

    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")
    model = Encoder()
    model(x)
    new = rsr.add_trainable_initial_states(model, noise_stddev=0.5)
    assert new.lstm.noise_stddev == 0.5
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(model(x)), atol=1e-6)  # inference: no noise
    assert np.abs(to_numpy(new(x, training=True)) - to_numpy(model(x))).max() > 1e-3
    path = str(tmp_path / "noisy.keras")
    new.save(path)
    assert K.models.load_model(path).lstm.noise_stddev == 0.5

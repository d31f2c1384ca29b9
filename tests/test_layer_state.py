"""A layer's state beyond its weights reaches the retrofitted copy, as Keras' own saving keeps it.

Adapted preprocessing layers hold statistics that `load_own_variables` must
finalize (`Normalization`) or vocabularies that are assets, not variables
(`StringLookup`, `IntegerLookup`, `TextVectorization`). A custom layer may save
its state its own way. Each case: predictions unchanged, original untouched,
and the copy saved and reloaded gives the same predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND, assert_same_weights, snapshot, to_numpy

import rnn_state_rewriter as rsr

STRINGS_NEED_TENSORFLOW = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="string tensors in a model need the TensorFlow backend"
)


def _numbers():
    return (np.random.default_rng(1).normal(size=(5, 6, 3)) * 7 + 20).astype("float32")


def _check(K, model, x, tmp_path, file_format="keras"):
    """The copy predicts what the original predicts, the original is untouched, and a reload keeps it."""
    before = snapshot(model)
    new = rsr.add_trainable_initial_states(model)
    expected = to_numpy(model(x))
    np.testing.assert_allclose(to_numpy(new(x)), expected, atol=1e-5)
    assert_same_weights(before, snapshot(model))
    path = str(tmp_path / f"model.{file_format}")
    new.save(path)
    reloaded = K.models.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded(x)), expected, atol=1e-5)
    return new


def test_adapted_normalization_keeps_its_statistics(K, tmp_path):
    x = _numbers()
    norm = K.layers.Normalization(axis=-1)
    norm.adapt(x.reshape(-1, 3))
    model = K.Sequential([K.Input((6, 3)), norm, K.layers.LSTM(4, return_sequences=True), K.layers.Dense(1)])
    _check(K, model, x, tmp_path)


def test_normalization_inside_a_custom_layer_keeps_its_statistics(K, tmp_path):
    x = _numbers()

    class Scaled(K.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.norm = K.layers.Normalization(axis=-1)

        def build(self, input_shape):
            self.norm.build(input_shape)

        def call(self, inputs):
            return self.norm(inputs) * 2.0

    scaled = Scaled(name="scaled")
    scaled.build((None, 6, 3))
    scaled.norm.adapt(x)
    inputs = K.Input((6, 3))
    model = K.Model(inputs, K.layers.GRU(3)(scaled(inputs)))
    new = rsr.add_trainable_initial_states(model)
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(model(x)), atol=1e-5)


def test_a_custom_layer_that_saves_its_own_way_is_copied_through_its_saving_methods(K):
    x = _numbers()

    class Offset(K.layers.Layer):
        """Keeps an offset that is no variable: saved by `save_own_variables` and as an asset."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.offset = 0.0
            self.label = ""

        def call(self, inputs):
            return inputs + self.offset

        def save_own_variables(self, store):
            store["offset"] = np.array(self.offset, "float32")

        def load_own_variables(self, store):
            self.offset = float(store["offset"])

        def save_assets(self, dir_path):
            with open(f"{dir_path}/label.txt", "w") as f:
                f.write(self.label)

        def load_assets(self, dir_path):
            with open(f"{dir_path}/label.txt") as f:
                self.label = f.read()

    offset = Offset(name="offset")
    offset.offset, offset.label = 3.5, "kept"
    inputs = K.Input((6, 3))
    model = K.Model(inputs, K.layers.LSTM(2)(offset(inputs)))
    new = rsr.add_trainable_initial_states(model)
    copied = new.get_layer("offset")
    assert copied is not offset
    assert (copied.offset, copied.label) == (3.5, "kept")
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(model(x)), atol=1e-5)


@STRINGS_NEED_TENSORFLOW
def test_adapted_text_vectorization_keeps_its_vocabulary(K, is_keras3, tmp_path):
    texts = np.array(["the cat sat on the mat", "a dog ran far away", "the end", "cat and dog"])
    vectorize = K.layers.TextVectorization(max_tokens=30, output_sequence_length=6)
    vectorize.adapt(texts)
    inputs = K.Input((), dtype="string") if is_keras3 else K.Input((1,), dtype="string")
    x = vectorize(inputs)
    x = K.layers.Embedding(30, 4, mask_zero=True)(x)
    x = K.layers.Bidirectional(K.layers.LSTM(3))(x)
    model = K.Model(inputs, K.layers.Dense(1)(x))
    new = _check(K, model, texts if is_keras3 else texts[:, None], tmp_path)
    assert new.layers[1].get_vocabulary() == vectorize.get_vocabulary()


@STRINGS_NEED_TENSORFLOW
def test_adapted_string_lookup_keeps_its_vocabulary(K, tmp_path):
    tokens = np.array([["b", "a", "c", "a"], ["c", "c", "d", "b"], ["a", "e", "b", "b"]])
    lookup = K.layers.StringLookup()
    lookup.adapt(tokens)
    inputs = K.Input((4,), dtype="string")
    x = K.layers.Embedding(lookup.vocabulary_size(), 3)(lookup(inputs))
    model = K.Model(inputs, K.layers.GRU(2)(x))
    _check(K, model, tokens, tmp_path)


def test_adapted_integer_lookup_keeps_its_vocabulary(K, is_keras3, tmp_path):
    if BACKEND != "tensorflow" and is_keras3:
        pytest.skip("Keras 3's lookup layers run on TensorFlow tables")
    ids = np.array([[7, 3, 9, 3], [9, 9, 42, 7], [3, 3, 7, 5]], "int64")
    lookup = K.layers.IntegerLookup()
    lookup.adapt(ids)
    inputs = K.Input((4,), dtype="int64")
    model = K.Model(inputs, K.layers.LSTM(2)(K.layers.Embedding(lookup.vocabulary_size(), 3)(lookup(inputs))))
    _check(K, model, ids, tmp_path)


def test_adapted_discretization_keeps_its_bin_boundaries(K, is_keras3, tmp_path):
    if BACKEND != "tensorflow" and is_keras3:
        pytest.skip("Keras 3's Discretization.adapt runs on tf.data")
    values = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    bins = K.layers.Discretization(num_bins=4)
    bins.adapt(values)
    inputs = K.Input((4,))
    model = K.Model(inputs, K.layers.LSTM(2)(K.layers.Embedding(4, 3)(bins(inputs))))
    # tf-keras' `.keras` loader never calls `finalize_state`, so it loses the bin boundaries of
    # any adapted Discretization (the original's too); its `.h5` loader keeps them.
    _check(K, model, values, tmp_path, file_format="keras" if is_keras3 else "h5")

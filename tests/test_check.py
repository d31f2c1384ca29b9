"""The retrofit checks its own promise on a probe batch, and names the layer that breaks it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same_weights, snapshot, to_numpy

import rnn_state_rewriter as rsr
from rnn_state_rewriter.options import RetrofitOptions
from rnn_state_rewriter.rewrite import retrofit


def hidden_state_layer(K):
    """A layer whose state is an attribute that neither its config nor its saving methods carry."""

    class Shift(K.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.shift = 0.0

        def call(self, inputs):
            return inputs + self.shift

    return Shift


def model_with_hidden_state(K):
    shift = hidden_state_layer(K)(name="shift")
    shift.shift = 2.5
    inputs = K.Input((5, 3), name="x")
    x = K.layers.Dense(3, name="dense")(inputs)
    x = K.layers.LSTM(4, return_sequences=True, name="lstm")(shift(x))
    return K.Model(inputs, K.layers.Dense(1, name="head")(x))


def test_a_copy_that_predicts_otherwise_is_refused_naming_the_first_layer_that_differs(K):
    model = model_with_hidden_state(K)
    before = snapshot(model)
    with pytest.raises(rsr.RetrofitMismatchError, match="'shift'") as caught:
        rsr.add_trainable_initial_states(model)
    assert caught.value.layer == "shift"
    assert caught.value.max_change > 0.01
    assert isinstance(caught.value, ValueError)
    assert_same_weights(before, snapshot(model))


def test_check_false_returns_the_copy_unchecked(K):
    model = model_with_hidden_state(K)
    new = rsr.add_trainable_initial_states(model, check=False)
    x = np.ones((2, 5, 3), "float32")
    assert np.abs(to_numpy(new(x)) - to_numpy(model(x))).max() > 0.01


def test_the_check_measures_the_largest_change_on_a_sample_the_user_gives(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.GRU(4, name="gru"), K.layers.Dense(2)])
    sample = np.random.default_rng(0).normal(size=(7, 5, 3)).astype("float32")
    new, probe = retrofit(model, RetrofitOptions(sample=sample))
    assert probe.samples == 7
    assert probe.max_change < 1e-5
    assert "gru_initial_state" in [layer.name for layer in new.layers]


def test_the_check_runs_at_zero_states_whatever_the_initializer(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm")])
    new = rsr.add_trainable_initial_states(model, initializer="ones", check=True)
    assert all(np.all(v == 1.0) for v in rsr.initial_states(new)["lstm"])


def test_the_probe_batch_fits_integer_ids_masks_and_fixed_batches(K):
    ids = K.Input((6,), dtype="int32", name="ids")
    mask = K.Input((6,), dtype="bool", name="mask")
    x = K.layers.Embedding(3, 4, name="embedding")(ids)  # ids >= 3 would fail
    model = K.Model([ids, mask], K.layers.LSTM(2, name="lstm")(x, mask=mask))
    _, probe = retrofit(model, RetrofitOptions(check=True))
    assert probe.max_change < 1e-5

    fixed = K.Sequential([K.Input((5, 2), batch_size=4), K.layers.LSTM(3, name="lstm")])
    _, probe = retrofit(fixed, RetrofitOptions(check=True))
    assert probe.samples == 4


def test_the_check_leaves_the_carried_state_of_stateful_layers_as_it_was(K):
    inputs = K.Input((5, 2), batch_size=2)
    x = K.layers.GRU(3, stateful=True, return_sequences=True, name="stateful")(inputs)
    model = K.Model(inputs, K.layers.LSTM(2, name="lstm")(x))
    batch = np.random.default_rng(1).normal(size=(2, 5, 2)).astype("float32")
    model(batch)  # the stateful layer now carries a non-zero state
    layer = model.get_layer("stateful")
    carried = [np.array(s) for s in layer.states]
    new_model = rsr.add_trainable_initial_states(model, check=True)
    wrapper = new_model.get_layer("stateful")
    assert float(np.array(wrapper.starts_fresh)) == 1.0  # the copy starts reset, as made
    assert all(not np.array(s).any() for s in wrapper.states)
    for before, after in zip(carried, layer.states, strict=True):
        np.testing.assert_array_equal(before, np.array(after))


def test_by_default_the_check_runs_where_the_construction_cannot_vouch_for_the_copy(K):
    x = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    builtin = K.Sequential([K.Input((5, 3)), K.layers.Bidirectional(K.layers.LSTM(4)), K.layers.Dense(2)])
    assert retrofit(builtin, RetrofitOptions())[1] is None  # exact by construction: not run
    assert retrofit(builtin, RetrofitOptions(check=True))[1].max_change < 1e-5

    norm = K.layers.Normalization(name="norm")
    norm.adapt(x)
    adapted = K.Sequential([K.Input((5, 3)), norm, K.layers.LSTM(4, name="lstm")])
    custom = K.Sequential([K.Input((5, 3)), hidden_state_layer(K)(name="shift"), K.layers.LSTM(4, name="lstm")])
    for model in (adapted, custom):
        assert retrofit(model, RetrofitOptions())[1].samples == 3, model.layers
        assert retrofit(model, RetrofitOptions(check=False))[1] is None


def test_a_lambda_is_vouched_for_its_copy_holds_the_same_live_function(K):
    def double(v):
        return v * 2.0

    for function in (double, lambda v: v * 3.0):
        model = K.Sequential([K.Input((5, 3)), K.layers.Lambda(function, name="f"), K.layers.LSTM(4, name="lstm")])
        new_model, probe = retrofit(model, RetrofitOptions())
        assert probe is None  # exact by construction: not run
        assert new_model.get_layer("f").function is function
        assert retrofit(model, RetrofitOptions(check=True))[1].max_change < 1e-5


def test_check_takes_auto_true_or_false(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm")])
    with pytest.raises(ValueError, match="`check` must be"):
        rsr.add_trainable_initial_states(model, check="always")

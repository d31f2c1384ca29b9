"""Initial states conditioned on a context: the learned state plus a learned map of a float context, or
one learned state per integer id. Zero at first, so a retrofit predicts as the original."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gradients, to_numpy

import rnn_state_rewriter as rsr

IDS = 7


def _model(K, stateful=False):
    batch = 4 if stateful else None
    series = K.Input(batch_shape=(batch, 6, 2), name="series")
    series_id = K.Input(batch_shape=(batch,), dtype="int32", name="series_id")
    features = K.Input(batch_shape=(batch, 3), name="features")
    summary = K.layers.Dense(5, name="summary")(features)
    x = K.layers.Bidirectional(K.layers.LSTM(3, return_sequences=True, stateful=stateful), name="bi")(series)
    x = K.layers.GRU(4, name="gru", stateful=stateful)(x)
    outputs = K.layers.Dense(1, name="head")(K.layers.Concatenate()([x, summary]))
    return K.Model([series, series_id, features], outputs)


def _inputs(seed=0, batch=4):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(batch, 6, 2)).astype("float32"),
        (np.arange(batch) % IDS).astype("int32"),
        rng.normal(size=(batch, 3)).astype("float32"),
    ]


CONTEXTS = {"ids": ("series_id", IDS), "float input": ("features", None), "layer output": ("summary", None)}


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_a_context_retrofit_predicts_as_the_original_and_learns_a_map(K, context):
    name, num_ids = CONTEXTS[context]
    model = _model(K)
    new_model = rsr.add_trainable_initial_states(model, context=name, num_ids=num_ids)
    inputs = _inputs()
    np.testing.assert_allclose(to_numpy(model(inputs)), to_numpy(new_model(inputs)), atol=1e-6)
    decisions = rsr.plan_trainable_initial_states(model, context=name, num_ids=num_ids)
    assert {(d.path, d.context, d.num_ids) for d in decisions} == {("bi", name, num_ids), ("gru", name, num_ids)}
    maps = rsr.context_maps(new_model)
    features = 5 if name == "summary" else 3
    expected = [(IDS, 3)] * 4 if num_ids else [(features, 3)] * 4
    assert [m.shape for m in maps["bi"]] == expected and all(not m.any() for m in maps["bi"])
    # The gradient reaches each map, and the learned states.
    state_layer = new_model.get_layer("gru_initial_state")
    grads = gradients(new_model, inputs, [*state_layer.state_variables, *state_layer.context_maps])
    assert all(g is not None and np.abs(g).sum() > 0 for g in grads)


def test_one_learned_state_per_id_makes_the_ids_start_apart(K):
    model = _model(K)
    new_model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=IDS)
    table = new_model.get_layer("gru_initial_state").context_maps[0]
    table.assign(np.arange(IDS * 4, dtype="float32").reshape(IDS, 4) / 10)
    inputs = _inputs()
    same_series = [np.repeat(inputs[0][:1], 4, axis=0), inputs[1], np.repeat(inputs[2][:1], 4, axis=0)]
    outputs = to_numpy(new_model(same_series))
    assert len({round(float(v), 5) for v in outputs.ravel()}) == 4  # one start per id: four outputs
    np.testing.assert_allclose(rsr.context_maps(new_model)["gru"][0], to_numpy(table))


def test_a_context_model_saves_reloads_and_removes(K, tmp_path):
    model = _model(K)
    new_model = rsr.add_trainable_initial_states(model, context="features", initializer="glorot_uniform")
    kernel = new_model.get_layer("bi_initial_state").context_maps[1]
    kernel.assign(np.random.default_rng(3).normal(size=tuple(kernel.shape)).astype("float32"))
    inputs = _inputs(1)
    path = str(tmp_path / "context.keras")
    new_model.save(path)
    loaded = K.models.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(inputs)), to_numpy(new_model(inputs)), atol=1e-6)
    plain = rsr.remove_trainable_initial_states(loaded)
    np.testing.assert_allclose(to_numpy(plain(inputs)), to_numpy(model(inputs)), atol=1e-6)
    assert rsr.context_maps(plain) == {}


def test_stateful_layers_reset_to_a_state_conditioned_on_the_context(K):
    model = _model(K, stateful=True)
    new_model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=IDS)
    assert {d.route for d in rsr.plan_trainable_initial_states(model, context="series_id", num_ids=IDS)} == {"wrap"}
    batches = [_inputs(seed) for seed in range(3)]
    for batch in batches:
        np.testing.assert_allclose(to_numpy(model(batch)), to_numpy(new_model(batch)), atol=1e-6)
    wrapper = new_model.get_layer("gru")
    wrapper.context_maps[0].assign(np.ones((IDS, 4), "float32"))
    rsr.reset_states(new_model)
    first = to_numpy(new_model(batches[0]))
    new_model(batches[1])
    rsr.reset_states(new_model)
    np.testing.assert_allclose(to_numpy(new_model(batches[0])), first, atol=1e-6)


def test_noise_and_per_state_options_apply_with_a_context(K):
    model = _model(K)
    new_model = rsr.add_trainable_initial_states(
        model, context="features", noise_stddev=0.5, regularizer=[None, "l2", None, "l2"], layers=["bi"]
    )
    inputs = _inputs()
    state_layer = new_model.get_layer("bi_initial_state")
    assert len(state_layer.losses) == 2
    noisy = [to_numpy(state) for state in state_layer(inputs[0], context=inputs[2], training=True)]
    clean = [to_numpy(state) for state in state_layer(inputs[0], context=inputs[2], training=False)]
    assert all(not np.allclose(a, b) for a, b in zip(noisy, clean, strict=True))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"context": "nothing"}, "names no input or layer"),
        ({"context": "series"}, "floats of shape"),
        ({"context": "series_id"}, "pass `num_ids=`"),
        ({"context": "features", "num_ids": 3}, "integer ids"),
        ({"context": "series_id", "num_ids": 0}, "positive integer"),
        ({"num_ids": 3}, "needs `context=`"),
        ({"context": "head"}, "computed from the output of layer"),
    ],
)
def test_a_bad_context_is_a_value_error_that_names_it(K, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rsr.add_trainable_initial_states(_model(K), **kwargs)


def test_a_context_does_not_reach_into_submodels(K):
    inner_in = K.Input((6, 2))
    inner = K.Model(inner_in, K.layers.GRU(2, name="gru")(inner_in), name="encoder")
    series, features = K.Input((6, 2)), K.Input((3,), name="features")
    model = K.Model([series, features], K.layers.Concatenate()([inner(series), features]))
    with pytest.raises(ValueError, match="'encoder/gru' is inside a submodel"):
        rsr.add_trainable_initial_states(model, context="features")


def test_the_layers_take_a_context_at_call_time(K):
    lstm = K.layers.LSTM(3)
    lstm.build((None, 5, 2))
    states = rsr.TrainableInitialState.for_layer(lstm, context_dim=4)
    sequences = np.zeros((2, 5, 2), "float32")
    context = np.ones((2, 4), "float32")
    assert [tuple(s.shape) for s in states(sequences, context=context)] == [(2, 3), (2, 3)]
    assert states.get_config()["context_dim"] == 4
    with pytest.raises(ValueError, match="pass it as `context=`"):
        states(sequences)
    with pytest.raises(ValueError, match=r"floats of shape \(batch, 4\)"):
        states(sequences, context=np.ones((2, 4, 1), "float32"))
    wrapper = rsr.TrainableInitialStateRNN(K.layers.GRU(2), num_ids=5)
    ids = np.array([0, 4], "int32")
    out = wrapper(sequences, context=ids)
    assert tuple(out.shape) == (2, 2)
    wrapper.context_maps[0].assign(np.arange(10, dtype="float32").reshape(5, 2))
    np.testing.assert_allclose(to_numpy(wrapper.get_initial_state(2, context=ids)[0]), [[0, 1], [8, 9]])
    with pytest.raises(ValueError, match="no context map"):
        rsr.TrainableInitialStateRNN(K.layers.GRU(2))(sequences, context=ids)
    with pytest.raises(ValueError, match="exclusive"):
        rsr.TrainableInitialStateRNN(K.layers.GRU(2), num_ids=5, context_dim=3)


def test_an_id_outside_the_table_gets_the_shared_learned_state_on_every_backend(K):
    model = _model(K)
    new_model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=IDS, layers=["gru"])
    new_model.get_layer("gru_initial_state").context_maps[0].assign(np.ones((IDS, 4), "float32"))
    inputs = _inputs()
    unknown = [inputs[0], np.array([-1, IDS, IDS + 5, 10**6], "int32"), inputs[2]]
    np.testing.assert_allclose(to_numpy(new_model(unknown)), to_numpy(model(unknown)), atol=1e-6)
    assert not np.allclose(to_numpy(new_model(inputs)), to_numpy(model(inputs)), atol=1e-3)


def test_a_context_can_be_one_output_of_a_layer_with_several(K):
    source, target = K.Input((6, 2), name="source"), K.Input((4, 2), name="target")
    _, h = K.layers.GRU(3, return_state=True, name="encoder")(source)
    model = K.Model([source, target], [K.layers.LSTM(2, name="decoder")(target), h])
    with pytest.raises(ValueError, match="name one as 'encoder:K', K from 0 to 1"):
        rsr.add_trainable_initial_states(model, context="encoder", layers=["decoder"])
    new_model = rsr.add_trainable_initial_states(model, context="encoder:1", layers=["decoder"])
    assert [m.shape for m in rsr.context_maps(new_model)["decoder"]] == [(3, 2), (3, 2)]
    inputs = [np.ones((2, 6, 2), "float32"), np.ones((2, 4, 2), "float32")]
    for a, b in zip(new_model(inputs), model(inputs), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6)

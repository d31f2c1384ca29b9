"""add_/remove_trainable_initial_states and initial_states on the models users retrofit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_same_weights, seed, snapshot, subclassed_model, uncloneable_layer

import rnn_state_rewriter as rsr

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.normal(size=shape).astype("float32")


def predict(model, x):
    return model.predict(x, verbose=0)


def assert_outputs_equal(a, b, atol=1e-6):
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_allclose(p, q, atol=atol, rtol=1e-6)


def check_retrofit(K, model, x, y, expect_states=None, **options):
    """The four promises of every retrofit, then the new model.

    Equal predictions at zero init; no variable shared with the original; the
    original bit-identical after training the copy; the states change in fit.
    """
    seed(K)
    new = rsr.add_trainable_initial_states(model, **options)
    assert_outputs_equal(predict(new, x), predict(model, x))
    assert not {id(v) for v in new.weights} & {id(v) for v in model.weights}
    before_original = snapshot(model)
    states_before = rsr.initial_states(new)
    if expect_states is not None:
        assert sorted(states_before) == sorted(expect_states)
    assert states_before, "no state was added"
    if not getattr(new, "compiled", getattr(new, "_is_compiled", False)):
        new.compile(K.optimizers.Adam(0.05), "mse")
    new.fit(x, y, epochs=2, batch_size=len(x), verbose=0)
    assert_same_weights(before_original, snapshot(model))
    for name, after in rsr.initial_states(new).items():
        for a, b in zip(after, states_before[name], strict=True):
            assert np.abs(a - b).max() > 1e-4, f"state of {name} did not train"
    return new


# ---------------------------------------------------------------- architectures


def test_sequential_comes_back_functional_with_the_same_layers(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm"), K.layers.Dense(2, name="head")])
    new = check_retrofit(K, model, normal(8, 5, 3), normal(8, 2), expect_states=["lstm"])
    assert not isinstance(new, K.Sequential)
    assert [layer.name for layer in new.layers][-3:] == ["lstm_initial_state", "lstm", "head"]
    assert [tuple(t.shape) for t in new.inputs] == [tuple(t.shape) for t in model.inputs]
    assert [tuple(t.shape) for t in new.outputs] == [tuple(t.shape) for t in model.outputs]
    assert isinstance(new.get_layer("lstm_initial_state"), K.layers.Layer)


def test_nested_submodels_at_any_depth(K):
    inner = K.Sequential([K.Input((5, 4)), K.layers.GRU(3, name="deep_gru")], name="inner")
    middle_in = K.Input((5, 4))
    mid_rnn = K.layers.SimpleRNN(4, return_sequences=True, name="mid_rnn")
    middle = K.Model(middle_in, inner(mid_rnn(middle_in)), name="middle")
    wrapper = K.Sequential([K.Input((5, 4)), middle], name="outer_seq")
    inputs = K.Input((5, 4))
    model = K.Model(inputs, K.layers.Dense(1)(wrapper(inputs)))
    check_retrofit(
        K,
        model,
        normal(8, 5, 4),
        normal(8, 1),
        expect_states=["outer_seq/middle/mid_rnn", "outer_seq/middle/inner/deep_gru"],
    )


def test_shared_layer_on_two_inputs_keeps_one_set_of_states(K):
    a, b = K.Input((5, 3), name="a"), K.Input((5, 3), name="b")
    shared = K.layers.LSTM(4, name="shared")
    model = K.Model([a, b], [K.layers.Dense(1, name="out_a")(shared(a)), K.layers.Dense(1, name="out_b")(shared(b))])
    x = [normal(8, 5, 3), normal(8, 5, 3)]
    new = check_retrofit(K, model, x, [normal(8, 1), normal(8, 1)], expect_states=["shared"])
    state_layers = [layer for layer in new.layers if isinstance(layer, new.get_layer("shared_initial_state").__class__)]
    assert len(state_layers) == 1
    assert len(new.outputs) == 2 and len(new.inputs) == 2


def test_bidirectional_with_return_state(K):
    inputs = K.Input((5, 3))
    outputs = K.layers.Bidirectional(K.layers.LSTM(4, return_sequences=True, return_state=True), name="bi")(inputs)
    model = K.Model(inputs, [K.layers.Dense(1)(K.layers.Flatten()(outputs[0]))] + list(outputs[1:]))
    y = [normal(8, 1)] + [normal(8, 4) for _ in range(4)]
    new = check_retrofit(K, model, normal(8, 5, 3), y, expect_states=["bi"])
    assert [s.shape for s in rsr.initial_states(new)["bi"]] == [(4,)] * 4


def _padded_tokens():
    tokens = rng.integers(1, 20, size=(8, 7))
    for row, length in enumerate([7, 5, 3, 1, 6, 2, 4, 7]):
        tokens[row, length:] = 0
    return tokens


def _masked_model(K, nested, time=7):
    inputs = K.Input((time,), dtype="int32")
    x = K.layers.Embedding(20, 4, mask_zero=True)(inputs)
    if nested == "chain":  # found by the property test: the mask passes the first submodel at run time only
        for i in range(2):
            sub_in = K.Input((time, 4))
            x = K.Model(sub_in, K.layers.SimpleRNN(4, return_sequences=True)(sub_in), name=f"sub_{i}")(x)
        x = K.layers.LSTM(5, name="lstm")(x)
    elif nested:  # the mask reaches the submodel only at run time
        sub_in = K.Input((time, 4))
        x = K.Model(sub_in, K.layers.LSTM(5, name="lstm")(K.layers.Dense(4)(sub_in)), name="sub")(x)
    else:
        x = K.layers.LSTM(5, name="lstm")(x)
    return K.Model(inputs, K.layers.Dense(1)(x))


@pytest.mark.parametrize("nested", [False, True, "chain"], ids=["top-level", "in-submodel", "submodel-chain"])
def test_masking_after_embedding(K, nested):
    check_retrofit(K, _masked_model(K, nested), _padded_tokens(), normal(8, 1))


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "in-submodel"])
def test_padding_is_skipped_with_learned_states(K, nested):
    """A padded row predicts what the same row without padding predicts."""
    model = _masked_model(K, nested, time=None)
    new = rsr.add_trainable_initial_states(model, initializer="random_normal")
    row = np.array([[3, 4, 5]])
    padded = np.array([[3, 4, 5, 0, 0, 0]])
    assert_outputs_equal(predict(new, padded), predict(new, row), atol=1e-5)
    assert np.abs(predict(new, row) - predict(model, row)).max() > 1e-4


def test_conv_lstm_2d(K):
    inputs = K.Input((3, 6, 6, 1))
    model = K.Model(inputs, K.layers.ConvLSTM2D(2, 3, padding="same", name="conv")(inputs))
    new = check_retrofit(K, model, normal(4, 3, 6, 6, 1), normal(4, 6, 6, 2), expect_states=["conv"])
    assert [s.shape for s in rsr.initial_states(new)["conv"]] == [(6, 6, 2)] * 2


def test_stacked_cells(K):
    cells = K.layers.StackedRNNCells([K.layers.LSTMCell(4), K.layers.GRUCell(3)])
    model = K.Sequential([K.Input((5, 2)), K.layers.RNN(cells, name="stack")])
    new = check_retrofit(K, model, normal(8, 5, 2), normal(8, 3), expect_states=["stack"])
    assert [s.shape for s in rsr.initial_states(new)["stack"]] == [(4,), (4,), (3,)]


def test_seq2seq_decoder_left_alone(K):
    enc_in, dec_in = K.Input((5, 3)), K.Input((4, 2))
    _, h, c = K.layers.LSTM(6, return_state=True, name="encoder")(enc_in)
    dec = K.layers.LSTM(6, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    model = K.Model([enc_in, dec_in], K.layers.Dense(2)(dec))
    new = check_retrofit(K, model, [normal(8, 5, 3), normal(8, 4, 2)], normal(8, 4, 2), expect_states=["encoder"])
    assert "decoder_initial_state" not in [layer.name for layer in new.layers]


def test_positional_state_counts_as_passed(K):
    inputs = K.Input((5, 3))
    h = K.layers.Dense(4)(K.layers.Flatten()(inputs))
    model = K.Model(inputs, K.layers.GRU(4, name="gru")(inputs, [h]))
    extra = K.Model(inputs, K.layers.LSTM(2, name="other")(inputs))
    both = K.Model(inputs, [model(inputs), extra(inputs)])
    new = rsr.add_trainable_initial_states(both)
    assert sorted(rsr.initial_states(new)) == [f"{extra.name}/other"]


def test_stateful_layers_get_a_wrapper_that_resets_to_the_learned_state(K):
    inputs = K.Input(batch_shape=(4, 5, 3))
    x = K.layers.LSTM(4, stateful=True, return_sequences=True, name="keeps_state")(inputs)
    model = K.Model(inputs, K.layers.GRU(3, name="gru")(x))
    new = rsr.add_trainable_initial_states(model)
    assert sorted(rsr.initial_states(new)) == ["gru", "keeps_state"]
    assert isinstance(new.get_layer("keeps_state"), rsr.TrainableInitialStateRNN)


def test_layer_selection_by_name_class_and_predicate(K):
    inputs = K.Input((5, 3))
    x = K.layers.LSTM(4, return_sequences=True, name="first")(inputs)
    x = K.layers.GRU(4, return_sequences=True, name="second")(x)
    model = K.Model(inputs, K.layers.SimpleRNN(2, name="third")(x))
    x_data = normal(8, 5, 3)
    new = check_retrofit(K, model, x_data, normal(8, 2), layers=["second"], expect_states=["second"])
    assert "first_initial_state" not in [layer.name for layer in new.layers]
    by_class = rsr.add_trainable_initial_states(model, layers=[K.layers.LSTM, K.layers.SimpleRNN])
    assert sorted(rsr.initial_states(by_class)) == ["first", "third"]
    by_predicate = rsr.add_trainable_initial_states(model, layers=lambda layer: layer.units == 4)
    assert sorted(rsr.initial_states(by_predicate)) == ["first", "second"]
    with pytest.raises(ValueError, match=r"\['nope'\].*'first', 'second', 'third'"):
        rsr.add_trainable_initial_states(model, layers=["nope"])
    with pytest.raises(TypeError, match="layers"):
        rsr.add_trainable_initial_states(model, layers=[3])


def test_freeze_base_trains_only_the_states(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm"), K.layers.Dense(1, name="head")])
    new = check_retrofit(K, model, normal(8, 5, 3), normal(8, 1), freeze_base=True)
    assert sorted(v.name.split("/")[-1].split(":")[0] for v in new.trainable_weights) == [
        "initial_state_0",
        "initial_state_1",
    ]
    frozen = [np.array(w) for layer in new.layers if layer.name in ("lstm", "head") for w in layer.weights]
    original = [np.array(w) for layer in model.layers for w in layer.weights]
    assert_same_weights(original, frozen)


def test_applying_twice_adds_nothing(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.GRU(4, name="gru")])
    once = rsr.add_trainable_initial_states(model)
    twice = rsr.add_trainable_initial_states(once)
    assert [layer.name for layer in twice.layers] == [layer.name for layer in once.layers]
    assert len(twice.weights) == len(once.weights)
    x = normal(4, 5, 3)
    assert_outputs_equal(predict(twice, x), predict(once, x))


def test_wrapped_layers_are_left_as_they_are(K):
    model = K.Sequential([K.Input((5, 3)), rsr.TrainableInitialStateRNN(K.layers.GRU(4), name="w")])
    again = rsr.add_trainable_initial_states(model)
    assert [layer.name for layer in again.layers][-1] == "w"
    assert not any(name.endswith("_initial_state") for name in (layer.name for layer in again.layers))
    assert len(again.weights) == len(model.weights)


def test_remove_restores_the_original_predictions(K):
    inputs = K.Input((7,), dtype="int32")
    x = K.layers.Embedding(20, 4, mask_zero=True)(inputs)
    sub_in = K.Input((7, 4))
    sub = K.Model(sub_in, K.layers.LSTM(5, name="lstm")(sub_in), name="sub")
    model = K.Model(inputs, K.layers.Dense(1)(sub(x)))
    tokens = _padded_tokens()
    new = rsr.add_trainable_initial_states(model, initializer="random_normal", freeze_base=True)
    assert np.abs(predict(new, tokens) - predict(model, tokens)).max() > 1e-4
    removed = rsr.remove_trainable_initial_states(new)
    assert_outputs_equal(predict(removed, tokens), predict(model, tokens))
    assert not any("initial_state" in layer.name for layer in removed._flatten_layers())
    assert rsr.initial_states(removed) == {}
    wrapped = K.Sequential([K.Input((5, 3)), rsr.TrainableInitialStateRNN(K.layers.GRU(4, name="gru"))])
    unwrapped = rsr.remove_trainable_initial_states(wrapped)
    assert [type(layer).__name__ for layer in unwrapped.layers][-1] == "GRU"


def test_compiled_model_comes_back_compiled_with_a_fresh_optimizer(K, is_keras3):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4), K.layers.Dense(1)])
    model.compile(K.optimizers.Adam(0.01), "mse", metrics=["mae"])
    model.fit(normal(8, 5, 3), normal(8, 1), epochs=1, verbose=0)
    new = rsr.add_trainable_initial_states(model)
    assert int(new.optimizer.iterations.numpy()) == 0
    assert new.optimizer is not model.optimizer
    assert np.isclose(float(new.optimizer.learning_rate.numpy()), 0.01)
    history = new.fit(normal(8, 5, 3), normal(8, 1), epochs=1, verbose=0)
    assert any("mae" in key for key in history.history)


def test_mixed_precision(K):
    K.mixed_precision.set_global_policy("mixed_float16")
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm"), K.layers.Dense(1, dtype="float32")])
    new = check_retrofit(K, model, normal(8, 5, 3), normal(8, 1), expect_states=["lstm"])
    state_layer = new.get_layer("lstm_initial_state")
    assert all("float32" in str(v.dtype) for v in state_layer.weights)
    assert state_layer.compute_dtype == "float16"


def test_config_keeps_the_original_initializers(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm"), K.layers.Dense(1, name="d")])
    new = rsr.add_trainable_initial_states(model)
    for name in ("lstm", "d"):
        assert new.get_layer(name).get_config() == model.get_layer(name).get_config()


def test_keras3_raw_operations_in_the_graph(K):
    inputs = K.Input((5, 3))
    seq = K.layers.LSTM(4, return_sequences=True, name="lstm")(inputs)
    last = seq[:, -1] * 2.0
    model = K.Model(inputs, K.layers.Dense(1)(last))
    check_retrofit(K, model, normal(8, 5, 3), normal(8, 1), expect_states=["lstm"])


def test_lambda_layers_are_cloned(K):
    """Regression: cloning a live Lambda layer tripped Keras' file-loading safe mode."""
    inputs = K.Input((5, 3))
    x = K.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = K.Model(inputs, K.layers.GRU(3, name="gru")(x))
    check_retrofit(K, model, normal(8, 5, 3), normal(8, 3), expect_states=["gru"])


def test_state_layer_names_do_not_collide(K):
    inputs = K.Input((5, 3))
    x = K.layers.Dense(3, name="gru_initial_state")(inputs)
    model = K.Model(inputs, K.layers.GRU(2, name="gru")(x))
    new = rsr.add_trainable_initial_states(model)
    assert "gru_initial_state_1" in [layer.name for layer in new.layers]


# ---------------------------------------------------------------- saving


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_save_and_reload_with_learned_states(K, is_keras3, tmp_path, fmt):
    if fmt == "h5" and is_keras3:
        pytest.skip("Keras 3 saves whole models in .keras only")
    inputs = K.Input((7,), dtype="int32")
    x = K.layers.Embedding(20, 4, mask_zero=True)(inputs)
    x = K.layers.Bidirectional(K.layers.GRU(3, return_sequences=True), name="bi")(x)
    sub = K.Sequential([K.Input((7, 6)), K.layers.LSTM(2, name="lstm")], name="sub")
    model = K.Model(inputs, sub(x))
    new = rsr.add_trainable_initial_states(model, initializer="random_normal")
    tokens = _padded_tokens()
    path = str(tmp_path / f"model.{fmt}")
    new.save(path)
    reloaded = K.models.load_model(path)
    assert_outputs_equal(predict(reloaded, tokens), predict(new, tokens))
    for name, values in rsr.initial_states(new).items():
        for a, b in zip(values, rsr.initial_states(reloaded)[name], strict=True):
            np.testing.assert_array_equal(a, b)
        assert all(np.abs(v).max() > 0 for v in values)


# ---------------------------------------------------------------- errors


def test_subclassed_model_that_cannot_be_copied_is_refused_with_the_in_place_route(K):
    """`Net()` takes no base keyword arguments, so it cannot be rebuilt from its config."""
    net = subclassed_model(K)
    with pytest.raises(TypeError, match="in_place=True"):
        rsr.add_trainable_initial_states(net)
    assert rsr.add_trainable_initial_states(net, in_place=True) is net
    assert list(rsr.initial_states(net)) == ["rnn"]


def test_recurrent_layers_in_an_uncopyable_subclassed_submodel_are_named_with_their_path(K):
    inputs = K.Input((4, 3))
    outer = K.Model(inputs, subclassed_model(K)(inputs))
    net = outer.layers[-1]
    with pytest.raises(TypeError, match=f"{net.name}/rnn.*cannot get learned states until it can be copied"):
        rsr.add_trainable_initial_states(outer)


def test_a_layer_with_variables_that_cannot_be_cloned_is_refused_before_building(K):
    inputs = K.Input((4, 3))
    scale = uncloneable_layer(K)
    outer = K.Model(inputs, K.layers.GRU(2, name="gru")(scale(inputs)))
    nodes_before = [len(layer._inbound_nodes) for layer in outer.layers]
    with pytest.raises(TypeError, match=f"'{scale.name}' of class .*Scale.*get_config.*kwargs"):
        rsr.add_trainable_initial_states(outer)
    assert [len(layer._inbound_nodes) for layer in outer.layers] == nodes_before


@pytest.mark.parametrize("thing", ["a layer", "an object", "a string"])
def test_not_a_model_is_a_type_error(K, thing):
    value = {"a layer": K.layers.LSTM(3), "an object": object(), "a string": "model.keras"}[thing]
    with pytest.raises(TypeError, match="Functional or Sequential"):
        rsr.add_trainable_initial_states(value)


def test_model_without_recurrent_layers_is_a_value_error(K):
    model = K.Sequential([K.Input((3,)), K.layers.Dense(1)])
    with pytest.raises(ValueError, match="no recurrent layer"):
        rsr.add_trainable_initial_states(model)


def test_unbuilt_model_is_a_value_error(K):
    with pytest.raises(ValueError, match="not built"):
        rsr.add_trainable_initial_states(K.Sequential([K.layers.LSTM(3)]))


def test_per_state_list_mismatch_names_the_layer(K):
    inputs = K.Input((5, 3))
    x = K.layers.GRU(4, return_sequences=True, name="gru")(inputs)
    model = K.Model(inputs, K.layers.LSTM(2, name="lstm")(x))
    with pytest.raises(ValueError, match="'gru'.*\\(1\\)"):
        rsr.add_trainable_initial_states(model, initializer=["zeros", "ones"])
    new = rsr.add_trainable_initial_states(model, layers=["lstm"], initializer=["zeros", "ones"])
    np.testing.assert_array_equal(rsr.initial_states(new)["lstm"][1], np.ones(2))


def test_negative_noise_is_a_value_error(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.GRU(2)])
    with pytest.raises(ValueError, match="noise_stddev"):
        rsr.add_trainable_initial_states(model, noise_stddev=-1.0)


def test_errors_change_nothing(K):
    model = K.Sequential([K.Input((5, 3)), K.layers.GRU(2)])
    before = (snapshot(model), len(model.layers), [len(layer._inbound_nodes) for layer in model.layers])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for bad in ({"layers": ["x"]}, {"initializer": ["a", "b", "c"]}, {"noise_stddev": -2}):
            with pytest.raises(ValueError):
                rsr.add_trainable_initial_states(model, **bad)
    after = (snapshot(model), len(model.layers), [len(layer._inbound_nodes) for layer in model.layers])
    assert_same_weights(before[0], after[0])
    assert before[1:] == after[1:]


def test_one_initializer_object_gives_every_state_of_every_layer_its_own_draw(K):
    """Regression: `RandomNormal(stddev=1.0)` gave h = c = forward = backward, and the same in every layer."""
    inputs = K.Input((5, 3))
    x = K.layers.Bidirectional(K.layers.LSTM(4, return_sequences=True), name="bi")(inputs)
    model = K.Model(inputs, K.layers.LSTM(4, name="lstm")(x))
    states = rsr.initial_states(
        rsr.add_trainable_initial_states(model, initializer=K.initializers.RandomNormal(stddev=1.0))
    )
    values = [v for name in ("bi", "lstm") for v in states[name]]
    assert len(values) == 6
    for i, a in enumerate(values):
        for b in values[i + 1 :]:
            assert np.abs(a - b).max() > 1e-3
    seeded = K.initializers.RandomNormal(stddev=1.0, seed=7)
    first = rsr.initial_states(rsr.add_trainable_initial_states(model, initializer=seeded))
    again = rsr.initial_states(rsr.add_trainable_initial_states(model, initializer=seeded))
    for name in first:
        for a, b in zip(first[name], again[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_retrofit_walks_each_graph_once_and_executes_the_plan_it_is_given(K, monkeypatch):
    """One walk makes the plan; the rebuild replays it without reading any graph again."""
    from rnn_state_rewriter.backend import adapter_for
    from rnn_state_rewriter.decide import make_plan
    from rnn_state_rewriter.options import RetrofitOptions
    from rnn_state_rewriter.plan import Action, Route
    from rnn_state_rewriter.rewrite import retrofit

    inner = K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, return_sequences=True, name="lstm")], name="sub")
    inputs = K.Input((5, 3))
    outputs = K.layers.GRU(2, name="gru")(inner(inputs))
    model = K.Model(inputs, outputs, name="top")
    generation = adapter_for(model)
    walked = []
    call_sites = generation.call_sites
    monkeypatch.setattr(generation, "call_sites", lambda graph: walked.append(graph.name) or call_sites(graph))

    options = RetrofitOptions(initializer="ones", check=False)
    plan = make_plan(model, options)
    assert sorted(walked) == ["sub", "top"]
    assert [(d.path, d.action, d.route, d.batch_axis) for d in plan.decisions] == [
        ("sub/lstm", Action.ADD, Route.GRAPH, 0),
        ("gru", "add", "graph", 0),
    ]
    assert [len(d.initializers) for d in plan.decisions] == [2, 1]
    walked.clear()
    new_model, _ = retrofit(model, options, plan)
    assert walked == []
    assert {name: [v.tolist() for v in values] for name, values in rsr.initial_states(new_model).items()} == {
        "sub/lstm": [[1.0] * 4, [1.0] * 4],
        "gru": [[1.0] * 2],
    }
    with pytest.raises(ValueError, match="plan of model 'top'"):
        retrofit(K.models.clone_model(model), options, plan)

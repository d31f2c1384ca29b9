"""The retrofit on the patterns of public Keras examples: custom objects, lazily built layers, masks, submodels.

Every model here is written the way the examples write it, with classes and
functions that are not registered with Keras unless the case says so. Each
case checks the promises of the retrofit (`check_everything`): the same
predictions at zero init, no variable shared, the original bit-identical after
training the copy, states that train, save and reload with identical
predictions, and `remove_trainable_initial_states` restoring the original.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_same_weights, seed, snapshot

import rnn_state_rewriter as rsr

rng = np.random.default_rng(0)


def normal(*shape):
    return rng.normal(size=shape).astype("float32")


def flat(outputs):
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def assert_close(a, b, atol=1e-5):
    for p, q in zip(flat(a), flat(b), strict=True):
        np.testing.assert_allclose(p, q, atol=atol, rtol=1e-5)


def ops(K):
    """Tensor functions of the generation: `keras.ops` or `tf_keras.backend`."""
    return K.ops if hasattr(K, "ops") else K.backend


def check_everything(
    K, model, x, y, tmp_path, custom_objects=None, expect_states=None, fit_y=True, reload=True, **options
):
    """The promises of the retrofit on one model; returns the retrofitted model.

    `reload=False` where the model's own classes cannot be loaded back from a
    file (the original cannot either).
    """
    seed(K)
    original = model.predict(x, verbose=0)
    new = rsr.add_trainable_initial_states(model, **options)
    assert_close(new.predict(x, verbose=0), original)
    assert not {id(v) for v in new.weights} & {id(v) for v in model.weights}, "a variable is shared"
    states = rsr.initial_states(new)
    assert states, "no state was added"
    if expect_states is not None:
        assert sorted(states) == sorted(expect_states)
    if not getattr(new, "compiled", getattr(new, "_is_compiled", False)):
        new.compile(K.optimizers.Adam(0.05), "mse")
    before = snapshot(model)
    new.fit(x, y if fit_y else None, epochs=2, batch_size=len(flat(x)[0]), verbose=0)
    assert_same_weights(before, snapshot(model))
    for name, trained in rsr.initial_states(new).items():
        assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(trained, states[name], strict=True)), name

    if reload:
        path = str(tmp_path / "model.keras")
        new.save(path)
        reloaded = K.models.load_model(path, custom_objects=custom_objects, compile=False)
        assert_close(reloaded.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-6)

    shifted = rsr.add_trainable_initial_states(model, initializer="random_normal")
    removed = rsr.remove_trainable_initial_states(shifted)
    assert_close(removed.predict(x, verbose=0), original)
    return new


def reloads(K, model, tmp_path, custom_objects=None):
    """Whether Keras can load the model back from a `.keras` file: the retrofit promises as much, not more."""
    path = str(tmp_path / "original.keras")
    model.save(path)
    try:
        K.models.load_model(path, custom_objects=custom_objects, compile=False)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- compile arguments


def test_custom_loss_and_metric_functions_and_objects(K, tmp_path):
    """Regression: `compile_like` looked the loss up in the registry ('Could not locate function')."""
    o = ops(K)

    def my_loss(y_true, y_pred):
        return o.mean(o.square(y_true - y_pred), axis=-1)

    def my_metric(y_true, y_pred):
        return o.mean(o.abs(y_true - y_pred), axis=-1)

    class ScaledError(K.losses.Loss):
        def call(self, y_true, y_pred):
            return 2.0 * o.mean(o.square(y_true - y_pred), axis=-1)

    class Peak(K.metrics.Metric):
        def __init__(self, name="peak", **kwargs):
            super().__init__(name=name, **kwargs)
            self.peak = self.add_weight(name="peak", initializer="zeros")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.peak.assign(o.maximum(self.peak, o.max(o.abs(y_pred))))

        def result(self):
            return self.peak * 1.0  # a tensor, not the variable (JAX >= 0.10 refuses one)

    inputs = K.Input((5, 3))
    x = K.layers.LSTM(4, name="lstm")(inputs)
    model = K.Model(inputs, [K.layers.Dense(1, name="a")(x), K.layers.Dense(1, name="b")(x)])
    model.compile(
        K.optimizers.Adam(0.05),
        loss=[my_loss, ScaledError()],
        loss_weights=[1.0, 0.5],
        metrics=[[my_metric], [Peak()]],
    )
    x_data, y = normal(8, 5, 3), [normal(8, 1), normal(8, 1)]
    model.evaluate(x_data, y, verbose=0)
    custom = {"my_loss": my_loss, "my_metric": my_metric, "ScaledError": ScaledError, "Peak": Peak}
    new = check_everything(K, model, x_data, y, tmp_path, custom_objects=custom)
    assert new.optimizer is not model.optimizer and type(new.optimizer) is type(model.optimizer)
    results = new.evaluate(x_data, y, verbose=0, return_dict=True)
    assert any("my_metric" in key for key in results) and any("peak" in key for key in results)
    again = rsr.remove_trainable_initial_states(new)
    assert again.evaluate(x_data, y, verbose=0) is not None


def test_endpoint_layer_that_adds_its_own_loss(K, tmp_path):
    """The OCR examples' CTC endpoint: a weightless layer whose constructor takes only `name`."""
    o = ops(K)

    class EndpointLoss(K.layers.Layer):
        def __init__(self, name=None):
            super().__init__(name=name)

        def call(self, y_true, y_pred):
            self.add_loss(o.mean(o.square(y_true - y_pred)))
            return y_pred

    x_in, y_in = K.Input((5, 3), name="x"), K.Input((5, 2), name="target")
    seq = K.layers.GRU(2, return_sequences=True, name="gru")(x_in)
    model = K.Model([x_in, y_in], EndpointLoss(name="ctc")(y_in, seq))
    model.compile(K.optimizers.Adam(0.05))
    data = [normal(8, 5, 3), normal(8, 5, 2)]
    # Its constructor rejects the base arguments: Keras 3 cannot load it from a file, and the copy reuses it.
    custom = {"EndpointLoss": EndpointLoss}
    kept = reloads(K, model, tmp_path, custom)
    new = check_everything(K, model, data, None, tmp_path, custom_objects=custom, fit_y=False, reload=kept)
    assert type(new.get_layer("ctc")) is EndpointLoss


# ---------------------------------------------------------------- custom cells


def plain_cell(K, register=False):
    o = ops(K)

    class PlainCell(K.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = units
            self.output_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
            self.recurrent = self.add_weight(shape=(self.units, self.units), name="recurrent")

        def call(self, inputs, states):
            h = o.tanh(o.dot(inputs, self.kernel) + o.dot(states[0], self.recurrent))
            return h, [h]

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    if register:
        PlainCell = K.saving.register_keras_serializable(package="zoo_test")(PlainCell)
    return PlainCell


def lazy_cell(K):
    """A cell whose sublayers are created unbuilt and build on their first call."""

    class LazyCell(K.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = [units, units]
            self.output_size = units

        def build(self, input_shape):
            self.inner = K.layers.Dense(self.units, activation="tanh")
            self.gate = K.layers.Dense(self.units, activation="sigmoid")

        def call(self, inputs, states):
            h, c = states
            both = K.layers.concatenate([inputs, h]) if not hasattr(K, "ops") else K.ops.concatenate([inputs, h], -1)
            c = self.gate(both) * c + self.inner(both)
            return c, [c, c]

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    return LazyCell


@pytest.mark.parametrize("registered", [False, True], ids=["unregistered", "registered"])
def test_rnn_around_a_custom_cell(K, tmp_path, registered):
    """Regression: an unregistered cell class was looked up in the registry ('Could not locate class')."""
    cell_class = plain_cell(K, register=registered)
    model = K.Sequential([K.Input((5, 3)), K.layers.RNN(cell_class(4), name="rnn"), K.layers.Dense(1)])
    custom = {"PlainCell": cell_class}
    check_everything(K, model, normal(8, 5, 3), normal(8, 1), tmp_path, custom_objects=custom, expect_states=["rnn"])


def test_custom_cell_whose_sublayers_build_on_first_call(K, tmp_path):
    """Regression: 'rebuilt with weights of shapes [] instead of [...]'."""
    cell_class = lazy_cell(K)
    inputs = K.Input((5, 3))
    model = K.Model(inputs, K.layers.Dense(1)(K.layers.RNN(cell_class(4), name="rnn")(inputs)))
    x = normal(8, 5, 3)
    model.predict(x, verbose=0)  # a trained model has been called: its weights exist
    assert model.get_layer("rnn").weights
    custom = {"LazyCell": cell_class}
    kept = reloads(K, model, tmp_path, custom)  # Keras 3 cannot reload it: its cell's build creates no weights
    check_everything(K, model, x, normal(8, 1), tmp_path, custom_objects=custom, reload=kept)


def test_lazily_built_layer_never_called_is_a_clear_error(K):
    cell_class = lazy_cell(K)
    model = K.Sequential([K.Input((5, 3)), K.layers.RNN(cell_class(4), name="rnn")])
    if model.get_layer("rnn").weights:
        pytest.skip("this generation creates the cell's weights when the model is built")
    with pytest.raises(ValueError, match="'rnn'.*first called.*predict"):
        rsr.add_trainable_initial_states(model)


# ---------------------------------------------------------------- graphs of the examples


def test_explicit_mask_input(K, tmp_path):
    """`lstm(x, mask=mask)` with the mask a model input, as the examples with padded batches do."""
    x_in = K.Input((6, 3), name="x")
    mask_in = K.Input((6,), dtype="bool", name="mask")
    seq = K.layers.LSTM(4, return_sequences=True, name="lstm")(x_in, mask=mask_in)
    model = K.Model([x_in, mask_in], K.layers.GRU(2, name="gru")(seq, mask=mask_in))
    mask = np.ones((8, 6), bool)
    mask[::2, 4:] = False
    new = check_everything(K, model, [normal(8, 6, 3), mask], normal(8, 2), tmp_path)
    shifted = rsr.add_trainable_initial_states(model, initializer="random_normal")
    padded = [normal(1, 6, 3), np.array([[True] * 3 + [False] * 3])]
    changed = [padded[0].copy(), padded[1]]
    changed[0][:, 3:] = 9.0  # masked steps must not matter
    assert_close(shifted.predict(changed, verbose=0), shifted.predict(padded, verbose=0))
    assert new is not None


def test_time_distributed_around_a_submodel(K, tmp_path):
    frame_in = K.Input((4, 2))
    frame_encoder = K.Model(frame_in, K.layers.GRU(3, name="frame_gru")(frame_in), name="frames")
    clips = K.Input((5, 4, 2))
    x = K.layers.TimeDistributed(frame_encoder, name="per_frame")(clips)
    model = K.Model(clips, K.layers.Dense(1)(K.layers.LSTM(4, name="clip_lstm")(x)))
    expect = ["clip_lstm", "per_frame/frames/frame_gru"]  # keys are Keras names: wrapper/submodel/layer
    check_everything(K, model, normal(8, 5, 4, 2), normal(8, 1), tmp_path, expect_states=expect)


def test_conv_lstm_stack_with_batch_normalization(K, tmp_path):
    inputs = K.Input((3, 6, 6, 1))
    x = K.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True, name="conv_1")(inputs)
    x = K.layers.BatchNormalization()(x)
    x = K.layers.ConvLSTM2D(2, 3, padding="same", return_sequences=True, name="conv_2")(x)
    x = K.layers.BatchNormalization()(x)
    model = K.Model(inputs, K.layers.Conv3D(1, 3, padding="same")(x))
    x_data = normal(4, 3, 6, 6, 1)
    model.compile("adam", "mse")
    model.fit(x_data, normal(4, 3, 6, 6, 1), verbose=0)  # moving statistics away from their initial values
    check_everything(K, model, x_data, normal(4, 3, 6, 6, 1), tmp_path, expect_states=["conv_1", "conv_2"])


def test_seq2seq_encoder_cut_out_of_a_trained_model(K, tmp_path):
    enc_in, dec_in = K.Input((5, 3), name="enc_in"), K.Input((4, 2), name="dec_in")
    _, h, c = K.layers.LSTM(6, return_state=True, name="encoder")(enc_in)
    dec = K.layers.LSTM(6, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    trained = K.Model([enc_in, dec_in], K.layers.Dense(2)(dec))
    trained.compile("adam", "mse")
    trained.fit([normal(8, 5, 3), normal(8, 4, 2)], normal(8, 4, 2), verbose=0)
    encoder = K.Model(enc_in, [h, c], name="inference_encoder")
    new = check_everything(K, encoder, normal(8, 5, 3), [normal(8, 6), normal(8, 6)], tmp_path)
    assert sorted(rsr.initial_states(new)) == ["encoder"]


def test_shared_recurrent_layer_with_run_time_masks(K, tmp_path):
    """Regression: two call sites of one layer got two mask layers of the same name."""
    tokens = K.Input((6,), dtype="int32")
    embedded = K.layers.Embedding(12, 3, mask_zero=True)(tokens)
    sub_in = K.Input((6, 3))
    sub = K.Model(sub_in, K.layers.Dense(3)(sub_in), name="project")  # the mask passes at run time only
    shared = K.layers.LSTM(4, name="shared_rnn")
    model = K.Model(tokens, [shared(sub(embedded)), shared(sub(embedded)), shared(embedded)])
    data = rng.integers(1, 12, size=(8, 6))
    data[::2, 4:] = 0
    y = [normal(8, 4) for _ in range(3)]
    new = check_everything(K, model, data, y, tmp_path, expect_states=["shared_rnn"])
    names = [layer.name for layer in new.layers]
    assert len(names) == len(set(names))


def test_remove_after_add_on_masked_nested_sequential_models(K, tmp_path):
    """Regression (property test, 150 examples): a submodel fed a mask made by a dropped mask layer."""
    tokens = K.Input((5,), dtype="int32")
    x = K.layers.Embedding(12, 3, mask_zero=True)(tokens)
    x = K.Sequential([K.Input((5, 3)), K.layers.GRU(3, return_sequences=True, name="rnn_1")], name="seq_1")(x)
    x = K.layers.LSTM(3, return_sequences=True, name="rnn_2")(x)
    x = K.Sequential([K.Input((5, 3)), K.layers.SimpleRNN(2, name="rnn_3")], name="seq_2")(x)
    model = K.Model(tokens, x)
    data = rng.integers(1, 12, size=(6, 5))
    data[::2, -2:] = 0
    check_everything(K, model, data, normal(6, 2), tmp_path)


def test_mask_layers_only_where_a_mask_can_arrive(K):
    """An all-True mask disables fused kernels: none is added to a model whose recurrent layers get no mask."""
    tokens = K.Input((5,), dtype="int32")
    masked = K.layers.LSTM(3, name="masked")(K.layers.Embedding(9, 2, mask_zero=True)(tokens))
    plain_in = K.Input((5, 2))
    sub = K.Model(plain_in, K.layers.GRU(3, name="plain")(plain_in), name="sub")
    model = K.Model([tokens, plain_in], [masked, sub(plain_in)])
    decisions = {d.path: d for d in rsr.plan_trainable_initial_states(model)}
    assert not decisions["masked"].runtime_mask  # its mask is in the graph, passed as it is
    assert not decisions["sub/plain"].runtime_mask
    new = rsr.add_trainable_initial_states(model)
    assert not [layer.name for layer in new._flatten_layers() if layer.name.endswith("_mask")]


# ---------------------------------------------------------------- what the rewrite cannot reach


def block_layer(K):
    class Block(K.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lstm = K.layers.LSTM(4, name="lstm")  # keys are Keras names: name the layers keyed on

        def call(self, x):
            return self.lstm(x)

    return Block


def test_lstm_inside_a_custom_layer_gets_a_learned_state(K, tmp_path):
    """Was refused ('has no recurrent layer', then naming it): now reached by surgery."""
    inputs = K.Input((5, 3))
    model = K.Model(inputs, K.layers.Dense(1)(block_layer(K)(name="block")(inputs)))
    x = normal(8, 5, 3)
    new = check_everything(K, model, x, normal(8, 1), tmp_path, expect_states=["block/lstm"], reload=False)
    assert new.get_layer("block").lstm.gives_trainable_initial_state


def test_lstm_inside_a_custom_layer_beside_others_reached_by_the_graph(K):
    inputs = K.Input((5, 3))
    x = K.layers.GRU(4, return_sequences=True, name="gru")(inputs)
    block = block_layer(K)(name="block")
    model = K.Model(inputs, K.layers.Dense(1)(block(x)))
    x_data = normal(8, 5, 3)
    model.predict(x_data, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = rsr.add_trainable_initial_states(model)
    assert sorted(rsr.initial_states(new)) == ["block/lstm", "gru"]
    plan = rsr.plan_trainable_initial_states(model)
    assert [(d.path, d.action, d.route) for d in plan] == [("gru", "add", "graph"), ("block/lstm", "add", "surgery")]
    assert_close(new.predict(x_data, verbose=0), model.predict(x_data, verbose=0))


def test_plan_gives_one_decision_per_call_site_with_its_reason(K):
    enc_in, dec_in = K.Input((5, 3)), K.Input((4, 2))
    _, h = K.layers.GRU(6, return_state=True, name="encoder")(enc_in)
    dec = K.layers.GRU(6, return_sequences=True, name="decoder")(dec_in, initial_state=[h])
    shared = K.layers.SimpleRNN(2, name="shared")
    stateful_in = K.Input(batch_shape=(4, 5, 3))
    model = K.Model(
        [enc_in, dec_in, stateful_in],
        [shared(dec), shared(dec), K.layers.LSTM(2, stateful=True, name="keeps")(stateful_in)],
    )
    plan = {(d.path, d.call): d for d in rsr.plan_trainable_initial_states(model, layers=["encoder", "shared"])}
    assert plan[("encoder", 0)].action == "add" and plan[("encoder", 0)].state_shapes == ((6,),)
    assert plan[("decoder", 0)].reason == "not selected"
    assert plan[("shared", 0)].action == plan[("shared", 1)].action == "add"
    assert plan[("keeps", 0)].reason == "not selected"
    everything = {d.path: d for d in rsr.plan_trainable_initial_states(model)}
    assert everything["decoder"].reason == "its call passes initial_state"
    assert (everything["keeps"].action, everything["keeps"].route) == ("add", "wrap")
    new = rsr.add_trainable_initial_states(model, layers=["encoder"])
    again = {d.path: d for d in rsr.plan_trainable_initial_states(new)}
    assert again["encoder"].reason == "already has a trainable initial state"


# ---------------------------------------------------------------- cells and functions the guides use


def nested_input_cell(K):
    """The RNN guide's `NestedCell`: two inputs and two states of different ranks (tf-keras only)."""
    import tensorflow as tf

    class NestedCell(K.layers.Layer):
        def __init__(self, unit_1, unit_2, unit_3, **kwargs):
            self.unit_1, self.unit_2, self.unit_3 = unit_1, unit_2, unit_3
            self.state_size = [tf.TensorShape([unit_1]), tf.TensorShape([unit_2, unit_3])]
            self.output_size = [tf.TensorShape([unit_1]), tf.TensorShape([unit_2, unit_3])]
            super().__init__(**kwargs)

        def build(self, input_shapes):
            i1, (i2, i3) = input_shapes[0][1], input_shapes[1][1:]
            self.kernel_1 = self.add_weight(shape=(i1, self.unit_1), initializer="uniform", name="kernel_1")
            self.kernel_2_3 = self.add_weight(
                shape=(i2, i3, self.unit_2, self.unit_3), initializer="uniform", name="kernel_2_3"
            )

        def call(self, inputs, states):
            input_1, input_2 = tf.nest.flatten(inputs)
            state_1 = states[0] + tf.matmul(input_1, self.kernel_1)
            state_2_3 = states[1] + tf.einsum("bij,ijkl->bkl", input_2, self.kernel_2_3)
            return (state_1, state_2_3), [state_1, state_2_3]  # outputs that read the states, so they train

        def get_config(self):
            return {**super().get_config(), "unit_1": self.unit_1, "unit_2": self.unit_2, "unit_3": self.unit_3}

    return NestedCell


def test_rnn_over_a_cell_with_nested_inputs_gets_its_states(K, is_keras3, tmp_path):
    if is_keras3:
        pytest.skip("Keras 3's RNN takes one input tensor")
    cell = nested_input_cell(K)(4, 2, 3)
    first, second = K.Input((None, 5)), K.Input((None, 6, 7))
    outputs = K.layers.RNN(cell, name="rnn")((first, second))
    model = K.Model([first, second], K.layers.Concatenate()([outputs[0], K.layers.Flatten()(outputs[1])]))
    (decision,) = rsr.plan_trainable_initial_states(model)
    assert (decision.action, decision.state_shapes) == ("add", ((4,), (2, 3)))
    x = [normal(6, 3, 5), normal(6, 3, 6, 7)]
    check_everything(K, model, x, normal(6, 10), tmp_path, expect_states=["rnn"], reload=False)


def test_rnn_with_constants_passed_in_the_call(K, is_keras3):
    if is_keras3:
        pytest.skip("Keras 3's RNN has no `constants`")
    import tensorflow as tf

    class ConstantCell(K.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = self.state_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

        def call(self, inputs, states, constants):
            output = tf.matmul(inputs, self.kernel) + states[0] + constants[0]
            return output, [output]

    x_in, c_in = K.Input((5, 3)), K.Input((4,))
    model = K.Model([x_in, c_in], K.layers.RNN(ConstantCell(4), name="rnn")(x_in, constants=c_in))
    (decision,) = rsr.plan_trainable_initial_states(model)
    assert (decision.action, decision.state_shapes) == ("add", ((4,),))
    x = [normal(2, 5, 3), normal(2, 4)]
    new = rsr.add_trainable_initial_states(model)
    assert_close(new.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.tensorflow
def test_live_framework_functions_keras_cannot_name_are_kept(K, is_keras3):
    """`Dense(10, activation=tf.nn.softmax)` (the TensorFlow tutorials): Keras 3 saves it as `softmax_v2`."""
    import tensorflow as tf

    model = K.Sequential(
        [K.Input((5, 3)), K.layers.LSTM(4), K.layers.Dense(10, activation=tf.nn.softmax), K.layers.Dense(2)]
    )
    x = normal(4, 5, 3)
    new = rsr.add_trainable_initial_states(model)
    if is_keras3:  # tf-keras itself reads `tf.nn.softmax` back as its own softmax
        assert new.layers[-2].activation is tf.nn.softmax
    assert_close(new.predict(x, verbose=0), model.predict(x, verbose=0))

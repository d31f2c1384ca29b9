"""The edges of how a copy is made, each from a pattern that real models use and that once broke the retrofit.

Layers whose config holds live objects (copied as saving copies them), recurrent
layers inside wrappers (`TimeDistributed`: saved, reloaded, removed, their
variable paths and keys kept), a self-check that makes a probe batch the model
accepts or says in one line why it cannot, vocabularies with any term, and
subclassed models of several inputs or holding models of several arguments.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKEND, assert_same_weights, snapshot, to_numpy

import rnn_state_rewriter as rsr
from rnn_state_rewriter.options import RetrofitOptions
from rnn_state_rewriter.probing import probe_batch
from rnn_state_rewriter.rewrite import retrofit


def same(a, b) -> float:
    return float(np.abs(to_numpy(a) - to_numpy(b)).max())


def predict(model, x):
    return model.predict(x, verbose=0)


# ----------------------------------------------------------------------------
# A layer whose config holds a live object
# ----------------------------------------------------------------------------


def spec_gru_classes(K):
    """A GRU whose `get_config()` returns its wiring object under `units`, as neural-circuit-policy layers do."""

    class Spec:
        def __init__(self, n):
            self.n = n

        def get_config(self):
            return {"n": self.n}

        @classmethod
        def from_config(cls, config):
            return cls(**config)

    class SpecGRU(K.layers.GRU):
        def __init__(self, units, **kwargs):
            self.spec = units if isinstance(units, Spec) else Spec(units)
            super().__init__(self.spec.n, **kwargs)

        def get_config(self):
            return {**super().get_config(), "units": self.spec}  # the live object

        @classmethod
        def from_config(cls, config):  # expects the serialized form that saving passes
            config = dict(config)
            units = config.pop("units")
            return cls(Spec.from_config(units["config"]), **config)

    register = K.saving.register_keras_serializable("rsr_test_edges")
    return register(Spec), register(SpecGRU)


def test_a_layer_whose_config_holds_a_live_object_is_copied_as_saving_copies_it(K, tmp_path):
    Spec, SpecGRU = spec_gru_classes(K)
    model = K.Sequential([K.Input((None, 2)), SpecGRU(Spec(4), name="g"), K.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(3, 5, 2)).astype("float32")
    before = snapshot(model)

    new_model = rsr.add_trainable_initial_states(model)

    assert same(predict(model, x), predict(new_model, x)) < 1e-6
    assert isinstance(new_model.get_layer("g"), SpecGRU) and new_model.get_layer("g").spec.n == 4
    assert list(rsr.initial_states(new_model)) == ["g"]
    new_model.compile("adam", "mse")
    new_model.fit(x, np.ones((3, 1)), verbose=0)
    assert_same_weights(before, snapshot(model))
    path = str(tmp_path / "spec.keras")
    new_model.save(path)
    assert same(predict(new_model, x), predict(K.models.load_model(path), x)) < 1e-6


def test_a_layer_that_cannot_be_rebuilt_says_what_failed_in_savings_route(K):
    class Broken(K.layers.GRU):
        @classmethod
        def from_config(cls, config):
            raise RuntimeError("the wiring is missing")

    model = K.Sequential([K.Input((None, 2)), Broken(3, name="broken")])
    with pytest.raises(TypeError, match=r"(?s)'broken'.*serialize_keras_object.*the wiring is missing"):
        rsr.add_trainable_initial_states(model)


# ----------------------------------------------------------------------------
# Recurrent layers inside wrappers
# ----------------------------------------------------------------------------


def hierarchical_model(K):
    """The classic hierarchical RNN: a GRU over the words of each sentence, an LSTM over the sentences."""
    inputs = K.Input((3, 5, 2))
    x = K.layers.TimeDistributed(K.layers.GRU(4, name="gru"), name="time_distributed")(inputs)
    outputs = K.layers.Dense(1)(K.layers.LSTM(3, name="lstm")(x))
    return K.Model(inputs, outputs)


def test_a_recurrent_layer_inside_time_distributed_gets_a_state_keyed_by_its_keras_path(K, is_keras3):
    model = hierarchical_model(K)
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 2)).astype("float32")

    new_model = rsr.add_trainable_initial_states(model)

    assert same(predict(model, x), predict(new_model, x)) < 1e-6
    assert sorted(rsr.initial_states(new_model)) == ["lstm", "time_distributed/gru"]
    plan = {d.path: d.route for d in rsr.plan_trainable_initial_states(model)}
    assert plan == {"lstm": "graph", "time_distributed/gru": "surgery"}
    assert type(new_model.get_layer("time_distributed")) is K.layers.TimeDistributed  # saved as itself
    selected = rsr.add_trainable_initial_states(model, layers=["time_distributed/gru"])
    assert list(rsr.initial_states(selected)) == ["time_distributed/gru"]
    if is_keras3:  # variable paths, which a LayoutMap or weight loading keys on, are kept
        old = [v.path for v in model.weights]
        new = [v.path for v in new_model.weights]
        assert set(old) <= set(new)
        assert sorted(set(new) - set(old)) == [
            "lstm_initial_state/initial_state_0",
            "lstm_initial_state/initial_state_1",
            "time_distributed/gru/initial_state_0",
        ]


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_a_time_distributed_rnn_saves_reloads_trains_and_is_removed(K, is_keras3, extension, tmp_path):
    if is_keras3 and extension == ".h5":
        pytest.skip("Keras 3 writes whole models to .keras only")
    model = hierarchical_model(K)
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 2)).astype("float32")
    new_model = rsr.add_trainable_initial_states(model, initializer="random_normal")
    path = str(tmp_path / f"td{extension}")
    new_model.save(path)

    reloaded = K.models.load_model(path)

    assert same(predict(new_model, x), predict(reloaded, x)) < 1e-6
    for name, states in rsr.initial_states(new_model).items():
        for a, b in zip(states, rsr.initial_states(reloaded)[name], strict=True):
            np.testing.assert_array_equal(a, b)
    reloaded.compile("adam", "mse")
    reloaded.fit(x, np.ones((2, 1)), verbose=0)
    plain = rsr.remove_trainable_initial_states(new_model)
    assert same(predict(model, x), predict(plain, x)) < 1e-6
    assert [type(layer).__name__ for layer in plain.layers] == [type(layer).__name__ for layer in model.layers]
    assert type(plain.get_layer("time_distributed").layer) is K.layers.GRU
    if is_keras3:
        assert [v.path for v in plain.weights] == [v.path for v in model.weights]


@pytest.mark.parametrize("nesting", ["sequential", "nested_sequential", "time_distributed_sequential"])
def test_every_variable_keeps_its_path_through_the_retrofit_and_its_removal(K, is_keras3, nesting):
    if not is_keras3:
        pytest.skip("tf-keras names variables by their layer alone")
    inner = K.Sequential([K.Input((5, 2)), K.layers.LSTM(3, name="inner")], name="sub")
    if nesting == "sequential":
        model = K.Sequential([K.Input((5, 2)), K.layers.Bidirectional(K.layers.GRU(2), name="bi")], name="seq")
    elif nesting == "nested_sequential":
        inputs = K.Input((5, 2))
        model = K.Model(inputs, K.layers.Dense(1)(inner(inputs)))
    else:
        inputs = K.Input((3, 5, 2))
        model = K.Model(inputs, K.layers.TimeDistributed(inner, name="td")(inputs))
    paths = [v.path for v in model.weights]

    new_model = rsr.add_trainable_initial_states(model)

    assert set(paths) <= {v.path for v in new_model.weights}
    added = {v.path for v in new_model.weights} - set(paths)
    assert all(path.rsplit("/", 1)[-1].startswith("initial_state_") for path in added), added
    assert [v.path for v in rsr.remove_trainable_initial_states(new_model).weights] == paths


@pytest.mark.parametrize("submodel", ["functional", "sequential"])
def test_a_recurrent_layer_in_a_wrapped_submodel_is_selected_by_its_keras_path(K, submodel):
    """The plan said it would add a state to `per_frame/frames/frame_gru`, but the retrofit refused
    ("names no recurrent layer"): the wrapped submodel was planned again with the outer model's `layers=`.
    Now the submodel is executed from the one plan."""
    frame_in = K.Input((4, 2))
    gru = K.layers.GRU(3, name="frame_gru")
    if submodel == "functional":
        frames = K.Model(frame_in, gru(frame_in), name="frames")
    else:
        frames = K.Sequential([frame_in, gru], name="frames")
    clips = K.Input((5, 4, 2))
    x = K.layers.TimeDistributed(frames, name="per_frame")(clips)
    model = K.Model(clips, K.layers.Dense(1, name="head")(K.layers.LSTM(4, name="clip_lstm")(x)))
    data = np.random.default_rng(0).normal(size=(3, 5, 4, 2)).astype("float32")

    selected = ["per_frame/frames/frame_gru"]
    plan = rsr.plan_trainable_initial_states(model, layers=selected)
    assert [(d.path, str(d.action)) for d in plan] == [("per_frame/frames/frame_gru", "add"), ("clip_lstm", "skip")]
    new_model = rsr.add_trainable_initial_states(model, layers=selected, initializer="ones")
    assert list(rsr.initial_states(new_model)) == selected
    assert not {id(v) for v in new_model.weights} & {id(v) for v in model.weights}
    zero = rsr.add_trainable_initial_states(model, layers=selected)
    assert same(predict(model, data), predict(zero, data)) < 1e-6
    assert same(predict(model, data), predict(new_model, data)) > 1e-4


@pytest.mark.parametrize("submodel", ["functional", "sequential"])
def test_a_time_distributed_submodel_without_recurrent_layers_is_left_as_it_is(K, submodel):
    """rnnmorph's tagger: a `TimeDistributed` around a model of Dense layers, then a Bidirectional LSTM.

    Its removal once failed for a Sequential ("rebuilt with other sublayers"): the
    submodel was rebuilt as a Functional one though it held nothing to remove.
    """
    chars = K.Input((4,), name="chars")
    if submodel == "functional":
        char_model = K.Model(chars, K.layers.Dense(3, name="dense")(chars), name="char_model")
    else:
        char_model = K.Sequential([chars, K.layers.Dense(3, name="dense")], name="char_model")
    inputs = K.Input((6, 4))
    x = K.layers.TimeDistributed(char_model, name="per_word")(inputs)
    model = K.Model(inputs, K.layers.Bidirectional(K.layers.LSTM(2), name="bilstm")(x))
    x = np.random.default_rng(3).normal(size=(2, 6, 4)).astype("float32")

    new_model = rsr.add_trainable_initial_states(model, initializer="ones")

    assert list(rsr.initial_states(new_model)) == ["bilstm"]
    assert type(new_model.get_layer("per_word").layer) is type(char_model)
    removed = rsr.remove_trainable_initial_states(new_model)
    assert rsr.initial_states(removed) == {}
    assert type(removed.get_layer("per_word").layer) is type(char_model)
    assert same(predict(model, x), predict(removed, x)) < 1e-6


def test_a_recurrent_layer_in_a_custom_layer_is_keyed_by_keras_names_not_attributes(K):
    class Block(K.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.rnn_part = K.layers.LSTM(3, name="inner_lstm")

        def call(self, x):
            return self.rnn_part(x)

        def get_config(self):
            return super().get_config()

    K.saving.register_keras_serializable("rsr_test_edges")(Block)
    inputs = K.Input((5, 2))
    model = K.Model(inputs, Block(name="block")(inputs))
    new_model = rsr.add_trainable_initial_states(model)
    assert list(rsr.initial_states(new_model)) == ["block/inner_lstm"]
    assert [d.path for d in rsr.plan_trainable_initial_states(model)] == ["block/inner_lstm"]


# ----------------------------------------------------------------------------
# The self-check's probe batch
# ----------------------------------------------------------------------------


def scale_layer(K):
    """A custom layer (textgenrnn's attention stands for it): the retrofit of a model holding it is checked."""

    class Scale(K.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w

    return Scale()


def test_a_float_input_feeding_an_embedding_gets_ids_in_range(K, is_keras3):
    inputs = K.Input((10,), name="input")  # floats, as textgenrnn's model takes its character ids
    x = K.layers.Embedding(465, 8, name="embedding")(K.layers.Reshape((10,))(inputs))
    x = K.layers.GlobalAveragePooling1D()(scale_layer(K)(K.layers.LSTM(5, return_sequences=True)(x)))
    model = K.Model(inputs, K.layers.Dense(3)(x))
    from rnn_state_rewriter.backend import adapter_for

    for seed in range(5):
        batch = probe_batch(adapter_for(model), model, seed=seed)
        assert batch.dtype == np.float32 and np.all(batch == np.round(batch))
        assert 0 <= batch.min() and batch.max() < 10

    new_model, probe = retrofit(model, RetrofitOptions())  # checked: it holds a custom layer
    assert probe.max_change < 1e-5


def ctc_training_model(K, is_keras3):
    """The classic OCR example's training model: the CTC loss computed in a `Lambda` from label and length inputs."""
    images = K.Input((12, 8), name="image")
    labels = K.Input((5,), name="label")
    input_length = K.Input((1,), dtype="int64", name="input_length")
    label_length = K.Input((1,), dtype="int64", name="label_length")
    y = K.layers.Dense(4, activation="softmax")(K.layers.GRU(6, return_sequences=True, name="gru")(images))

    if is_keras3:

        def ctc_lambda_func(args):
            y_pred, labels, input_length, label_length = args
            lengths = K.ops.squeeze(label_length, -1), K.ops.squeeze(input_length, -1)
            return K.ops.expand_dims(K.ops.ctc_loss(labels, y_pred, *lengths), -1)

    else:

        def ctc_lambda_func(args):
            y_pred, labels, input_length, label_length = args
            return K.backend.ctc_batch_cost(labels, y_pred, input_length, label_length)

    loss = K.layers.Lambda(ctc_lambda_func, output_shape=(1,), name="ctc")([y, labels, input_length, label_length])
    return K.Model([images, labels, input_length, label_length], loss), ctc_lambda_func


def test_a_ctc_loss_in_a_lambda_retrofits_in_one_line(K, is_keras3):
    model, function = ctc_training_model(K, is_keras3)
    rng = np.random.default_rng(4)
    batch = [
        rng.normal(size=(2, 12, 8)).astype("float32"),
        rng.integers(1, 3, size=(2, 5)).astype("float32"),  # no blank: 0 in Keras 3, the last class in tf-keras
        np.full((2, 1), 12, "int64"),
        np.full((2, 1), 5, "int64"),
    ]

    new_model, probe = retrofit(model, RetrofitOptions())

    assert probe is None  # vouched for: the copy's Lambda holds the same live function
    assert new_model.get_layer("ctc").function is function
    assert same(predict(model, batch), predict(new_model, batch)) < 1e-5


def picky_layer(K, is_keras3):
    """A layer that refuses every real batch (its shape is known without running it)."""
    import_tf = None if is_keras3 else __import__("tensorflow")

    class Picky(K.layers.Layer):
        def call(self, x):
            if is_keras3 or import_tf.executing_eagerly():
                raise ValueError("labels longer than the sequence")
            return x

        def compute_output_shape(self, input_shape):
            return input_shape

    return Picky(name="picky")


def test_an_original_that_fails_on_the_probe_batch_is_said_in_one_line(K, is_keras3):
    inputs = K.Input((5, 2))
    model = K.Model(inputs, picky_layer(K, is_keras3)(K.layers.LSTM(3, return_sequences=True)(inputs)))
    with pytest.raises(ValueError) as raised:
        rsr.add_trainable_initial_states(model)
    message = str(raised.value)
    assert "\n" not in message and raised.value.__cause__ is None
    assert "could not run the original model" in message and "labels longer than the sequence" in message
    assert "`sample=`" in message and "`check=False`" in message
    assert rsr.initial_states(rsr.add_trainable_initial_states(model, check=False)) != {}


# ----------------------------------------------------------------------------
# Vocabularies
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("layer_kind", ["StringLookup", "TextVectorization"])
def test_a_vocabulary_with_any_term_is_copied_in_memory(K, is_keras3, layer_kind):
    tf = pytest.importorskip("tensorflow", reason="Keras' lookup layers run on tf.data")
    if is_keras3 and BACKEND != "tensorflow":
        pytest.skip("string inputs need Keras 3's TensorFlow backend")
    if layer_kind == "StringLookup":
        text = list("ab\ncd e\u00e9\n\n xy") + [""]
        lookup = K.layers.StringLookup(name="lookup")
        lookup.adapt(tf.constant(text))
        inputs = K.Input((None,), dtype="string")
        batch = tf.constant([list("ab\ncd"), ["\n", "\n", " ", "", "\u00e9"]])
    else:

        def split(text):  # on spaces only: terms keep their newlines
            return tf.strings.split(text, sep=" ")

        lookup = K.layers.TextVectorization(max_tokens=20, name="lookup", standardize=None, split=split)
        lookup.adapt(["hello w\u00f6rld", "a b c\nd", "x\ny"])
        inputs = K.Input((), dtype="string")
        batch = tf.constant(["hello c\nd", "a w\u00f6rld"])
    x = K.layers.Embedding(32, 4)(lookup(inputs))
    model = K.Model(inputs, K.layers.GRU(3, name="gru")(x))
    assert any("\n" in str(term) for term in lookup.get_vocabulary())

    new_model = rsr.add_trainable_initial_states(model)

    assert new_model.get_layer("lookup").get_vocabulary() == lookup.get_vocabulary()
    assert same(model(batch), new_model(batch)) < 1e-6


# ----------------------------------------------------------------------------
# Subclassed models of several inputs, holding models of several arguments
# ----------------------------------------------------------------------------


def captioning_decoder(K, is_keras3):
    """The image captioning tutorial's decoder, one input `(features, tokens)`, holding a two-argument attention."""
    ops = K.ops if is_keras3 else __import__("tensorflow")

    def total(x, axis):
        return ops.sum(x, axis=axis) if is_keras3 else ops.reduce_sum(x, axis=axis)

    class BahdanauAttention(K.Model):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.W1, self.W2, self.V = K.layers.Dense(units), K.layers.Dense(units), K.layers.Dense(1)

        def call(self, features, hidden):
            score = self.V(K.activations.tanh(self.W1(features) + self.W2(ops.expand_dims(hidden, 1))))
            weights = K.activations.softmax(score, axis=1)
            return total(weights * features, 1), weights

    class Decoder(K.Model):
        def __init__(self, units=6, vocab_size=20, **kwargs):
            super().__init__(**kwargs)
            self.units, self.vocab_size = units, vocab_size
            self.embedding = K.layers.Embedding(vocab_size, 8)
            self.gru = K.layers.GRU(units, return_sequences=True, return_state=True, name="gru")
            self.fc = K.layers.Dense(vocab_size)
            self.attention = BahdanauAttention(units)

        def call(self, inputs):
            features, tokens = inputs
            context, _ = self.attention(features, features[:, 0, : self.units] * 0.0)
            output, _ = self.gru(self.embedding(tokens))
            return self.fc(output + ops.expand_dims(context, 1))

        def get_config(self):
            return {**super().get_config(), "units": self.units, "vocab_size": self.vocab_size}

    return Decoder()


def test_a_subclassed_model_of_two_inputs_holding_a_two_argument_model_retrofits_in_one_line(K, is_keras3):
    decoder = captioning_decoder(K, is_keras3)
    rng = np.random.default_rng(5)
    batch = (rng.normal(size=(2, 5, 6)).astype("float32"), rng.integers(0, 20, size=(2, 7)).astype("int32"))
    expected = decoder(batch)
    before = snapshot(decoder)

    new_model, probe = retrofit(
        decoder, RetrofitOptions()
    )  # no `sample=`: the shapes it was built on make the probe batch

    assert probe is not None and probe.max_change < 1e-5
    assert same(expected, new_model(batch)) < 1e-6
    assert list(rsr.initial_states(new_model)) == ["gru"]
    assert_same_weights(before, snapshot(decoder))


def test_a_model_whose_call_takes_several_arguments_takes_them_as_a_tuple_sample(K, is_keras3):
    class Decoder(K.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gru = K.layers.GRU(4, return_sequences=True, name="gru")
            self.dense = K.layers.Dense(4)

        def call(self, tokens, features, hidden):
            return self.gru(tokens) + self.dense(features)[:, None, :] + hidden[:, None, :]

    decoder = Decoder()
    rng = np.random.default_rng(6)
    args = tuple(rng.normal(size=shape).astype("float32") for shape in [(2, 3, 2), (2, 5), (2, 4)])
    expected = decoder(*args)

    with pytest.raises(ValueError, match=r"3 arguments of its `call`.*`sample=`"):
        rsr.add_trainable_initial_states(decoder)
    new_model, probe = retrofit(decoder, RetrofitOptions(sample=args))
    assert probe.max_change < 1e-5
    assert same(expected, new_model(*args)) < 1e-6
    unchecked = rsr.add_trainable_initial_states(decoder, check=False)
    assert same(expected, unchecked(*args)) < 1e-6


@pytest.mark.skipif(BACKEND == "numpy", reason="no backend")
def test_the_probe_of_a_subclassed_model_is_nested_as_its_inputs(K, is_keras3):
    decoder = captioning_decoder(K, is_keras3)
    decoder((np.zeros((1, 5, 6), "float32"), np.zeros((1, 7), "int32")))
    from rnn_state_rewriter.backend import adapter_for

    features, tokens = probe_batch(adapter_for(decoder), decoder)
    assert features.shape[1:] == (5, 6) and tokens.shape[1:] == (7,)


# ----------------------------------------------------------------------------
# Custom layers and subclassed models: where their recurrent layers are made, how they are named
# ----------------------------------------------------------------------------


def test_a_custom_layer_making_its_recurrent_layer_in_build_saves_reloads_and_is_removed(K, tmp_path):
    """keras-lmu's `LMU` makes its recurrent sublayers in `build`, after its config is read back."""

    class Block(K.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units, self.rnn = units, None

        def build(self, input_shape):
            self.rnn = K.layers.GRU(self.units, name="gru")
            self.rnn.build(input_shape)
            super().build(input_shape)

        def call(self, x):
            return self.rnn(x)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    K.saving.register_keras_serializable("rsr_test_edges", f"BuildBlock_{K.__name__}")(Block)
    model = K.Sequential([K.Input((5, 3)), Block(4, name="block"), K.layers.Dense(1)])
    x = np.random.default_rng(7).normal(size=(2, 5, 3)).astype("float32")
    new_model = rsr.add_trainable_initial_states(model, initializer="ones")
    path = str(tmp_path / "block.keras")
    new_model.save(path)

    reloaded = K.models.load_model(path)

    assert same(predict(new_model, x), predict(reloaded, x)) < 1e-6
    assert list(rsr.initial_states(reloaded)) == ["block/gru"]
    assert same(predict(model, x), predict(rsr.remove_trainable_initial_states(new_model), x)) < 1e-6


def test_a_submodel_a_custom_layers_config_carries_is_removed_from_the_walked_record(K, is_keras3, monkeypatch):
    """A custom layer whose config carries its graph submodel, and which holds a recurrent layer of its own:
    its copy rebuilds the submodel (with its states) from that config and takes its wrapper back once built.
    The removal drops both from the record of the model it was given, walking nothing else."""
    import rnn_state_rewriter.remove as remove_module

    def serialize(layer):
        return K.saving.serialize_keras_object(layer) if is_keras3 else K.layers.serialize(layer)

    def deserialize(config):
        return K.saving.deserialize_keras_object(config) if is_keras3 else K.layers.deserialize(config)

    class Holder(K.layers.Layer):
        def __init__(self, inner=None, **kwargs):
            super().__init__(**kwargs)
            if isinstance(inner, dict):
                inner = deserialize(inner)
            self.inner = inner or K.Sequential(
                [K.Input((5, 3)), K.layers.LSTM(4, return_sequences=True, name="lstm")], name="inner"
            )
            self.gru = K.layers.GRU(2, name="gru")

        def call(self, x):
            return self.gru(self.inner(x))

        def get_config(self):
            return {**super().get_config(), "inner": serialize(self.inner)}

    K.saving.register_keras_serializable("rsr_test_edges", f"Holder_{K.__name__}")(Holder)
    inputs = K.Input((5, 3))
    model = K.Model(inputs, Holder(name="holder")(inputs))
    x = np.random.default_rng(3).normal(size=(2, 5, 3)).astype("float32")
    new_model = rsr.add_trainable_initial_states(model, initializer="random_normal")
    assert sorted(rsr.initial_states(new_model)) == ["holder/gru", "holder/inner/lstm"]
    assert same(predict(model, x), predict(new_model, x)) > 1e-4
    walked = []
    walk = remove_module.walk
    monkeypatch.setattr(remove_module, "walk", lambda m: walked.append(m.name) or walk(m))

    plain = rsr.remove_trainable_initial_states(new_model)

    assert walked == [new_model.name]
    assert same(predict(model, x), predict(plain, x)) < 1e-6
    holder = plain.get_layer("holder")
    assert [type(layer).__name__ for layer in holder.inner.layers if "Input" not in type(layer).__name__] == ["LSTM"]
    assert type(holder.gru) is K.layers.GRU
    assert not rsr.initial_states(plain)


def test_two_wrapped_layers_in_one_custom_layer_save_apart(K, is_keras3, tmp_path):
    class TwoGRU(K.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.a = K.layers.GRU(4, return_sequences=True, name="a")
            self.b = K.layers.GRU(4, name="b")

        def call(self, x):
            return self.b(self.a(x))

    K.saving.register_keras_serializable("rsr_test_edges", f"TwoGRU_{K.__name__}")(TwoGRU)
    model = K.Sequential([K.Input((5, 3)), TwoGRU(name="two"), K.layers.Dense(1)])
    x = np.random.default_rng(8).normal(size=(2, 5, 3)).astype("float32")
    new_model = rsr.add_trainable_initial_states(model, initializer="random_normal")
    names = [v.path if is_keras3 else v.name for v in new_model.weights]
    assert len(set(names)) == len(names), names
    for extension in [".keras"] if is_keras3 else [".keras", ".h5"]:
        path = str(tmp_path / f"two{extension}")
        new_model.save(path)
        assert same(predict(new_model, x), predict(K.models.load_model(path), x)) < 1e-6


def test_a_subclassed_models_copy_keeps_its_variable_paths(K, is_keras3):
    if not is_keras3:
        pytest.skip("tf-keras names variables by their layer alone")

    class Net(K.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gru, self.dense = K.layers.GRU(3, name="gru"), K.layers.Dense(2, name="dense")

        def call(self, x):
            return self.dense(self.gru(x))

    net = Net(name="net")
    net(np.zeros((1, 4, 3), "float32"))
    paths = [v.path for v in net.weights]
    new_model = rsr.add_trainable_initial_states(net)
    assert set(paths) <= {v.path for v in new_model.weights}
    assert "net/gru/initial_state_0" in {v.path for v in new_model.weights}
    assert [v.path for v in rsr.remove_trainable_initial_states(new_model).weights] == paths

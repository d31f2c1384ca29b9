"""Property-based: random recurrent models of both generations keep every promise of the retrofit.

For every generated model (whose states may be conditioned on an extra context input: ids or
floats): predictions unchanged at zero init, no variable shared
with the original, the original bit-identical after one `fit` of the copy, a
gradient reaching every new state, save and reload identical,
`remove_trainable_initial_states` restoring the original predictions, and the
original still predicting what it did.

The models may start with preprocessing layers whose state is more than their
variables, adapted once per example on tiny data: `Normalization` (statistics
finalized on loading), `Discretization` (bin boundaries), and on TensorFlow
`IntegerLookup`, `StringLookup` and `TextVectorization` (vocabularies saved as
assets; string inputs and Keras 3's lookup tables need TensorFlow, so JAX and
PyTorch runs draw only the first two, which run on every Keras 3 backend).

A second property draws the patterns Keras' own saving shapes: recurrent and Dense layers whose
`get_config()` holds a live object that their `from_config` takes only serialized, and (TensorFlow
only) adapted vocabularies of odd terms (newlines, the empty term, non-ASCII) feeding an Embedding;
it also checks the keys of `initial_states` (Keras-name paths) and, in Keras 3, that every variable
keeps its path.

CI runs a fixed seed and a few examples per generation; `pytest --slow` runs 500.
The compiled `predict` path is checked once per example (original against the
retrofitted copy); the other comparisons call the models directly and the copy
trains eagerly, which keeps 500 examples within an hour on 2 cores on TensorFlow
and PyTorch; JAX, which compiles every new model, runs about 7 examples a minute.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools

import keras
import numpy as np
from conftest import (
    BACKEND,
    as_tensor,
    assert_same_weights,
    gradients,
    property_settings,
    release_compiled_code,
    snapshot,
    to_numpy,
)
from hypothesis import given, strategies as st

import rnn_state_rewriter as rsr

KINDS = ["SimpleRNN", "GRU", "LSTM", "Bidirectional", "Stacked"]

# What feeds the recurrent blocks (shared by every input of a two-input model):
# float sequences (optionally through an adapted `Normalization`), a ConvLSTM1D
# (likewise), or token ids through an Embedding, straight or from an adapted
# preprocessing layer whose state is more than its variables (bin boundaries
# computed by `finalize_state`, vocabularies that are assets).
FLOAT_STEMS = ["float", "conv"]
TOKEN_STEMS = ["embedding", "discretization", "integer_lookup", "string_lookup", "text_vectorization"]
# Keras 3's lookup layers run on TensorFlow tables and string tensors need TensorFlow:
# on the JAX and PyTorch backends Keras 3 models draw only the layers that run there.
NEEDS_TENSORFLOW = {"integer_lookup", "string_lookup", "text_vectorization"}

# Data of the adapted layers: statistics far from Normalization's defaults (mean 0,
# variance 1), bins and vocabularies that no config holds, so that a copy without
# the adapted state predicts otherwise (or fails).
MEAN, SCALE = np.array([20.0, -5.0, 3.0], "float32"), np.array([7.0, 0.5, 2.0], "float32")
WORDS = np.array(["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away"])
INTEGERS = np.array([3, 7, 9, 42, 100, 5, 64, 11, 8], "int64")  # no 0: the mask token of a masked lookup
UNSEEN = len(WORDS)  # index of a token that no adapt saw: the test data has some (out of vocabulary)
CONTEXT_IDS = 5


def stems(K, backend):
    """The stems a generation can hold on the backend of this run."""
    tensorflow = K.__name__ != "keras" or backend == "tensorflow"
    # Keras 3's Discretization adapts through tf.data: without TensorFlow installed it cannot adapt.
    installed = importlib.util.find_spec("tensorflow") is not None
    return FLOAT_STEMS + [
        s for s in TOKEN_STEMS if (tensorflow or s not in NEEDS_TENSORFLOW) and (installed or s != "discretization")
    ]


@st.composite
def model_specs(draw, stem_choices=tuple(FLOAT_STEMS + TOKEN_STEMS)):
    stem = draw(st.sampled_from(stem_choices))
    spec = {
        "steps": draw(st.integers(3, 5)),
        "stem": stem,
        "normalize": stem in FLOAT_STEMS and not draw(st.booleans()),  # the simplest model normalizes
        "masking": stem in TOKEN_STEMS and draw(st.booleans()),
        "num_bins": draw(st.integers(3, 6)) if stem == "discretization" else None,
        "two_inputs": draw(st.booleans()),
        "blocks": [],
        "return_state": draw(st.booleans()),
        "dense_head": draw(st.booleans()),
        "context": draw(st.sampled_from([None, "ids", "float"])),  # an extra input the new states may take
    }
    for _ in range(draw(st.integers(1, 3))):
        spec["blocks"].append(
            {
                "kind": draw(st.sampled_from(KINDS)),
                "units": draw(st.integers(2, 4)),
                "go_backwards": draw(st.booleans()),
                "dropout": draw(st.sampled_from([0.0, 0.2])),
                "wrap": draw(st.sampled_from([None, "sequential", "functional"])),
            }
        )
    return spec


def recurrent(K, block, return_sequences, return_state=False, name=None):
    options = {"return_sequences": return_sequences, "return_state": return_state, "name": name}
    units, backwards, dropout = block["units"], block["go_backwards"], block["dropout"]
    kind = block["kind"]
    if kind == "Bidirectional":
        inner = K.layers.LSTM(units, dropout=dropout, return_sequences=return_sequences, return_state=return_state)
        return K.layers.Bidirectional(inner, name=name)
    if kind == "Stacked":
        cells = K.layers.StackedRNNCells([K.layers.GRUCell(units, dropout=dropout), K.layers.LSTMCell(units)])
        return K.layers.RNN(cells, go_backwards=backwards, **options)
    return getattr(K.layers, kind)(units, dropout=dropout, go_backwards=backwards, **options)


def input_of(K, spec):
    """The shape and dtype of each input of a spec's model."""
    steps, stem = spec["steps"], spec["stem"]
    return {
        "float": ((steps, 3), "float32"),
        "conv": ((steps, 5, 2), "float32"),
        "embedding": ((steps,), "int32"),
        "discretization": ((steps,), "float32"),
        "integer_lookup": ((steps,), "int64"),
        "string_lookup": ((steps,), "string"),
        # one string a sample; tf-keras' TextVectorization wants it in a last axis of 1
        "text_vectorization": (() if K.__name__ == "keras" else (1,), "string"),
    }[stem]


def adapted_stem(K, spec):
    """The stem's layers, its preprocessing layer adapted once on data of its own (no test input)."""
    stem, masking = spec["stem"], spec["masking"]
    adapt = data(K, spec, batch=8, seed=1, adapt=True)[0]
    layers = []
    if spec["normalize"]:
        norm = K.layers.Normalization(axis=-1, name="normalization")
        norm.adapt(adapt)
        layers.append(norm)
    if stem == "conv":
        layers += [
            K.layers.ConvLSTM1D(2, 2, return_sequences=True, name="conv"),
            K.layers.TimeDistributed(K.layers.Flatten()),
        ]
    if stem in FLOAT_STEMS:
        return layers
    if stem == "embedding":
        return [K.layers.Embedding(12, 3, mask_zero=masking, name="embedding")]
    if stem == "discretization":
        tokens = K.layers.Discretization(num_bins=spec["num_bins"], name="discretization")
    elif stem == "integer_lookup":
        tokens = K.layers.IntegerLookup(mask_token=0 if masking else None, name="integer_lookup")
    elif stem == "string_lookup":
        tokens = K.layers.StringLookup(mask_token="" if masking else None, name="string_lookup")
    else:  # pads with 0, its mask token
        tokens = K.layers.TextVectorization(output_sequence_length=spec["steps"], name="text_vectorization")
    tokens.adapt(adapt)
    size = spec["num_bins"] if stem == "discretization" else tokens.vocabulary_size()
    return [tokens, K.layers.Embedding(size, 3, mask_zero=masking, name="embedding")]


def build(K, spec):
    """A model from a spec: a stem (adapted preprocessing, ConvLSTM1D, embedding), blocks, shared layers, submodels."""
    shape, dtype = input_of(K, spec)
    inputs = [K.Input(shape, dtype=dtype, name=f"in_{i}") for i in range(2 if spec["two_inputs"] else 1)]
    stem = adapted_stem(K, spec)  # layers shared by every input: so a recurrent layer is used at several call sites
    blocks = spec["blocks"]
    layers = []
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        layer = recurrent(
            K, block, return_sequences=not last, return_state=last and spec["return_state"], name=f"rnn_{i}"
        )
        if block["wrap"] and not (last and spec["return_state"]):
            width = None  # input width of the submodel is known only when built: wrap lazily below
            layer = ("wrap", block["wrap"], layer, width)
        layers.append(layer)
    outputs = []
    context = []
    if spec["context"] == "ids":
        context = [K.Input((), dtype="int32", name="ctx")]
    elif spec["context"] == "float":
        context = [K.Input((2,), name="ctx")]
    for x in inputs:
        for layer in stem:
            x = layer(x)
        for i, layer in enumerate(layers):
            if isinstance(layer, tuple):
                if layer[3] is None:
                    _, kind, rnn, _ = layer
                    sub_in = K.Input(tuple(x.shape[1:]))
                    if kind == "sequential":
                        sub = K.Sequential([sub_in, rnn], name=f"seq_{i}")
                    else:
                        sub = K.Model(sub_in, rnn(sub_in), name=f"fun_{i}")
                    layers[i] = layer = ("wrap", kind, sub, True)
                x = layer[2](x)
            else:
                x = layer(x)
        result = keras.tree.flatten(x)
        if spec["dense_head"]:
            result = [K.layers.Dense(1)(result[0])] + list(result[1:])
        outputs += list(result)
    return K.Model(inputs + context, outputs)


def data(K, spec, batch=6, seed=0, adapt=False):
    """The inputs of a spec's model; `adapt`: the data its preprocessing layer adapts on (no unseen token, no padding).

    With masking, every other sample's last step is padding, as the stem masks
    it; no sample is all padding.
    """
    rng = np.random.default_rng(seed)
    steps, stem, masking = spec["steps"], spec["stem"], spec["masking"] and not adapt
    count = 1 if adapt else 2 if spec["two_inputs"] else 1
    xs = []
    for _ in range(count):
        if stem in FLOAT_STEMS:
            shape, _ = input_of(K, spec)
            x = rng.normal(size=(batch, *shape)).astype("float32")
            xs.append(x * SCALE[: shape[-1]] + MEAN[: shape[-1]] if spec["normalize"] else x)
        elif stem == "discretization":
            # With masking, bin 0 (below the lowest boundary, at most the 1/3 quantile) is the padding only
            # (checked for every `steps` and `num_bins` drawn: the adapt data depends on nothing else).
            x = rng.normal(size=(batch, steps))
            if masking:
                x = np.abs(x)
                x[::2, -1] = -10.0
            xs.append((x * SCALE[0] + MEAN[0]).astype("float32"))
        elif stem == "embedding":
            tokens = rng.integers(1, 12, size=(batch, steps))
            if masking:
                tokens[::2, -1] = 0
            xs.append(tokens.astype("int32"))
        else:
            index = rng.integers(0, len(WORDS) if adapt else len(WORDS) + 1, size=(batch, steps))
            if stem == "integer_lookup":
                x = np.where(index == UNSEEN, 1000, INTEGERS[np.minimum(index, UNSEEN - 1)]).astype("int64")
                if masking:
                    x[::2, -1] = 0
            else:
                x = np.where(index == UNSEEN, "zebra", WORDS[np.minimum(index, UNSEEN - 1)]).astype(object)
                if masking:
                    x[::2, -1] = ""
            if stem == "text_vectorization":  # a sentence a sample: padded to `steps` by the layer
                x = np.array([" ".join(w for w in row if w) for row in x])
                if K.__name__ != "keras":
                    x = x[:, None]
            xs.append(x if stem == "integer_lookup" else strings(x))
    if spec["context"] and not adapt:
        ids = spec["context"] == "ids"
        context = rng.integers(0, CONTEXT_IDS, size=(batch,)).astype("int32") if ids else rng.normal(size=(batch, 2))
        context = context.astype("int32" if ids else "float32")
        xs.append(context if all(isinstance(x, np.ndarray) for x in xs) else as_tensor(K, context))
    return xs


def strings(array):
    """A NumPy array of strings as a string tensor: Keras 3's `predict` and `fit` refuse NumPy strings."""
    import tensorflow as tf  # string inputs are drawn on the TensorFlow backend only

    return tf.constant(array.astype(str))


def as_list(outputs):
    return keras.tree.flatten(outputs)


def outputs(model, xs):
    """A model's outputs, from a direct call: the compiled `predict` path is checked once per example."""
    return [to_numpy(o) for o in as_list(model(xs, training=False))]


def file_format(K, spec):
    """`.keras`, but `.h5` for a tf-keras model with a Discretization.

    tf-keras' `.keras` loader never calls `finalize_state`, so it loses the bin
    boundaries of any adapted Discretization (of the original model too: a
    tf-keras bug, not the retrofit's); its `.h5` loader keeps them.
    """
    return "h5" if spec["stem"] == "discretization" and K.__name__ != "keras" else "keras"


def context_options(K, model, spec):
    """The retrofit's context arguments: the context input conditions the recurrent layers of the model's
    own graph (it does not reach into submodels), where there are any."""
    own = [layer.name for layer in model.layers if rsr.is_recurrent(layer)]
    if not spec["context"] or not own:
        return {}
    return {"context": "ctx", "num_ids": CONTEXT_IDS if spec["context"] == "ids" else None, "layers": own}


def check_promises(K, model, spec, tmp_path):
    check_retrofit(K, model, data(K, spec), tmp_path, context_options(K, model, spec), [file_format(K, spec)])


def check_retrofit(K, model, xs, tmp_path, options, formats, keys=None, lossy_formats=()):
    """Every promise of the retrofit for `model` on inputs `xs`, saved in each of `formats`.

    `keys`: the keys `initial_states` must give (Keras-name paths of the recurrent layers), with Keras 3's
    variable paths kept and every state moved by training, where given. `lossy_formats`: where Keras' own
    saving may not round-trip the original (a vocabulary file holds one term a line, so a term with a
    newline, or the empty one, comes back otherwise or not at all; tf-keras' `.h5` loader hands a
    layer's `from_config` live objects where saving wrote them serialized): the original is saved first,
    and where it does not come back as it was, the copy at zero states must come back as the original
    does (or fail as it fails) instead.
    """
    original = as_list(model.predict(xs, verbose=0))
    new = rsr.add_trainable_initial_states(model, **options)
    for a, b in zip(as_list(new.predict(xs, verbose=0)), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not {id(v) for v in new.weights} & {id(v) for v in model.weights}
    if keys is not None:
        assert sorted(rsr.initial_states(new)) == sorted(keys)
        if K.__name__ == "keras":  # every variable keeps its path (a LayoutMap, weight loading by path)
            assert {v.path for v in model.weights} <= {v.path for v in new.weights}

    state_class = rsr.TrainableInitialState  # its tf-keras twin is one too
    state_layers = [layer for layer in new._flatten_layers() if isinstance(layer, state_class)]
    state_variables = [v for layer in state_layers for v in layer.trainable_weights]
    assert state_variables
    for variable, gradient in zip(state_variables, gradients(new, xs, state_variables), strict=True):
        assert gradient is not None and np.abs(gradient).max() > 0, variable.name

    before = snapshot(model)
    states = rsr.initial_states(new)
    new.compile(K.optimizers.SGD(0.1), ["mse"] * len(original), run_eagerly=True)
    new.fit(xs, [np.ones_like(o) for o in original], epochs=1, verbose=0)
    assert_same_weights(before, snapshot(model))
    if keys is not None:  # the step moved every state
        trained = rsr.initial_states(new)
        for key in keys:
            assert any(np.abs(a - b).max() > 0 for a, b in zip(trained[key], states[key], strict=True)), key

    for extension in formats:
        if extension in lossy_formats:
            kept = round_trip(K, model, xs, str(tmp_path / f"original.{extension}"))
            lost = isinstance(kept, Exception) or not all(
                np.allclose(a, b, atol=1e-5) for a, b in zip(kept, original, strict=True)
            )
            if lost:
                zero = rsr.add_trainable_initial_states(model, **options)
                copied = round_trip(K, zero, xs, str(tmp_path / f"zero.{extension}"))
                if isinstance(kept, Exception):
                    assert type(copied) is type(kept), f"{extension}: {copied!r} where the original: {kept!r}"
                else:
                    assert not isinstance(copied, Exception), f"{extension}: {copied!r}"
                    for a, b in zip(copied, kept, strict=True):
                        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=extension)
                    if keys is not None:  # what it learned comes back all the same
                        assert_states_saved(K, new, str(tmp_path / f"model.{extension}"), extension)
                continue
        path = str(tmp_path / f"model.{extension}")
        new.save(path)
        reloaded = K.models.load_model(path)
        for a, b in zip(outputs(reloaded, xs), outputs(new, xs), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=extension)
        if keys is not None:
            assert_states_saved(K, new, path, extension, reloaded)

    shifted = rsr.add_trainable_initial_states(model, initializer="random_normal", **options)
    removed = rsr.remove_trainable_initial_states(shifted)
    for a, b in zip(outputs(removed, xs), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the original's state beyond its weights (statistics, vocabularies) is untouched too
    for a, b in zip(outputs(model, xs), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def assert_states_saved(K, new, path, extension, reloaded=None):
    """The learned states of `new` come back from its file at `path` (loaded now unless `reloaded`)."""
    if reloaded is None:
        new.save(path)
        reloaded = K.models.load_model(path)
    expected = rsr.initial_states(new)
    states = rsr.initial_states(reloaded)
    assert sorted(states) == sorted(expected), extension
    for key, values in states.items():
        for a, b in zip(values, expected[key], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"{extension}: {key}")


def round_trip(K, model, xs, path):
    """What `model` saved to `path` and loaded back predicts on `xs`, or the exception saving or loading raised."""
    try:
        model.save(path)
        return outputs(K.models.load_model(path), xs)
    except Exception as error:  # noqa: BLE001 (compared with what the original's saving raises)
        return error


def test_random_models_keep_every_promise(K, request, tmp_path_factory):
    count = itertools.count(1)

    @property_settings(request)
    @given(spec=model_specs(stems(K, BACKEND)))
    def check(spec):
        if next(count) % 25 == 0:  # every example compiles anew: clearing each time would double the run
            release_compiled_code()
        K.utils.set_random_seed(0)
        model = build(K, spec)
        check_promises(K, model, spec, tmp_path_factory.mktemp("model"))

    check()


# ----------------------------------------------------------------------------
# Layers whose config holds a live object; vocabularies with odd terms
# ----------------------------------------------------------------------------

# Recurrent kinds of the second property: `Live*` layers return a live `Width` under `units` in their
# `get_config()` and take only its serialized form in `from_config` (as neural-circuit-policy layers
# carry their wiring); Keras 3 also draws one inside a Bidirectional (tf-keras' Bidirectional makes its
# backward layer from the raw config, which such a layer refuses, so no such model can be built there).
EDGE_KINDS = ["LiveGRU", "LiveLSTM", "GRU", "LSTM", "SimpleRNN"]
VOCABULARY_STEMS = ["odd_string_lookup", "odd_text_vectorization"]
# Terms every odd vocabulary holds (a StringLookup's also the empty term), and the characters of drawn ones.
ODD_TERMS = ["\n", "a\nb", "\u00e9t\u00e9", "\u65e5\u672c"]
ODD_ALPHABET = "ab\n \t\u00e9\u65e5\U0001f600"


@functools.cache
def edge_classes(K):
    """`Width` (a registered helper with `get_config`/`from_config`) and the `LiveGRU`, `LiveLSTM` and
    `LiveDense` layers holding one, and the split on spaces of the odd TextVectorization: registered once
    per process and generation."""
    register = K.saving.register_keras_serializable(f"rsr_properties_{K.__name__}")

    class Width:
        def __init__(self, n):
            self.n = n

        def get_config(self):
            return {"n": self.n}

        @classmethod
        def from_config(cls, config):
            return cls(**config)

    def live(base):
        class Live(base):
            def __init__(self, units, **kwargs):
                self.width = units if isinstance(units, Width) else Width(units)
                super().__init__(self.width.n, **kwargs)

            def get_config(self):
                return {**super().get_config(), "units": self.width}  # the live object

            @classmethod
            def from_config(cls, config):  # expects the serialized form that saving passes
                config = dict(config)
                units = config.pop("units")
                return cls(Width.from_config(units["config"]), **config)

        return register(type(f"Live{base.__name__}", (Live,), {}))

    def split_on_spaces(text):  # terms keep their newlines and tabs
        import tensorflow as tf

        return tf.strings.split(text, sep=" ")

    layers = {name: live(getattr(K.layers, name)) for name in ("GRU", "LSTM", "Dense")}
    return register(Width), layers, register(split_on_spaces)


def edge_stems(K, backend):
    """The stems of the edge models a generation can hold on this run: odd vocabularies need TensorFlow
    (Keras' lookup layers run on tf.data, string inputs are TensorFlow tensors)."""
    tensorflow = K.__name__ != "keras" or backend == "tensorflow"
    return ["float"] + (VOCABULARY_STEMS if tensorflow and importlib.util.find_spec("tensorflow") else [])


@st.composite
def edge_specs(draw, stem_choices=("float", *VOCABULARY_STEMS), bidirectional=True):
    """A model with a live-config recurrent layer and a live-config Dense layer, maybe fed by an odd
    vocabulary: `terms` (odd ones, then drawn ones) are what its lookup adapts on."""
    stem = draw(st.sampled_from(stem_choices))
    spaces = stem == "odd_text_vectorization"  # split on spaces: no term holds one, none is empty
    alphabet = ODD_ALPHABET.replace(" ", "") if spaces else ODD_ALPHABET
    drawn = draw(st.lists(st.text(alphabet, min_size=0 if not spaces else 1, max_size=3), max_size=4))
    terms = list(dict.fromkeys(ODD_TERMS + ([] if spaces else [""]) + drawn))
    kinds = EDGE_KINDS + (["BidirectionalLive"] if bidirectional else [])
    first = draw(st.sampled_from(["LiveGRU", "LiveLSTM"] + (["BidirectionalLive"] if bidirectional else [])))
    live_dense = draw(st.sampled_from(["before", "head", "both"]))
    blocks = []
    for i in range(draw(st.integers(1, 2))):
        blocks.append(
            {
                "kind": first if i == 0 else draw(st.sampled_from(kinds)),
                "units": draw(st.integers(2, 4)),
                "go_backwards": draw(st.booleans()),
                "wrap": draw(st.sampled_from([None, "sequential", "functional"])),
            }
        )
    return {
        "steps": draw(st.integers(3, 5)),
        "stem": stem,
        "terms": terms,
        "before": "LiveDense" if live_dense in ("before", "both") else draw(st.sampled_from([None, "Dense"])),
        "blocks": draw(st.permutations(blocks)),
        "head": "LiveDense" if live_dense in ("head", "both") else draw(st.sampled_from([None, "Dense"])),
    }


def edge_recurrent(K, block, return_sequences, name):
    _, live, _ = edge_classes(K)
    units, backwards = block["units"], block["go_backwards"]
    if block["kind"] == "BidirectionalLive":
        # Keras 3's Bidirectional makes its backward layer with `go_backwards=True`: the forward one runs forward
        return K.layers.Bidirectional(live["GRU"](units, return_sequences=return_sequences), name=name)
    kind = block["kind"]
    layer_class = live[kind[4:]] if kind.startswith("Live") else getattr(K.layers, kind)
    return layer_class(units, return_sequences=return_sequences, go_backwards=backwards, name=name)


def edge_input(K, spec):
    if spec["stem"] == "float":
        return (spec["steps"], 3), "float32"
    if spec["stem"] == "odd_string_lookup":
        return (spec["steps"],), "string"
    return (() if K.__name__ == "keras" else (1,)), "string"  # a sentence a sample, as in `input_of`


def build_edge(K, spec):
    """The model of an `edge_specs` spec and the keys of its copy's `initial_states` (`rnn_0`, `seq_1/rnn_1`)."""
    _, live, split = edge_classes(K)
    shape, dtype = edge_input(K, spec)
    inputs = K.Input(shape, dtype=dtype, name="in_0")
    x = inputs
    if spec["stem"] != "float":
        if spec["stem"] == "odd_string_lookup":
            lookup = K.layers.StringLookup(name="string_lookup")
            lookup.adapt(strings(np.array(spec["terms"] * 2, dtype=object)))
        else:
            lookup = K.layers.TextVectorization(
                standardize=None, split=split, output_sequence_length=spec["steps"], name="text_vectorization"
            )
            lookup.adapt(strings(np.array([" ".join(spec["terms"])] * 2, dtype=object)))
        terms = [str(term) for term in lookup.get_vocabulary()]
        assert set(spec["terms"]) <= set(terms), (spec["terms"], terms)  # adapted on every odd term
        x = K.layers.Embedding(lookup.vocabulary_size(), 3, name="embedding")(lookup(x))
    if spec["before"]:
        dense_class = live["Dense"] if spec["before"] == "LiveDense" else K.layers.Dense
        x = dense_class(3, name="before")(x)
    keys = []
    blocks = spec["blocks"]
    for i, block in enumerate(blocks):
        layer = edge_recurrent(K, block, return_sequences=i < len(blocks) - 1, name=f"rnn_{i}")
        if block["wrap"]:
            sub_inputs = K.Input(tuple(x.shape[1:]))
            if block["wrap"] == "sequential":
                layer = K.Sequential([sub_inputs, layer], name=f"seq_{i}")
            else:
                layer = K.Model(sub_inputs, layer(sub_inputs), name=f"fun_{i}")
            keys.append(f"{layer.name}/rnn_{i}")
        else:
            keys.append(f"rnn_{i}")
        x = layer(x)
    if spec["head"]:
        dense_class = live["Dense"] if spec["head"] == "LiveDense" else K.layers.Dense
        x = dense_class(2, name="head")(x)
    return K.Model(inputs, x), keys


def edge_data(K, spec, batch=6, seed=0):
    """The inputs of an edge model: floats, or odd terms and an unseen one (out of vocabulary)."""
    rng = np.random.default_rng(seed)
    shape, _ = edge_input(K, spec)
    if spec["stem"] == "float":
        return [rng.normal(size=(batch, *shape)).astype("float32")]
    words = np.array(spec["terms"] + ["zebra"], dtype=object)
    x = words[rng.integers(0, len(words), size=(batch, spec["steps"]))]
    if spec["stem"] == "odd_text_vectorization":
        x = np.array([" ".join(row) for row in x], dtype=object)
        x = x if K.__name__ == "keras" else x[:, None]
    return [strings(x)]


def test_live_configs_and_odd_vocabularies_keep_every_promise(K, request, tmp_path_factory):
    """Models whose layers (recurrent and Dense) hold live objects in their configs, maybe behind a
    vocabulary of odd terms (newlines, the empty term, non-ASCII): every promise of the retrofit, their
    `initial_states` keyed by Keras-name paths, and (Keras 3) every variable path kept. Saved as `.keras`
    (and `.h5` for tf-keras): reloaded as it was where Keras' own saving reloads the original as it was,
    else as the original reloads (see `check_retrofit`)."""
    count = itertools.count(1)
    keras3 = K.__name__ == "keras"

    @property_settings(request)
    @given(spec=edge_specs(edge_stems(K, BACKEND), bidirectional=keras3))
    def check(spec):
        if next(count) % 25 == 0:
            release_compiled_code()
        K.utils.set_random_seed(0)
        model, keys = build_edge(K, spec)
        formats = ["keras"] if keras3 else ["keras", "h5"]
        # Keras' own saving loses odd terms (either format), and tf-keras' `.h5` loader any `Live*` layer
        lossy = formats if spec["stem"] != "float" else ["h5"]
        folder = tmp_path_factory.mktemp("edge")
        check_retrofit(K, model, edge_data(K, spec), folder, {}, formats, keys, lossy_formats=lossy)

    check()

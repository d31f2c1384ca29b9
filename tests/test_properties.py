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

CI runs a fixed seed and a few examples per generation; `pytest --slow` runs 500.
The compiled `predict` path is checked once per example (original against the
retrofitted copy); the other comparisons call the models directly and the copy
trains eagerly, which keeps 500 examples within an hour on 2 cores on TensorFlow
and PyTorch; JAX, which compiles every new model, runs about 7 examples a minute.
"""

from __future__ import annotations

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
from hypothesis import given
from hypothesis import strategies as st

import rnn_state_rewriter as rsr
from rnn_state_rewriter._adapter import adapter_for

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
    xs = data(K, spec)
    original = as_list(model.predict(xs, verbose=0))
    options = context_options(K, model, spec)
    new = rsr.add_trainable_initial_states(model, **options)
    for a, b in zip(as_list(new.predict(xs, verbose=0)), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not {id(v) for v in new.weights} & {id(v) for v in model.weights}

    state_class = adapter_for(new).TrainableInitialState
    state_layers = [layer for layer in new._flatten_layers() if isinstance(layer, state_class)]
    state_variables = [v for layer in state_layers for v in layer.trainable_weights]
    assert state_variables
    for variable, gradient in zip(state_variables, gradients(new, xs, state_variables), strict=True):
        assert gradient is not None and np.abs(gradient).max() > 0, variable.name

    before = snapshot(model)
    new.compile(K.optimizers.SGD(0.1), ["mse"] * len(original), run_eagerly=True)
    new.fit(xs, [np.ones_like(o) for o in original], epochs=1, verbose=0)
    assert_same_weights(before, snapshot(model))

    path = str(tmp_path / f"model.{file_format(K, spec)}")
    new.save(path)
    reloaded = K.models.load_model(path)
    for a, b in zip(outputs(reloaded, xs), outputs(new, xs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

    shifted = rsr.add_trainable_initial_states(model, initializer="random_normal", **options)
    removed = rsr.remove_trainable_initial_states(shifted)
    for a, b in zip(outputs(removed, xs), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # the original's state beyond its weights (statistics, vocabularies) is untouched too
    for a, b in zip(outputs(model, xs), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


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

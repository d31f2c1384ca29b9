"""Property-based: random recurrent models of both generations keep every promise of the retrofit.

For every generated model: predictions unchanged at zero init, no variable shared
with the original, the original bit-identical after one `fit` of the copy, a
gradient reaching every new state, save and reload identical, and
`remove_trainable_initial_states` restoring the original predictions.

CI runs a fixed seed and a few examples per generation; `pytest --slow` runs 500.
The compiled `predict` path is checked once per example (original against the
retrofitted copy); the other comparisons call the models directly and the copy
trains eagerly, which keeps 500 examples within an hour on 2 cores on TensorFlow
and PyTorch; JAX, which compiles every new model, runs about 7 examples a minute.
"""

from __future__ import annotations

import itertools
import os

import keras
import numpy as np
from conftest import assert_same_weights, gradients, release_compiled_code, snapshot, to_numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_state_rewriter as rsr
from rnn_state_rewriter._adapter import adapter_for

KINDS = ["SimpleRNN", "GRU", "LSTM", "Bidirectional", "Stacked"]


@st.composite
def model_specs(draw):
    conv = draw(st.booleans())
    spec = {
        "steps": draw(st.integers(3, 5)),
        "conv": conv,
        "masking": (not conv) and draw(st.booleans()),
        "two_inputs": draw(st.booleans()),
        "blocks": [],
        "return_state": draw(st.booleans()),
        "dense_head": draw(st.booleans()),
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


def build(K, spec):
    """A model from a spec: an optional ConvLSTM1D or masked embedding, blocks, shared layers, submodels."""
    steps = spec["steps"]
    if spec["conv"]:
        shape, dtype = (steps, 5, 2), "float32"
    elif spec["masking"]:
        shape, dtype = (steps,), "int32"
    else:
        shape, dtype = (steps, 3), "float32"
    inputs = [K.Input(shape, dtype=dtype, name=f"in_{i}") for i in range(2 if spec["two_inputs"] else 1)]
    stem = []  # layers shared by every input: so a recurrent layer is used at several call sites
    if spec["conv"]:
        stem += [
            K.layers.ConvLSTM1D(2, 2, return_sequences=True, name="conv"),
            K.layers.TimeDistributed(K.layers.Flatten()),
        ]
    elif spec["masking"]:
        stem.append(K.layers.Embedding(12, 3, mask_zero=True, name="embedding"))
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
    return K.Model(inputs, outputs)


def data(spec, batch=6, seed=0):
    rng = np.random.default_rng(seed)
    count = 2 if spec["two_inputs"] else 1
    if spec["conv"]:
        return [rng.normal(size=(batch, spec["steps"], 5, 2)).astype("float32") for _ in range(count)]
    if spec["masking"]:
        xs = []
        for _ in range(count):
            tokens = rng.integers(1, 12, size=(batch, spec["steps"]))
            tokens[::2, -1] = 0  # padding
            xs.append(tokens)
        return xs
    return [rng.normal(size=(batch, spec["steps"], 3)).astype("float32") for _ in range(count)]


def as_list(outputs):
    return keras.tree.flatten(outputs)


def outputs(model, xs):
    """A model's outputs, from a direct call: the compiled `predict` path is checked once per example."""
    return [to_numpy(o) for o in as_list(model(xs, training=False))]


def check_promises(K, model, spec, tmp_path):
    xs = data(spec)
    original = as_list(model.predict(xs, verbose=0))
    new = rsr.add_trainable_initial_states(model)
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

    path = str(tmp_path / "model.keras")
    new.save(path)
    reloaded = K.models.load_model(path)
    for a, b in zip(outputs(reloaded, xs), outputs(new, xs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)

    shifted = rsr.add_trainable_initial_states(model, initializer="random_normal")
    removed = rsr.remove_trainable_initial_states(shifted)
    for a, b in zip(outputs(removed, xs), original, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_random_models_keep_every_promise(K, request, tmp_path_factory):
    examples = 500 if request.config.getoption("--slow") else int(os.environ.get("RSR_EXAMPLES", "4"))

    count = itertools.count(1)

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(spec=model_specs())
    def check(spec):
        if next(count) % 25 == 0:  # every example compiles anew: clearing each time would double the run
            release_compiled_code()
        K.utils.set_random_seed(0)
        model = build(K, spec)
        check_promises(K, model, spec, tmp_path_factory.mktemp("model"))

    check()

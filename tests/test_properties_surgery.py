"""Property-based: random subclassed models and custom layers holding recurrent layers keep every promise.

The recurrent layers are held the ways user code holds them (an attribute, a
list, a dict), inside a custom layer of a Functional model or a subclassed
model, sometimes behind an adapted `Normalization`, sometimes as a decoder
whose `initial_state` another of them gives. For every generated model:
predictions unchanged at zero init, one learned state per reachable layer that
takes no state from its caller, the original bit-identical after one `fit` of
the copy, the states reached by training, a `.keras` file reloading the copy
with its states, and `remove_trainable_initial_states` restoring the
original predictions.

CI runs a fixed seed and a few examples per generation; `pytest --slow` runs 500.
"""

from __future__ import annotations

import functools

import numpy as np
from conftest import assert_same_weights, property_settings, release_compiled_code, snapshot, to_numpy
from hypothesis import given
from hypothesis import strategies as st

import rnn_state_rewriter as rsr

KINDS = ["SimpleRNN", "GRU", "LSTM", "Bidirectional"]


@st.composite
def specs(draw):
    return {
        "container": draw(st.sampled_from(["custom_layer", "subclassed"])),
        "holder": draw(st.sampled_from(["attribute", "list", "dict"])),
        "kinds": draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3)),
        "units": draw(st.integers(2, 4)),
        "steps": draw(st.integers(3, 5)),
        "normalize": draw(st.booleans()),
        "decoder": draw(st.booleans()),
    }


def _recurrent(K, kind, units, sequences):
    if kind == "Bidirectional":
        return K.layers.Bidirectional(K.layers.LSTM(units, return_sequences=sequences))
    return getattr(K.layers, kind)(units, return_sequences=sequences)


def _body(K, base):
    """The same body as a custom layer and as a subclassed model: recurrent layers held as configured."""

    class Body(base):
        def __init__(self, kinds=("LSTM",), units=3, holder="attribute", normalize=False, decoder=False, **kwargs):
            super().__init__(**kwargs)
            self.kinds, self.units, self.holder = list(kinds), units, holder
            self.normalize_inputs, self.with_decoder = normalize, decoder
            layers = [_recurrent(K, kind, units, True) for kind in kinds]
            if holder == "list":
                self.blocks = layers
            elif holder == "dict":
                self.blocks = {f"block_{i}": layer for i, layer in enumerate(layers)}
            else:
                for i, layer in enumerate(layers):
                    setattr(self, f"block_{i}", layer)
            self.norm = K.layers.Normalization(axis=-1) if normalize else None
            if decoder:
                self.encoder = K.layers.GRU(units, return_state=True)
                self.decoder = K.layers.GRU(units, return_sequences=True)

        def ordered(self):
            if self.holder == "list":
                return list(self.blocks)
            if self.holder == "dict":
                return [self.blocks[f"block_{i}"] for i in range(len(self.kinds))]
            return [getattr(self, f"block_{i}") for i in range(len(self.kinds))]

        def call(self, inputs):
            x = self.norm(inputs) if self.norm is not None else inputs
            for layer in self.ordered():
                x = layer(x)
            if self.with_decoder:
                _, state = self.encoder(x)
                x = self.decoder(x, initial_state=[state])
            return x[:, -1]

        def get_config(self):
            arguments = {
                "kinds": self.kinds,
                "units": self.units,
                "holder": self.holder,
                "normalize": self.normalize_inputs,
                "decoder": self.with_decoder,
            }
            return {**super().get_config(), **arguments}

    return Body


@functools.cache
def classes(K):
    """The registered custom layer and subclassed model of a generation, made once per process."""
    package = f"rsr_properties_surgery_{K.__name__}"
    register = functools.partial(K.saving.register_keras_serializable, package)
    layer = register("BodyLayer")(type("BodyLayer", (_body(K, K.layers.Layer),), {}))
    model = register("BodyModel")(type("BodyModel", (_body(K, K.Model),), {}))
    return layer, model


def build(K, spec, x):
    layer_class, model_class = classes(K)
    options = {k: spec[k] for k in ("kinds", "units", "holder", "normalize", "decoder")}
    if spec["container"] == "subclassed":
        model = model_class(**options, name="body")
        if spec["normalize"]:
            model.norm.adapt(x)
        model(x)
        return model
    body = layer_class(**options, name="body")
    if spec["normalize"]:
        body.norm.adapt(x)
    inputs = K.Input(x.shape[1:])
    model = K.Model(inputs, K.layers.Dense(2, name="head")(body(inputs)))
    model(x)
    return model


def expected_paths(spec):
    prefix = "body/" if spec["container"] == "custom_layer" else ""
    if spec["holder"] == "list":
        paths = [f"blocks/{i}" for i in range(len(spec["kinds"]))]
    elif spec["holder"] == "dict":
        paths = [f"blocks/block_{i}" for i in range(len(spec["kinds"]))]
    else:
        paths = [f"block_{i}" for i in range(len(spec["kinds"]))]
    if spec["decoder"]:
        paths += ["encoder", "decoder"]  # the decoder's wrapper keeps the state its caller passes
    return sorted(prefix + p for p in paths)


def check_promises(K, model, spec, x, folder):
    original = to_numpy(model(x))
    before = snapshot(model)
    new = rsr.add_trainable_initial_states(model)
    np.testing.assert_allclose(to_numpy(new(x)), original, atol=1e-5)
    states = rsr.initial_states(new)
    assert sorted(states) == expected_paths(spec)

    # Eagerly, as in test_properties: compiling each new model's train step would be most of the run;
    # compiled fits of these models are in test_surgery.
    new.compile(K.optimizers.Adam(0.05), "mse", run_eagerly=True)
    new.fit(x, np.full_like(original, 3.0), epochs=1, verbose=0)
    assert_same_weights(before, snapshot(model))
    trained = rsr.initial_states(new)
    for path in states:
        if path.endswith("decoder"):  # its caller always passes its state: no gradient reaches the learned one
            continue
        assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(trained[path], states[path], strict=True)), path

    path = str(folder / "model.keras")
    new.save(path)
    reloaded = K.models.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(new(x)), atol=1e-5)
    for name, values in rsr.initial_states(reloaded).items():
        for a, b in zip(values, trained[name], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)

    shifted = rsr.add_trainable_initial_states(model, initializer="random_normal")
    np.testing.assert_allclose(to_numpy(rsr.remove_trainable_initial_states(shifted)(x)), original, atol=1e-5)
    np.testing.assert_allclose(to_numpy(model(x)), original, atol=1e-5)


def test_random_subclassed_models_and_custom_layers_keep_every_promise(K, request, tmp_path_factory):
    seen = {"count": 0}

    @property_settings(request)
    @given(spec=specs())
    def check(spec):
        seen["count"] += 1
        if seen["count"] % 25 == 0:
            release_compiled_code()
        K.utils.set_random_seed(0)
        x = np.random.default_rng(seen["count"]).normal(size=(4, spec["steps"], 3)).astype("float32")
        if spec["normalize"]:  # statistics far from Normalization's defaults, so that losing them shows
            x = x * 5 + 10
        model = build(K, spec, x)
        check_promises(K, model, spec, x, tmp_path_factory.mktemp("model"))

    check()

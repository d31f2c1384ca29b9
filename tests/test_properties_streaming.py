"""Property-based: any streamable model, cut into any chunks, streams as it runs on the whole sequence.

Each example draws a Functional model of recurrent layers (SimpleRNN, GRU, LSTM, a stateful one where
the batch is fixed) with per-step layers between them (Dense, TimeDistributed, LayerNormalization,
Dropout, an Embedding of token ids in front), retrofitted or not (a learned start far from zero, per
id where the states are conditioned on series ids), and cuts a sequence into drawn chunks: the
streaming model fed `start_states` and then its own states gives every output of the whole run, and
the states it ends with are those of one chunk holding the whole sequence.

CI runs a fixed seed and a few examples per generation; `pytest --slow` runs 500.
"""

from __future__ import annotations

import numpy as np
from conftest import property_settings, release_compiled_code, to_numpy
from hypothesis import given, strategies as st

import rnn_state_rewriter as rsr

BATCH, FEATURES, IDS, VOCABULARY = 2, 3, 4, 9
PER_STEP = ["dense", "time_distributed", "norm", "dropout"]


@st.composite
def specs(draw):
    steps = draw(st.integers(1, 9))
    cuts = sorted(draw(st.sets(st.integers(1, steps - 1), max_size=4))) if steps > 1 else []
    blocks = draw(
        st.lists(
            st.tuples(st.sampled_from(["SimpleRNN", "GRU", "LSTM"]), st.integers(1, 4), st.sampled_from(PER_STEP)),
            min_size=1,
            max_size=3,
        )
    )
    return {
        "steps": steps,
        "cuts": cuts,
        "blocks": blocks,
        "tokens": draw(st.booleans()),
        "last_sequences": draw(st.booleans()),
        "retrofit": draw(st.sampled_from(["none", "learned", "ids"])),
        "stateful": draw(st.booleans()),
    }


def build(K, spec):
    batch = BATCH if spec["stateful"] else None
    if spec["tokens"]:
        inputs = K.Input(batch_shape=(batch, None), dtype="int32", name="tokens")
        x = K.layers.Embedding(VOCABULARY, FEATURES, name="embedding")(inputs)
    else:
        inputs = K.Input(batch_shape=(batch, None, FEATURES), name="x")
        x = inputs
    series_id = K.Input(batch_shape=(batch,), dtype="int32", name="series_id")
    for index, (kind, units, between) in enumerate(spec["blocks"]):
        last = index == len(spec["blocks"]) - 1
        sequences = spec["last_sequences"] or not last
        layer = getattr(K.layers, kind)(units, return_sequences=sequences, stateful=spec["stateful"], name=f"r{index}")
        x = layer(x)
        if not sequences:
            break
        if between == "dense":
            x = K.layers.Dense(units + 1, activation="tanh", name=f"dense{index}")(x)
        elif between == "time_distributed":
            x = K.layers.TimeDistributed(K.layers.Dense(units + 1), name=f"td{index}")(x)
        elif between == "norm":
            x = K.layers.LayerNormalization(name=f"norm{index}")(x)
        else:
            x = K.layers.Dropout(0.3, name=f"dropout{index}")(x)
    model = K.Model([inputs, series_id], K.layers.Dense(2, name="head")(x))
    if spec["retrofit"] == "none":
        return model
    options = {"context": "series_id", "num_ids": IDS} if spec["retrofit"] == "ids" else {}
    new = rsr.add_trainable_initial_states(model, initializer="random_normal", **options)
    rng = np.random.default_rng(1)
    for layer in new.layers:  # one state per id, each its own (they start at zero)
        for variable in getattr(layer, "context_maps", []):
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
    return new


def data(spec, seed=0):
    rng = np.random.default_rng(seed)
    if spec["tokens"]:
        sequence = rng.integers(0, VOCABULARY, size=(BATCH, spec["steps"])).astype("int32")
    else:
        sequence = rng.normal(size=(BATCH, spec["steps"], FEATURES)).astype("float32")
    return sequence, (np.arange(BATCH) % IDS).astype("int32")


def stream(model, spec, sequence, ids):
    """The outputs of each chunk and the states after the last, through the streaming model."""
    streaming = rsr.streaming_model(model)
    context = ids if spec["retrofit"] == "ids" else None
    states = rsr.start_states(model, batch_size=BATCH, context=context)
    count = len(streaming.outputs) - len(states)
    outputs = []
    bounds = [0, *spec["cuts"], spec["steps"]]
    for start, end in zip(bounds, bounds[1:], strict=False):
        results = [to_numpy(r) for r in streaming([sequence[:, start:end], ids, *states], training=False)]
        outputs.append(results[:count])
        states = results[count:]
    return outputs, states


def test_any_streamable_model_streams_as_it_runs_whole(K, request):
    count = iter(range(1, 10**9))

    @property_settings(request)
    @given(spec=specs())
    def check(spec):
        if next(count) % 25 == 0:
            release_compiled_code()
        K.utils.set_random_seed(0)
        model = build(K, spec)
        sequence, ids = data(spec)
        if spec["stateful"]:
            rsr.reset_states(model)
        whole = to_numpy(model([sequence, ids], training=False))
        outputs, states = stream(model, spec, sequence, ids)
        if spec["last_sequences"]:
            np.testing.assert_allclose(np.concatenate([o[0] for o in outputs], axis=1), whole, atol=1e-5)
        else:
            np.testing.assert_allclose(outputs[-1][0], whole, atol=1e-5)
        _, once = stream(model, {**spec, "cuts": []}, sequence, ids)
        for a, b in zip(states, once, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)

    check()

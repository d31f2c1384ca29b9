"""The models of the compatibility fixtures (`tests/data/compat/`): what each file holds and how it was made.

`tests/make_compat_files.py` builds each case, retrofits it, trains one step
(so that every learned state and context map is away from zero) and saves it
with the package as it was when the fixtures were written; `tests/
test_compat_files.py` loads them with the package as it is and compares. The
custom classes are registered under `rsr_compat`, as a user's would be, once
per generation.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import numpy as np

BATCH = 4
IDS = 5


@functools.cache
def custom_classes(K: types.ModuleType) -> dict[str, type]:
    """A custom layer holding an LSTM and a subclassed model holding a GRU and that layer (surgery's cases)."""
    register = K.saving.register_keras_serializable("rsr_compat")

    @register
    class Block(K.layers.Layer):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.lstm = K.layers.LSTM(units, name="lstm")

        def call(self, x):
            return self.lstm(x)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    @register
    class Net(K.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gru = K.layers.GRU(3, return_sequences=True, name="gru")
            self.block = Block(2, name="block")
            self.head = K.layers.Dense(1, name="head")

        def call(self, x):
            return self.head(self.block(self.gru(x)))

    return {"Block": Block, "Net": Net}


def _series(rng: np.random.Generator, steps: int = 6, features: int = 2) -> np.ndarray:
    return rng.normal(size=(BATCH, steps, features)).astype("float32")


def graph(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    """Ids through a masking Embedding, LSTM then GRU, a Dense head (Functional)."""
    ids = K.Input((6,), dtype="int32", name="ids")
    x = K.layers.Embedding(9, 3, mask_zero=True, name="embedding")(ids)
    x = K.layers.LSTM(3, return_sequences=True, name="lstm")(x)
    x = K.layers.GRU(2, name="gru")(x)
    model = K.Model(ids, K.layers.Dense(1, name="head")(x))
    data = rng.integers(1, 9, size=(BATCH, 6)).astype("int32")
    data[:, 4:] = 0  # padded at the end
    return model, [data], {}


def sequential_bidirectional(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    model = K.Sequential(
        [K.Input((6, 2)), K.layers.Bidirectional(K.layers.GRU(2), name="bi"), K.layers.Dense(1, name="head")]
    )
    return model, [_series(rng)], {}


def wrapper_layer(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any] | None]:
    """A model made with the public wrapper `TrainableInitialStateRNN` (no retrofit: options None)."""
    import rnn_state_rewriter as rsr

    inputs = K.Input((6, 2))
    layer = rsr.TrainableInitialStateRNN(K.layers.LSTM(3, name="lstm"), initializer="random_normal", name="wrapped")
    x = layer(inputs)
    return K.Model(inputs, K.layers.Dense(1, name="head")(x)), [_series(rng)], None


def time_distributed(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    clips = K.Input((3, 4, 2))
    x = K.layers.TimeDistributed(K.layers.GRU(2, name="gru"), name="per_frame")(clips)
    model = K.Model(clips, K.layers.Dense(1, name="head")(K.layers.LSTM(3, name="lstm")(x)))
    return model, [rng.normal(size=(BATCH, 3, 4, 2)).astype("float32")], {}


def custom_layer(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    """A Functional model around a registered custom layer holding an LSTM (surgery)."""
    inputs = K.Input((6, 2))
    x = K.layers.SimpleRNN(2, return_sequences=True, name="rnn")(inputs)
    x = custom_classes(K)["Block"](3, name="block")(x)
    return K.Model(inputs, K.layers.Dense(1, name="head")(x)), [_series(rng)], {}


def subclassed(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    """A registered subclassed model holding a GRU and a custom layer holding an LSTM (surgery)."""
    model = custom_classes(K)["Net"](name="net")
    data = _series(rng)
    model(data)
    return model, [data], {}


def stateful(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    inputs = K.Input(batch_shape=(BATCH, 6, 2))
    x = K.layers.GRU(3, stateful=True, name="gru")(inputs)
    return K.Model(inputs, K.layers.Dense(1, name="head")(x)), [_series(rng)], {}


def _context_model(K: types.ModuleType) -> Any:
    series = K.Input((6, 2), name="series")
    series_id = K.Input((), dtype="int32", name="series_id")
    features = K.Input((3,), name="features")
    x = K.layers.LSTM(3, name="lstm")(series)
    summary = K.layers.Dense(2, name="summary")(features)
    return K.Model([series, series_id, features], K.layers.Dense(1, name="head")(K.layers.Concatenate()([x, summary])))


def _context_data(rng: np.random.Generator) -> list[Any]:
    return [_series(rng), (np.arange(BATCH) % IDS).astype("int32"), rng.normal(size=(BATCH, 3)).astype("float32")]


def context_ids(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    return _context_model(K), _context_data(rng), {"context": "series_id", "num_ids": IDS}


def context_float(K: types.ModuleType, rng: np.random.Generator) -> tuple[Any, list[Any], dict[str, Any]]:
    return _context_model(K), _context_data(rng), {"context": "features"}


Case = Callable[[types.ModuleType, np.random.Generator], tuple[Any, list[Any], "dict[str, Any] | None"]]
CASES: dict[str, Case] = {
    "graph": graph,
    "sequential_bidirectional": sequential_bidirectional,
    "wrapper_layer": wrapper_layer,
    "time_distributed": time_distributed,
    "custom_layer": custom_layer,
    "subclassed": subclassed,
    "stateful": stateful,
    "context_ids": context_ids,
    "context_float": context_float,
}


def extensions(generation: str, case: str) -> list[str]:
    """The formats a case is saved in: `.keras`, and tf-keras' `.h5` where it can hold the model."""
    if generation == "tf_keras" and case != "subclassed":
        return ["keras", "h5"]
    return ["keras"]

"""Shared fixtures: the Keras generation every behaviour is checked under."""

from __future__ import annotations

import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the tests' own environment, not the package's

import numpy as np
import pytest

GENERATIONS = ["keras3", "tf_keras"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="property tests with 500 examples per generation")


@pytest.fixture(params=GENERATIONS, scope="session")
def K(request: pytest.FixtureRequest) -> types.ModuleType:
    """The Keras package of one generation: `keras` (Keras 3) or `tf_keras`."""
    if request.param == "keras3":
        import keras as api
    else:
        api = pytest.importorskip("tf_keras")
    return api


@pytest.fixture
def is_keras3(K: types.ModuleType) -> bool:
    return K.__name__ == "keras"


@pytest.fixture(autouse=True)
def _seed_and_policy(request: pytest.FixtureRequest) -> None:
    """Deterministic seeds for every test; the global dtype policy restored after it."""
    np.random.seed(0)
    yield
    for name in ("keras", "tf_keras"):
        module = __import__("sys").modules.get(name)
        if module is not None:
            module.mixed_precision.set_global_policy("float32")


def seed(K: types.ModuleType, value: int = 0) -> None:
    K.utils.set_random_seed(value)


def variable_ids(model) -> set[int]:
    """Identities of the underlying storage of every variable of a model."""
    ids = set()
    for variable in model.weights:
        inner = getattr(variable, "value", variable)
        ids.add(id(getattr(inner, "handle", inner)))
        ids.add(id(variable))
    return ids


def snapshot(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def assert_same_weights(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def subclassed_model(K):
    """A built subclassed model holding an LSTM: what the rewrite must refuse."""

    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.rnn = K.layers.LSTM(3)

        def call(self, x):
            return self.rnn(x)

    net = Net()
    net(np.zeros((1, 4, 3), "float32"))
    return net


def uncloneable_layer(K):
    """A layer with a weight and a `get_config` that refuses: it cannot be cloned."""

    class Scale(K.layers.Layer):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

        def call(self, x):
            return x * self.scale * self.factor

        def get_config(self):
            raise NotImplementedError("Scale is not serializable")

    return Scale(2.0)

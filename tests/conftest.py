"""Shared fixtures: the Keras generation and backend every behaviour is checked under.

The tests run on the Keras 3 backend `KERAS_BACKEND` names (TensorFlow when
unset and installed; else the first of torch and jax installed). Which tests run
where is decided here, in one place:

- `K` gives `keras` (Keras 3) on every backend, and `tf_keras` only on the
  TensorFlow backend (tf-keras runs on TensorFlow whatever Keras 3's backend is,
  so checking it once is enough).
- Tests marked `tensorflow`, the modules in `TENSORFLOW_ONLY_MODULES` and the
  doctests of the modules in `TENSORFLOW_ONLY_DOCTESTS` use TensorFlow-only
  features (SavedModel and TFLite export, `tf.distribute`): they are skipped on
  other backends, and those modules are not even collected without TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the tests' own environment, not the package's


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


TENSORFLOW_INSTALLED = _installed("tensorflow")
if "KERAS_BACKEND" not in os.environ and not TENSORFLOW_INSTALLED:  # Keras 3 would try TensorFlow and fail
    os.environ["KERAS_BACKEND"] = next((b for b in ("torch", "jax") if _installed(b)), "numpy")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.config.backend()
GENERATIONS = ["keras3", "tf_keras"]
TENSORFLOW_ONLY_MODULES = ["test_export.py"]  # they import TensorFlow at the top
TENSORFLOW_ONLY_DOCTESTS = ["rnn_state_rewriter.export"]  # TFLite: TensorFlow-only

if not TENSORFLOW_INSTALLED:
    collect_ignore = TENSORFLOW_ONLY_MODULES


BACKENDS = ["tensorflow", "jax", "torch"]


def seam_modules() -> list[str]:
    """The seam's modules, as paths in the package without `.py`: every module of `backend/`, read from
    the folder, so that a test of the seam cannot forget a new one there."""
    backend = Path(__file__).resolve().parent.parent / "rnn_state_rewriter" / "backend"
    return ["backend/__init__", *(f"backend/{path.stem}" for path in sorted(backend.glob("[!_]*.py")))]


def python_for(backend: str) -> str | None:
    """The Python interpreter that runs a Keras backend in a subprocess, or None.

    This one if the backend is installed here, else the interpreter named by
    `RSR_PYTHON_<BACKEND>` (`.ci/run` names its TensorFlow-free PyTorch venv:
    TensorFlow and PyTorch abort when imported into one process).
    """
    named = os.environ.get(f"RSR_PYTHON_{backend.upper()}")
    if named:
        return named
    return sys.executable if _installed(backend) else None


def run_on_backend(backend: str, code: str, *args: str, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs Python `code` with `KERAS_BACKEND=backend` in its own process; skips if the backend is not at hand."""
    python = python_for(backend)
    if python is None:
        pytest.skip(f"backend {backend} is not installed here and RSR_PYTHON_{backend.upper()} is not set")
    return subprocess.run(
        [python, "-c", code, *args], cwd=cwd, env=backend_env(backend), capture_output=True, text=True, timeout=timeout
    )


def backend_env(backend: str) -> dict[str, str]:
    """This process's environment with `KERAS_BACKEND=backend` and this checkout importable."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="property tests with 500 examples per generation")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tensorflow: needs the TensorFlow backend (a TensorFlow-only feature)")


def pytest_report_header(config: pytest.Config) -> str:
    skipped = "" if TENSORFLOW_INSTALLED else f"; TensorFlow not installed, not collected: {TENSORFLOW_ONLY_MODULES}"
    return f"Keras {keras.__version__}, backend: {BACKEND}{skipped}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only feature; this run's Keras backend is {BACKEND}")
    for item in items:
        doctest_of = item.name.rsplit(".", 1)[0]  # a doctest item is named `module.function`
        if (
            item.get_closest_marker("tensorflow")
            or item.path.name in TENSORFLOW_ONLY_MODULES
            or doctest_of in TENSORFLOW_ONLY_DOCTESTS
        ):
            item.add_marker(skip)


@pytest.fixture(params=GENERATIONS, scope="session")
def K(request: pytest.FixtureRequest) -> types.ModuleType:
    """The Keras package of one generation: `keras` (Keras 3) or `tf_keras` (TensorFlow backend only)."""
    if request.param == "keras3":
        return keras
    if BACKEND != "tensorflow":
        pytest.skip(f"tf-keras is checked in the TensorFlow-backend run (this run: {BACKEND})")
    return pytest.importorskip("tf_keras")


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


def property_settings(request: pytest.FixtureRequest) -> Any:
    """Hypothesis settings of the property tests: 500 examples with `--slow`, else `RSR_EXAMPLES` (4),
    derandomized (CI runs a fixed sample), no deadline, no example database.

    `RSR_SEED=N` draws from seed N instead of the fixed sequence, so that a long run can be split
    into shards of other examples (on several machines or days): `RSR_SEED=1 RSR_EXAMPLES=100`.
    """
    from hypothesis import HealthCheck, seed, settings

    examples = 500 if request.config.getoption("--slow") else int(os.environ.get("RSR_EXAMPLES", "4"))
    shard = os.environ.get("RSR_SEED")
    chosen = settings(
        max_examples=examples,
        deadline=None,
        derandomize=shard is None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    if shard is None:
        return chosen
    return lambda test: seed(int(shard))(chosen(test))


def release_compiled_code() -> None:
    """Frees what earlier models compiled, for tests that build hundreds of them in one process.

    On JAX every compiled function keeps its machine code in memory mappings of
    its own until its cache entry goes. A property example adds 700 to 1,000,
    so under 100 examples exceed Linux's limit of 65,530 mappings a process
    (`vm.max_map_count`), where XLA aborts the process while compiling.
    """
    import gc

    gc.collect()
    if BACKEND == "jax":
        import jax

        jax.clear_caches()


def snapshot(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def to_numpy(value) -> np.ndarray:
    """A tensor of any backend (a torch tensor that requires grad too) as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.asarray(value)


def as_tensor(K: types.ModuleType, value):
    """A numpy array as a tensor of the generation's backend."""
    if K.__name__ == "keras":
        return K.ops.convert_to_tensor(value)
    import tensorflow as tf

    return tf.constant(value)


def gradients(model, inputs, variables) -> list:
    """The gradients of the mean square of every output of `model(inputs)` with respect to `variables`.

    Computed the way each backend's trainer computes them (a tape on TensorFlow,
    `jax.grad` of a stateless call on JAX, `backward()` on PyTorch). A variable
    whose gradient was cut (or never reached) gives None.
    """
    if model.__module__.startswith("tf_keras") or BACKEND == "tensorflow" or not hasattr(model, "stateless_call"):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outputs = tf.nest.flatten(model(inputs, training=False))
            loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(o, "float32"))) for o in outputs])
        grads = tape.gradient(loss, variables)  # a row lookup's gradient is IndexedSlices: made dense
        return [None if g is None else to_numpy(tf.convert_to_tensor(g)) for g in grads]

    def mean_square(outputs):
        return sum(keras.ops.mean(keras.ops.square(keras.ops.cast(o, "float32"))) for o in keras.tree.flatten(outputs))

    if BACKEND == "jax":
        import jax

        trainable = model.trainable_variables
        positions = [next(i for i, v in enumerate(trainable) if v is variable) for variable in variables]

        def loss(values):
            outputs, _ = model.stateless_call(
                values, [v.value for v in model.non_trainable_variables], inputs, training=False
            )
            return mean_square(outputs)

        grads = jax.grad(loss)([v.value for v in trainable])
        return [to_numpy(grads[i]) for i in positions]
    for variable in model.trainable_variables:
        variable.value.grad = None
    mean_square(model(inputs, training=False)).backward()
    return [None if v.value.grad is None else to_numpy(v.value.grad) for v in variables]


def assert_same_weights(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def subclassed_model(K):
    """A built subclassed model holding an LSTM, which cannot be rebuilt from its config: it cannot be copied."""

    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.rnn = K.layers.LSTM(3, name="rnn")

        def call(self, x):
            return self.rnn(x)

        def get_config(self):
            raise NotImplementedError("Net is not serializable")

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

"""Import order does not matter: after `import rnn_state_rewriter`, before or after Keras, saved models load.

Each order runs in a fresh process, which imports the modules in that order and
then loads, with Keras' own loaders and no `custom_objects`, files holding
`TrainableInitialState` layers (Keras 3 and tf-keras, `.keras` and `.h5`) and a
custom layer retrofitted by surgery.
"""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest
from conftest import BACKEND, run_on_backend

HAS_TF_KERAS = BACKEND == "tensorflow" and importlib.util.find_spec("tf_keras") is not None

BLOCK = """
import keras


@keras.saving.register_keras_serializable("rsr_import_order")
class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm = keras.layers.LSTM(3)

    def call(self, inputs):
        return self.lstm(inputs)
"""

READ = textwrap.dedent(
    """
    import importlib, sys
    for name in sys.argv[1].split(","):
        importlib.import_module(name)
    import numpy as np
    import rnn_state_rewriter as rsr
    x = np.ones((2, 5, 2), "float32")
    for path in sys.argv[2:]:
        if path.endswith("block.keras"):
            import block  # the user's registered class, imported by the user's script
        if "tf_keras" in path:
            api = importlib.import_module("tf_keras")
        elif "tensorflow" in sys.argv[1]:
            api = sys.modules["tensorflow"].keras  # Keras 3, imported on this first use
        else:
            api = importlib.import_module("keras")
        model = api.models.load_model(path)
        states = rsr.initial_states(model)
        print(path.rsplit("/", 1)[-1], sorted(states), float(model.predict(x, verbose=0).sum()))
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Retrofitted files (learned states all ones) and what each predicts, keyed by file name."""
    import keras

    import rnn_state_rewriter as rsr

    folder = tmp_path_factory.mktemp("import_order")
    (folder / "block.py").write_text(BLOCK)
    x = np.ones((2, 5, 2), "float32")
    made = {}

    def save(model, name):
        new = rsr.add_trainable_initial_states(model, initializer="ones")
        new.save(str(folder / name))
        made[name] = (sorted(rsr.initial_states(new)), float(new.predict(x, verbose=0).sum()))

    save(keras.Sequential([keras.Input((5, 2)), keras.layers.LSTM(3, name="lstm")]), "keras3.keras")
    code = BLOCK + textwrap.dedent(
        """
        import sys
        import rnn_state_rewriter as rsr
        inputs = keras.Input((5, 2))
        model = keras.Model(inputs, Block(name="block")(inputs))
        rsr.add_trainable_initial_states(model, initializer="ones").save(sys.argv[1])
        """
    )
    result = run_on_backend(BACKEND, code, str(folder / "block.keras"))
    assert result.returncode == 0, result.stderr[-2000:]
    if HAS_TF_KERAS:
        import tf_keras

        model = tf_keras.Sequential([tf_keras.Input((5, 2)), tf_keras.layers.GRU(3, name="gru")])
        save(model, "tf_keras.keras")
        save(model, "tf_keras.h5")
    return folder, made


ORDERS = [
    ("rnn_state_rewriter", "keras"),
    ("keras", "rnn_state_rewriter"),
    ("rnn_state_rewriter", "tf_keras", "keras"),
    ("rnn_state_rewriter", "keras", "tf_keras"),
    ("tf_keras", "rnn_state_rewriter"),
    ("rnn_state_rewriter", "tensorflow"),  # then `tf.keras` is Keras 3, imported when first used
]


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(order) for order in ORDERS])
def test_saved_models_load_whatever_the_import_order(order, files):
    folder, made = files
    if ("tf_keras" in order or "tensorflow" in order) and not HAS_TF_KERAS:
        pytest.skip("needs TensorFlow and tf-keras")
    names = ["keras3.keras", "block.keras"] + (["tf_keras.keras", "tf_keras.h5"] if "tf_keras" in order else [])
    result = run_on_backend(BACKEND, READ, ",".join(order), *(str(folder / n) for n in names), cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()[-len(names) :]
    assert [line.split()[0] for line in lines] == names
    for line in lines:
        name, *rest = line.split(" ", 1)
        if name in made:
            states, total = made[name]
            assert rest[0].startswith(repr(states)), line
            assert abs(float(line.rsplit(" ", 1)[-1]) - total) < 1e-4, line
        else:
            assert rest[0].startswith("['block/lstm']"), line


def test_the_hook_registers_after_the_import_warns_if_it_cannot_and_then_leaves():
    """A registration that fails does not break the user's import; the finder goes once its modules are in."""
    code = textwrap.dedent(
        """
        import sys, warnings
        from rnn_state_rewriter import _registration
        assert "colorsys" not in sys.modules
        _registration.GENERATIONS = {"colorsys": "no generation"}  # binding it fails
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _registration._AfterImport)]
        finders = len(sys.meta_path)
        _registration.install()
        assert len(sys.meta_path) == finders + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import colorsys
        assert colorsys.rgb_to_hsv(1, 0, 0) == (0.0, 1.0, 1.0)
        assert colorsys.__loader__.__class__.__name__ != "_ThenRegister"
        assert not any(isinstance(f, _registration._AfterImport) for f in sys.meta_path), "the finder stays"
        print([str(w.message).split(" (")[0] for w in caught])
        """
    )
    result = run_on_backend(BACKEND, code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "['rnn_state_rewriter could not register its layers with Keras']"

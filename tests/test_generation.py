"""Which Keras an object belongs to, and what importing the package does."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rnn_state_rewriter.generation import Generation, generation_of


def test_generation_of_layers_of_each_generation(K):
    expected = Generation.KERAS3 if K.__name__ == "keras" else Generation.TF_KERAS
    assert generation_of(K.layers.LSTM(2)) is expected
    assert generation_of(K.Sequential) is expected


@pytest.mark.parametrize("obj", [object(), 3, "lstm", None])
def test_generation_of_non_keras_object_is_a_type_error(obj):
    with pytest.raises(TypeError, match="Keras layer or model"):
        generation_of(obj)


def test_import_has_no_side_effects():
    code = textwrap.dedent(
        """
        import logging, os, sys
        env = dict(os.environ)
        handlers = list(logging.getLogger().handlers)
        import rnn_state_rewriter
        assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
        assert logging.getLogger().handlers == handlers
        assert "tf_keras" not in sys.modules, "tf_keras imported without a tf-keras object"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_the_keras3_path_imports_no_tensorflow_on_jax():
    """With TensorFlow installed, importing and using the package on JAX does not import it."""
    pytest.importorskip("jax")
    code = textwrap.dedent(
        """
        import sys
        import keras
        import rnn_state_rewriter as rsr
        lstm = keras.layers.LSTM(2)
        lstm.build((None, 3, 1))
        states = rsr.TrainableInitialState.for_layer(lstm, initializer="random_normal")
        states(keras.ops.zeros((2, 3, 1)))
        assert "tensorflow" not in sys.modules, "rnn_state_rewriter imported TensorFlow"
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


PACKAGE = Path(__file__).resolve().parent.parent / "rnn_state_rewriter"
# Below the adapters: what the layers are made of. None of them may reach up.
LOWER = ["generation", "_ops", "states", "layers"]
UPPER = {"_adapter", "_keras3", "_tf_keras", "rewrite", "cli", "demo", "__init__", "__main__"}


def _imports(module: str) -> set[str]:
    """The package modules a module imports, at the top or inside functions, by name or by string."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        found |= {name.split(".")[1] for name in names if name.startswith("rnn_state_rewriter.")}
    return found - {module}


@pytest.mark.parametrize("module", LOWER)
def test_modules_below_the_adapters_never_import_them(module):
    """The layers and their helpers sit below the adapters: no import circle through them, even at run time."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        for imported in _imports(current) - seen:
            seen.add(imported)
            todo.append(imported)
    assert not seen & UPPER, f"{module} reaches {sorted(seen & UPPER)}"
    assert module not in seen, f"{module} imports itself through {sorted(seen)}"

"""Which Keras an object belongs to, and what importing the package does."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import seam_modules

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
# The seam: the Adapter protocol, its two implementations and what they share (every module of
# backend/), and which generation an object belongs to.
SEAM = {*seam_modules(), "generation"}
OUTSIDE = sorted(
    module
    for module in (path.relative_to(PACKAGE).with_suffix("").as_posix() for path in PACKAGE.rglob("*.py"))
    if module not in SEAM
)


def _reaches_into_keras(module: str) -> list[str]:
    """Lines of a module that read a private attribute of another object than its own (`self`, `cls`),
    import Keras' private modules (`keras.src`, `tf_keras.src`), or branch on the generation."""
    found = []
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        text = ""
        if isinstance(node, ast.Attribute):
            owner = ast.unparse(node.value)
            private = node.attr.startswith("_") and not node.attr.startswith(("__", "_rsr_"))
            if private and owner not in ("self", "cls", "os") or node.attr in ("KERAS3", "TF_KERAS"):
                text = ast.unparse(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            text = ", ".join(name for name in names if name.startswith(("keras.src", "tf_keras.src")))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr", "setattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and str(name.value).startswith("_"):
                text = "" if str(name.value).startswith(("__", "_rsr_")) else ast.unparse(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value if node.value in ("keras3", "tf_keras") else ""
        if text:
            found.append(f"{module}.py:{node.lineno}: {text}")
    return found


@pytest.mark.parametrize("module", OUTSIDE)
def test_only_the_seam_reads_keras_internals_or_branches_on_the_generation(module):
    """Dropping tf-keras one day touches `backend/tf_keras*.py`, `layers/tf_keras.py` and a test fixture, and
    the line of `layers/base.py` that names that module, nothing else."""
    allowed = {
        # The public classes declare their generation: Keras 3's, and their tf-keras twins.
        "layers/initial_state": {"Generation.KERAS3"},
        "layers/wrapper": {"Generation.KERAS3"},
        "layers/tf_keras": {"Generation.TF_KERAS"},
        # Where each generation's layer classes are defined.
        "layers/base": {"Generation.KERAS3", "Generation.TF_KERAS"},
        # `--keras auto` reads a Keras 2 file with Keras 3 where tf-keras is not installed.
        "cli/files": {"tf_keras"},
    }
    found = {line.split(": ", 1)[1] for line in _reaches_into_keras(module)}
    assert found <= allowed.get(module, set()), _reaches_into_keras(module)


def test_the_seam_check_sees_what_it_looks_for(tmp_path, monkeypatch):
    """The check above finds each kind of reach it forbids (it cannot pass by finding nothing)."""
    source = (
        "import tf_keras.src.engine\n"
        "def f(tensor, generation):\n"
        "    layer = tensor._keras_history[0]\n"
        "    mask = getattr(tensor, '_keras_mask', None)\n"
        "    return generation is Generation.TF_KERAS\n"
    )
    (tmp_path / "probe.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    found = _reaches_into_keras("probe")
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "Generation.TF_KERAS",
        "getattr(tensor, '_keras_mask', None)",
        "tensor._keras_history",
        "tf_keras.src.engine",
    ], found


def test_the_public_layers_accept_their_tf_keras_twins(K):
    """`isinstance(w, TrainableInitialStateRNN)` holds for the wrapper of either generation."""
    import rnn_state_rewriter as rsr

    lstm = K.layers.LSTM(3)
    wrapper = rsr.TrainableInitialStateRNN(lstm)
    assert type(wrapper).__module__ == "rnn_state_rewriter.layers"
    assert isinstance(wrapper, rsr.TrainableInitialStateRNN)
    assert isinstance(wrapper, K.layers.Wrapper)
    assert not isinstance(wrapper, rsr.TrainableInitialState)
    lstm.build((None, 4, 2))
    states = rsr.TrainableInitialState.for_layer(lstm)
    assert isinstance(states, rsr.TrainableInitialState) and isinstance(states, K.layers.Layer)
    assert issubclass(type(states), rsr.TrainableInitialState)
    assert not isinstance(lstm, rsr.TrainableInitialStateRNN)

"""Which Keras an object belongs to, and what importing the package does."""

import subprocess
import sys
import textwrap

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

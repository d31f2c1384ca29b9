"""Files saved by an earlier version load and predict the same: retrofitted models of both generations.

The fixtures in `tests/data/compat/` were written by `tests/make_compat_files.py`
with the version their `.npz` names (graph and Sequential retrofits, the public
wrapper, `TimeDistributed`, surgery in a custom layer and a subclassed model,
a stateful layer, states per id and from a float context). Keras 3's files are
loaded on every backend, tf-keras' `.keras` and `.h5` on TensorFlow. A
reloaded model starts from its learned states: a stateful one too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from compat_models import CASES, custom_classes, extensions
from conftest import to_numpy

import rnn_state_rewriter as rsr

FOLDER = Path(__file__).resolve().parent / "data" / "compat"


def _generation(K) -> str:
    return "keras3" if K.__name__ == "keras" else "tf_keras"


def _fixtures(K) -> list[tuple[str, str]]:
    return [(case, ext) for case in CASES for ext in extensions(_generation(K), case)]


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_of_an_earlier_version_loads_with_its_outputs_and_states(K, case):
    custom_classes(K)  # registered as the user's code would have them
    saved = np.load(FOLDER / f"{_generation(K)}-{case}.npz")
    keys = sorted(saved.files)
    inputs = [saved[key] for key in keys if key.startswith("x")]
    outputs = [saved[key] for key in keys if key.startswith("y")]
    states: dict[str, list[np.ndarray]] = {}
    for key in (key for key in keys if key.startswith("state:")):
        _, name, index = key.split(":")
        states.setdefault(name, []).insert(int(index), saved[key])
    for ext in extensions(_generation(K), case):
        model = K.models.load_model(FOLDER / f"{_generation(K)}-{case}.{ext}")
        learned = rsr.initial_states(model)
        assert sorted(learned) == sorted(states), ext
        for name, values in states.items():
            for a, b in zip(learned[name], values, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"{ext}: {name}")
        got = model(inputs if len(inputs) > 1 else inputs[0])
        got = got if isinstance(got, (list, tuple)) else [got]
        for a, b in zip(got, outputs, strict=True):
            np.testing.assert_allclose(to_numpy(a), b, atol=1e-5, err_msg=ext)
        assert rsr.initial_states(rsr.remove_trainable_initial_states(model)) == {}, ext

"""Writes the compatibility fixtures in `tests/data/compat/`: retrofitted models saved by this version.

Run once per release whose files must keep loading (TensorFlow backend, both
generations), then commit the files with the version that wrote them:

    KERAS_BACKEND=tensorflow python tests/make_compat_files.py

For each case of `compat_models.CASES` and each format it can be saved in:
`<generation>-<case>.<ext>`, and one `<generation>-<case>.npz` with the inputs,
the outputs of the saved model, its learned states (`initial_states`) and the
package version. `tests/test_compat_files.py` loads them and compares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "compat"


def _as_list(value):
    return [np.asarray(v) for v in value] if isinstance(value, (list, tuple)) else [np.asarray(value)]


def write(K, generation: str) -> None:
    from compat_models import CASES, extensions

    import rnn_state_rewriter as rsr

    for index, (case, build) in enumerate(CASES.items()):
        K.utils.set_random_seed(index)
        rng = np.random.default_rng(index)
        model, data, options = build(K, rng)
        new = model if options is None else rsr.add_trainable_initial_states(model, **options)
        x = data if len(data) > 1 else data[0]
        outputs = _as_list(new(x))
        new.compile(K.optimizers.SGD(0.5), "mse")
        new.train_on_batch(x, np.ones_like(outputs[0]))  # every model here has one output
        rsr.reset_states(new)
        for ext in extensions(generation, case):
            new.save(OUT / f"{generation}-{case}.{ext}")
        rsr.reset_states(new)
        expected = _as_list(new(x))
        states = rsr.initial_states(new)
        arrays = {f"x{i}": value for i, value in enumerate(data)}
        arrays |= {f"y{i}": value for i, value in enumerate(expected)}
        arrays |= {f"state:{key}:{i}": value for key, values in states.items() for i, value in enumerate(values)}
        np.savez(OUT / f"{generation}-{case}.npz", version=rsr.__version__, **arrays)
        print(generation, case, sorted(states), flush=True)


def main() -> None:
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        sys.exit("Run with KERAS_BACKEND=tensorflow: the fixtures of both generations are written there.")
    sys.path.insert(0, str(HERE))
    OUT.mkdir(parents=True, exist_ok=True)
    import keras
    import tf_keras

    write(keras, "keras3")
    write(tf_keras, "tf_keras")


if __name__ == "__main__":
    main()

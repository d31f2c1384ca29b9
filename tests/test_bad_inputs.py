"""The bad-input matrix: every kind of bad input to the Python API and the CLI, and what it must give.

One parametrized test. Each case builds its bad input, runs it, and checks the
exact exception type (Python API) or exit status (command line, run through
`cli.main` in this process; `test_cli.py` runs the refusals through the real
console script too). On failure nothing is written and nothing is changed: the
model's weights and graph, the input file, and the output folder are as before.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import subclassed_model, uncloneable_layer

import rnn_state_rewriter as rsr
from rnn_state_rewriter import TrainableInitialState, TrainableInitialStateRNN
from rnn_state_rewriter.cli import main as cli_main

DATA = Path(__file__).resolve().parent / "data"  # corrupt files that hung or escaped (see test_fuzz.py)


def lstm_model(K, **options):
    return K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm", **options), K.layers.Dense(1)])


def nested_subclassed(K):
    inputs = K.Input((4, 3))
    return K.Model(inputs, subclassed_model(K)(inputs))


def uncloneable_model(K):
    inputs = K.Input((4, 3))
    return K.Model(inputs, K.layers.GRU(2)(uncloneable_layer(K)(inputs)))


def other_generation_lstm(K):
    if K.__name__ == "keras":
        import tf_keras

        return tf_keras.layers.LSTM
    import keras

    return keras.layers.LSTM


# name -> (make arguments from K, call, expected exception or "warning")
API_CASES = {
    "object instead of a model": (lambda K: (object(),), rsr.add_trainable_initial_states, TypeError),
    "path string instead of a model": (lambda K: ("model.keras",), rsr.add_trainable_initial_states, TypeError),
    "layer instead of a model": (lambda K: (K.layers.LSTM(3),), rsr.add_trainable_initial_states, TypeError),
    "subclassed model that cannot be copied": (
        lambda K: (subclassed_model(K),),
        rsr.add_trainable_initial_states,
        TypeError,
    ),
    "recurrent layer only in a subclassed submodel that cannot be copied": (
        lambda K: (nested_subclassed(K),),
        rsr.add_trainable_initial_states,
        TypeError,
    ),
    "layer with variables that cannot be cloned": (
        lambda K: (uncloneable_model(K),),
        rsr.add_trainable_initial_states,
        TypeError,
    ),
    "unbuilt model": (lambda K: (K.Sequential([K.layers.LSTM(3)]),), rsr.add_trainable_initial_states, ValueError),
    "no recurrent layer": (
        lambda K: (K.Sequential([K.Input((3,)), K.layers.Dense(1)]),),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "unknown layer name": (
        lambda K: (lstm_model(K), {"layers": ["nope"]}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "layers of a wrong type": (lambda K: (lstm_model(K), {"layers": [3]}), rsr.add_trainable_initial_states, TypeError),
    "layers selecting nothing": (
        lambda K: (lstm_model(K), {"layers": lambda layer: False}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "layer class of the other generation": (
        lambda K: (lstm_model(K), {"layers": [other_generation_lstm(K)]}),
        rsr.add_trainable_initial_states,
        TypeError,
    ),
    "per-state list of the wrong length": (
        lambda K: (lstm_model(K), {"initializer": ["zeros", "ones", "ones"]}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "negative noise_stddev": (
        lambda K: (lstm_model(K), {"noise_stddev": -0.5}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "non-numeric noise_stddev": (
        lambda K: (lstm_model(K), {"noise_stddev": "0.1"}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "context that names nothing": (
        lambda K: (lstm_model(K), {"context": "nothing"}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "num_ids without a context": (
        lambda K: (lstm_model(K), {"num_ids": 4}),
        rsr.add_trainable_initial_states,
        ValueError,
    ),
    "context that is not a name": (
        lambda K: (lstm_model(K), {"context": 3}),
        rsr.add_trainable_initial_states,
        TypeError,
    ),
    "remove on a non-model": (lambda K: (object(),), rsr.remove_trainable_initial_states, TypeError),
    "initial_states of a layer": (lambda K: (K.layers.GRU(2),), rsr.initial_states, TypeError),
    "wrapper around a non-recurrent layer": (lambda K: (K.layers.Dense(3),), TrainableInitialStateRNN, TypeError),
    "wrapper around a non-Keras object": (lambda K: (object(),), TrainableInitialStateRNN, TypeError),
    "state layer for an unbuilt layer": (
        lambda K: (K.layers.LSTM(3),),
        TrainableInitialState.for_layer,
        ValueError,
    ),
    "state layer for a non-recurrent layer": (
        lambda K: (K.layers.Dense(3),),
        TrainableInitialState.for_layer,
        TypeError,
    ),
    "empty state shapes": (lambda K: ([],), TrainableInitialState, ValueError),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    import keras
    import tf_keras

    folder = tmp_path_factory.mktemp("inputs")
    lstm_model(keras).save(folder / "k3.keras")
    tk = lstm_model(tf_keras)
    tk.save(folder / "tk.h5")
    tk.save_weights(str(folder / "weights.weights.h5"))
    inputs = keras.Input((5, 3))
    keras.Model(inputs, keras.layers.LSTM(2)(keras.layers.Lambda(lambda t: t * 2)(inputs))).save(folder / "code.keras")
    inputs = tf_keras.Input((5, 3))
    lam = tf_keras.layers.Lambda(lambda t: t * 2)(inputs)
    tf_keras.Model(inputs, tf_keras.layers.LSTM(2)(lam)).save(folder / "code.h5")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).save(folder / "dense.keras")
    data = (folder / "k3.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not a model")
    (folder / "existing.keras").write_bytes(b"precious")
    (folder / "existing.tflite").write_bytes(b"precious")
    (folder / "broken.py").write_text("raise RuntimeError('broken on import')\n")

    class Doubler(keras.layers.Layer):  # neither registered nor importable by name
        def call(self, x):
            return x * 2

    inputs = keras.Input((5, 3))
    keras.Model(inputs, keras.layers.LSTM(2)(Doubler()(inputs))).save(folder / "custom.keras")
    return {p.name: p for p in folder.iterdir()}


# name -> (argv with {in}/{out} placeholders, expected exit status)
CLI_CASES = {
    "missing file": (["add", "{dir}/missing.keras", "{out}/o.keras"], 1),
    "truncated file": (["add", "{dir}/truncated.keras", "{out}/o.keras"], 1),
    "not a model": (["add", "{dir}/notes.txt", "{out}/o.keras"], 1),
    "weights-only file": (["add", "{dir}/weights.weights.h5", "{out}/o.h5"], 1),
    "file carrying code (.keras)": (["add", "{dir}/code.keras", "{out}/o.keras"], 1),
    "file carrying code (.h5)": (["add", "{dir}/code.h5", "{out}/o.h5"], 1),
    "unknown layer name": (["add", "{dir}/k3.keras", "{out}/o.keras", "--layers", "nope"], 1),
    "no recurrent layer": (["add", "{dir}/dense.keras", "{out}/o.keras"], 1),
    "existing output without --force": (["add", "{dir}/k3.keras", "{dir}/existing.keras"], 1),
    "output equal to input": (["add", "{dir}/k3.keras", "{dir}/k3.keras"], 2),
    "file of the other generation (--keras 3 on tf-keras .h5)": (
        ["add", "{dir}/tk.h5", "{out}/o.h5", "--keras", "3"],
        1,
    ),
    "unknown output format": (["add", "{dir}/k3.keras", "{out}/o.txt"], 1),
    "Keras 3 model to .h5": (["add", "{dir}/k3.keras", "{out}/o.h5"], 1),
    "negative --noise-stddev": (["add", "{dir}/k3.keras", "{out}/o.keras", "--noise-stddev", "-1"], 2),
    "missing arguments": (["add"], 2),
    "unknown command": (["frobnicate"], 2),
    "inspect of a missing file": (["inspect", "{dir}/missing.keras"], 1),
    "file that hangs HDF5 while being read": (
        ["inspect", "{data}/hang_tf_keras_bit_flips.h5", "--read-timeout", "1"],
        1,
    ),
    "corrupt zip (zipfile raises OSError)": (["add", "{data}/escape_keras3_zip_offset.keras", "{out}/o.keras"], 1),
    "corrupt HDF5 (h5py raises KeyError)": (["add", "{data}/escape_tf_keras_key_error.h5", "{out}/o.h5"], 1),
    "non-positive --read-timeout": (["inspect", "{dir}/k3.keras", "--read-timeout", "0"], 2),
    "unknown class without --custom-objects": (["inspect", "{dir}/custom.keras"], 1),
    "--custom-objects module that does not exist": (
        ["inspect", "{dir}/k3.keras", "--custom-objects", "no_such_module_for_rsr"],
        1,
    ),
    "--custom-objects file that raises on import": (
        ["inspect", "{dir}/k3.keras", "--custom-objects", "{dir}/broken.py"],
        1,
    ),
    "export to a name other than .tflite": (["export", "{dir}/k3.keras", "{out}/o.bin"], 1),
    "export to an existing file without --force": (["export", "{dir}/k3.keras", "{dir}/existing.tflite"], 1),
    "export with --batch-size 0": (["export", "{dir}/k3.keras", "{out}/o.tflite", "--batch-size", "0"], 2),
}

CASES = [("api", name) for name in API_CASES] + [("cli", name) for name in CLI_CASES]


@pytest.mark.parametrize("surface, case", CASES, ids=[f"{s}: {c}" for s, c in CASES])
def test_bad_input_matrix(K, surface, case, files, tmp_path, capsys):
    if surface == "api":
        make, call, expected = API_CASES[case]
        arguments = make(K)
        kwargs = arguments[-1] if isinstance(arguments[-1], dict) else {}
        args = arguments[:-1] if kwargs else arguments
        model = args[0] if isinstance(args[0], (K.Model,)) else None
        before = _state(model)
        with pytest.raises(expected) as error:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call(*args, **kwargs)
        assert str(error.value), "an error must say what is wrong"
        assert _state(model) == before
        return
    if K.__name__ != "keras":
        pytest.skip("the command line cases do not depend on the fixture's generation")
    argv, status = CLI_CASES[case]
    folder = files["k3.keras"].parent
    argv = [a.format(dir=folder, out=tmp_path, data=DATA) for a in argv]
    inputs_before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code = _run_cli(argv)
    captured = capsys.readouterr()
    assert code == status, captured.err
    assert "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("rnn-state-rewriter") and ": error: " in last, captured.err
    assert list(tmp_path.iterdir()) == []
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == inputs_before


def _run_cli(argv: list[str]) -> int:
    try:
        return cli_main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return int(exit_.code)


def _state(model) -> object:
    if model is None:
        return None
    with contextlib.suppress(Exception):
        return (
            [np.array(w).tobytes() for w in model.get_weights()],
            [layer.name for layer in model.layers],
            [len(layer._inbound_nodes) for layer in model.layers],
        )
    return None


def test_the_matrix_is_listed_in_the_docs():
    page = (Path(__file__).resolve().parent.parent / "docs" / "guide" / "reliability.md").read_text()
    assert f"{len(CASES)} cases" in page
    for case in [*API_CASES, *CLI_CASES]:
        assert f"`{case}`" in page, case

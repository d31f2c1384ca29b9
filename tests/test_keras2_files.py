"""Keras 2 `.h5` files read into Keras 3 on every backend, without TensorFlow, predict what tf-keras predicts.

tf-keras writes the files here (every recurrent kind, masks, Keras 2's
`hard_sigmoid`, cuDNN weights, a JSON config with its weights, and the forms
older Keras versions wrote); each is read in a process of each Keras 3
backend, with TensorFlow made unimportable on JAX and absent from the PyTorch
environment, and compared with tf-keras' own predictions within 1e-5: read by
`rnn_state_rewriter.keras2`, saved as `.keras` and reloaded, and through the
command line (`convert`, and `add` with `--keras auto` where tf-keras is not
importable).
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from conftest import run_on_backend

tf_keras = pytest.importorskip("tf_keras", reason="tf-keras writes the Keras 2 files")

READER = textwrap.dedent(
    """
    import json, os, sys
    if os.environ["KERAS_BACKEND"] != "tensorflow":  # Keras 3 without TensorFlow (or tf-keras)
        sys.modules["tensorflow"] = None
        sys.modules["tf_keras"] = None
    import numpy as np
    import keras
    import rnn_state_rewriter as rsr
    from rnn_state_rewriter.cli import main
    from rnn_state_rewriter.keras2 import keras2_model_from_json, load_keras2_weights, read_keras2_model

    folder = sys.argv[1]
    expected = json.load(open(os.path.join(folder, "expected.json")))
    changes = {}

    def change(model, name):
        x = np.load(os.path.join(folder, name + "_x.npy"))
        y = np.load(os.path.join(folder, name + "_y.npy"))
        return float(np.abs(np.asarray(model.predict(x, verbose=0)) - y).max())

    for name in expected:
        path = os.path.join(folder, name + ".h5")
        model = read_keras2_model(path)
        changes[name] = change(model, name)
        saved = os.path.join(folder, f"{name}-{os.environ['KERAS_BACKEND']}.keras")
        model.save(saved)
        changes[name + " reloaded"] = change(keras.models.load_model(saved), name)
        out = os.path.join(folder, f"{name}-cli-{os.environ['KERAS_BACKEND']}.keras")
        assert main(["convert", path, out, "--force"]) == 0
        changes[name + " convert"] = change(keras.models.load_model(out), name)
        if os.environ["KERAS_BACKEND"] != "tensorflow":  # --keras auto: Keras 3, tf-keras not importable
            out = os.path.join(folder, f"{name}-add-{os.environ['KERAS_BACKEND']}.keras")
            assert main(["add", path, out, "--force"]) == 0
            changes[name + " add"] = change(keras.models.load_model(out), name)
    model = keras2_model_from_json(open(os.path.join(folder, "lstm.json")).read())
    load_keras2_weights(model, os.path.join(folder, "lstm_weights.h5"))
    changes["lstm json + weights"] = change(model, "lstm")
    print(json.dumps(changes))
    """
)


def _save(folder, name, model, x, expected_model=None):
    model.save(str(folder / f"{name}.h5"))
    np.save(folder / f"{name}_x.npy", x)
    np.save(folder / f"{name}_y.npy", (expected_model or model).predict(x, verbose=0))


def _rewrite_config(path, edit, version=None):
    """Rewrites the model config of an `.h5` file as an older Keras version wrote it."""
    import h5py

    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        handle.attrs["model_config"] = json.dumps(edit(config)).encode()
        if version:
            handle.attrs["keras_version"] = version.encode()


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory):
    """Keras 2 files written by tf-keras, each with a probe batch and tf-keras' predictions on it."""
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    K = tf_keras
    folder = tmp_path_factory.mktemp("keras2")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    tf_keras.utils.set_random_seed(0)

    lstm = K.Sequential(
        [
            K.Input((6, 3)),
            K.layers.LSTM(5, return_sequences=True, name="lstm_a"),
            K.layers.LSTM(4, recurrent_activation="hard_sigmoid", name="lstm_b"),
            K.layers.Dense(2, activation="hard_sigmoid"),
        ]
    )
    _save(folder, "lstm", lstm, x)
    (folder / "lstm.json").write_text(lstm.to_json())
    lstm.save_weights(str(folder / "lstm_weights.h5"))

    gru = K.Sequential(
        [
            K.Input((6, 3)),
            K.layers.GRU(5, return_sequences=True, reset_after=False),
            K.layers.GRU(4, reset_after=True),
            K.layers.Dense(2),
        ]
    )
    _save(folder, "gru", gru, x)

    padded = np.concatenate([x[:, :4], np.zeros((4, 2, 3), "float32")], axis=1)
    inputs = K.Input((6, 3))
    h = K.layers.Masking()(inputs)
    h = K.layers.Bidirectional(K.layers.SimpleRNN(4, return_sequences=True))(h)
    h = K.layers.TimeDistributed(K.layers.Dense(3))(h)
    h = K.layers.BatchNormalization()(h)
    h = K.layers.Conv1D(2, 2)(K.layers.Dropout(0.1)(h))
    bidirectional = K.Model(inputs, K.layers.GlobalAveragePooling1D()(h))
    bidirectional.get_layer(index=4).set_weights(  # moving statistics that are not the defaults
        [rng.normal(size=w.shape).astype("float32") ** 2 + 0.5 for w in bidirectional.get_layer(index=4).weights]
    )
    _save(folder, "bidirectional_masked", bidirectional, padded)

    ids = rng.integers(1, 20, size=(4, 7))
    ids[:, 5:] = 0
    embedding = K.Sequential(
        [
            K.layers.Embedding(20, 4, mask_zero=True, input_length=7),
            K.layers.LSTM(3, return_sequences=True),
            K.layers.GRU(2),
        ]
    )
    _save(folder, "embedding_mask_zero", embedding, ids)

    inner = K.Sequential(
        [K.Input((6, 3)), K.layers.LSTM(4, return_sequences=True), K.layers.BatchNormalization(), K.layers.GRU(3)],
        name="inner",
    )
    inner.layers[1].set_weights(
        [rng.normal(size=w.shape).astype("float32") ** 2 + 0.3 for w in inner.layers[1].weights]
    )
    inputs = K.Input((6, 3))
    twice = K.layers.Concatenate()([inner(inputs), inner(K.layers.Dense(3)(inputs))])  # the submodel's calls 1 and 2
    _save(folder, "nested_submodel_called_twice", K.Model(inputs, K.layers.Dense(2)(twice)), x)

    frames = rng.normal(size=(2, 3, 5, 5, 2)).astype("float32")
    conv = K.Sequential(
        [K.Input((3, 5, 5, 2)), K.layers.ConvLSTM2D(3, 3, padding="same"), K.layers.Flatten(), K.layers.Dense(1)]
    )
    _save(folder, "convlstm2d", conv, frames)

    for name, cudnn, plain in [
        ("cudnn_lstm", CuDNNLSTM, lambda: K.layers.LSTM(5, return_sequences=True)),
        ("cudnn_gru", CuDNNGRU, lambda: K.layers.GRU(5, return_sequences=True, reset_after=True)),
    ]:
        model = K.Sequential(
            [K.Input((6, 3)), K.layers.Bidirectional(cudnn(5, return_sequences=True)), K.layers.Dense(2)]
        )
        model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3 for w in model.get_weights()])
        model.save(str(folder / f"{name}.h5"))
        converted = K.Sequential([K.Input((6, 3)), K.layers.Bidirectional(plain()), K.layers.Dense(2)])
        converted.load_weights(str(folder / f"{name}.h5"))  # what tf-keras makes of cuDNN weights
        np.save(folder / f"{name}_x.npy", x)
        np.save(folder / f"{name}_y.npy", converted.predict(x, verbose=0))

    # Keras < 2.2.3: a Sequential config is the list of its layers; functional models are "Model".
    listed = K.Sequential(
        [K.layers.LSTM(3, input_shape=(6, 3), recurrent_activation="hard_sigmoid"), K.layers.Dense(1)]
    )
    _save(folder, "keras_2_2_list_config", listed, x)

    def as_list(config):
        for layer in config["config"]["layers"]:
            layer.pop("module", None), layer.pop("registered_name", None)
        layers = [layer for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
        layers[0]["config"]["batch_input_shape"] = [None, 6, 3]
        return {"class_name": "Sequential", "config": layers}

    _rewrite_config(str(folder / "keras_2_2_list_config.h5"), as_list, version="2.2.2")
    inputs = K.Input((6, 3))
    old_functional = K.Model(inputs, K.layers.Dense(1)(K.layers.GRU(3, reset_after=False)(inputs)))
    _save(folder, "keras_2_1_model_class", old_functional, x)
    _rewrite_config(str(folder / "keras_2_1_model_class.h5"), lambda c: {**c, "class_name": "Model"}, version="2.1.6")

    names = sorted(p.stem for p in folder.glob("*.h5") if p.stem != "lstm_weights")
    (folder / "expected.json").write_text(json.dumps(dict.fromkeys(names)))
    return folder, names


@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_keras2_files_read_into_keras3_predict_what_tf_keras_predicts(keras2_files, backend):
    folder, names = keras2_files
    result = run_on_backend(backend, READER, str(folder), cwd=folder, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    changes = json.loads(result.stdout.strip().splitlines()[-1])
    ways = ["", " reloaded", " convert"] + ([" add"] if backend != "tensorflow" else [])
    assert sorted(changes) == sorted([f"{n}{w}" for n in names for w in ways] + ["lstm json + weights"])
    worst = {name: change for name, change in changes.items() if not change <= 1e-5}
    assert not worst, worst


def test_keras3_hard_sigmoid_is_not_keras2s(keras2_files):
    """What the translation prevents: Keras 3's own hard_sigmoid moves the predictions of the file."""
    import keras

    folder, _ = keras2_files
    x, y = np.load(folder / "lstm_x.npy"), np.load(folder / "lstm_y.npy")
    from rnn_state_rewriter.keras2 import read_keras2_model

    model = read_keras2_model(str(folder / "lstm.h5"))
    config = model.get_config()
    for layer in config["layers"]:
        for key in ("activation", "recurrent_activation"):
            if "hard_sigmoid" in json.dumps(layer["config"].get(key)):
                layer["config"][key] = "hard_sigmoid"
    plain = keras.Sequential.from_config(config)
    plain.set_weights(model.get_weights())
    assert np.abs(np.asarray(plain.predict(x, verbose=0)) - y).max() > 1e-3


def test_files_that_cannot_be_read_are_refused_saying_why(keras2_files, tmp_path):
    import shutil

    import h5py

    from rnn_state_rewriter.keras2 import read_keras2_model

    folder, _ = keras2_files
    with pytest.raises(ValueError, match="weights only"):
        read_keras2_model(str(folder / "lstm_weights.h5"))
    old = tmp_path / "keras1.h5"
    shutil.copy(folder / "gru.h5", old)
    with h5py.File(old, "r+") as handle:
        handle.attrs["keras_version"] = b"1.2.2"
    with pytest.raises(ValueError, match="Keras 1 files are not read"):
        read_keras2_model(str(old))


def test_the_command_line_converts_only_keras2_files(keras2_files, tmp_path, capsys):
    import keras

    from rnn_state_rewriter.cli import main

    folder, _ = keras2_files
    keras3 = tmp_path / "k3.keras"
    keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(2)]).save(keras3)
    assert main(["convert", str(keras3), str(tmp_path / "out.keras")]) == 1
    assert "not a Keras 2 file (it was written by Keras 3); nothing to convert" in capsys.readouterr().err
    assert main(["convert", str(folder / "lstm.json"), str(tmp_path / "out.keras")]) == 1
    assert "a JSON config holds no weights; pass --weights WEIGHTS.h5" in capsys.readouterr().err
    assert main(["convert", str(folder / "gru.h5"), str(tmp_path / "out.h5")]) == 1
    assert "name it .keras" in capsys.readouterr().err
    assert main(["convert", str(folder / "lstm_weights.h5"), str(tmp_path / "out.keras")]) == 1
    assert "weights only, without a model config" in capsys.readouterr().err
    assert not (tmp_path / "out.keras").exists()


# Keras 2 files shipped in PyPI packages: (wheel, member, Keras version that wrote it).
PYPI_FILES = {
    "asmscan_bilstm": ("asmscan_bilstm-1.0.0-py3-none-any.whl", "asmscan/bilstm/resources/model/cvms/bass-model1.h5"),
    "flavorfetcher": (
        "flavorfetcher-1.0.0-py3-none-any.whl",
        "flavorfetcher/data/100_2021-04-20 10_38_24.203316_3_epochs_re-run_model.h5",
    ),
    "shakkala_simple": ("shakkala-1.7-py3-none-any.whl", "shakkala/model/simple_model.h5"),
    "shakkala_middle": ("shakkala-1.7-py3-none-any.whl", "shakkala/model/middle_model.h5"),
}


def _gru_reset_after_false(node):
    if isinstance(node, dict):
        if node.get("class_name") == "GRU" and isinstance(node.get("config"), dict):
            node["config"].setdefault("reset_after", False)
        for value in node.values():
            _gru_reset_after_false(value)
    elif isinstance(node, list):
        for value in node:
            _gru_reset_after_false(value)


def _tf_keras_predictions(path):
    """What tf-keras predicts with a Keras 2 file on a probe batch of its inputs.

    A `GRU` of Keras < 2.1.3 (shakkala's, Keras 2.0.8) has no `reset_after`
    in its config; it computed as `reset_after=False`, which tf-keras (whose
    default is True) is told here, as it cannot load the file otherwise.
    """
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "r") as handle:
        config = json.loads(handle.attrs["model_config"])
    _gru_reset_after_false(config)
    if isinstance(config["config"], list):
        config["config"] = {"name": "sequential", "layers": config["config"]}
    model = tf_keras.models.model_from_json(json.dumps(config))
    model.load_weights(path)
    embeddings = [layer.input_dim for layer in model.layers if type(layer).__name__ == "Embedding"]
    inputs = []
    for tensor in model.inputs:
        shape = [3] + [7 if d is None else d for d in tensor.shape[1:]]
        if embeddings:
            inputs.append(rng.integers(1, min(embeddings + [10]), size=shape).astype(tensor.dtype.name))
        else:
            inputs.append(rng.normal(size=shape).astype(tensor.dtype.name))
    return inputs, model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)


@pytest.fixture(scope="module")
def pypi_files(tmp_path_factory):
    """The Keras 2 files of `PYPI_FILES`, from wheels in `RSR_KERAS2_WHEELS` (`.ci/run` downloads them)."""
    import os
    import zipfile

    wheels = os.environ.get("RSR_KERAS2_WHEELS", "")
    missing = sorted({w for w, _ in PYPI_FILES.values() if not os.path.isfile(os.path.join(wheels, w))})
    if missing:
        pytest.skip(f"set RSR_KERAS2_WHEELS to a folder holding {missing} (pip download --no-deps ...)")
    folder = tmp_path_factory.mktemp("pypi_keras2")
    for name, (wheel, member) in PYPI_FILES.items():
        with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive:
            (folder / f"{name}.h5").write_bytes(archive.read(member))
        inputs, y = _tf_keras_predictions(str(folder / f"{name}.h5"))
        for i, x in enumerate(inputs):
            np.save(folder / f"{name}_x{i}.npy", x)
        np.save(folder / f"{name}_y.npy", y)
    return folder


PYPI_READER = textwrap.dedent(
    """
    import glob, json, os, sys
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        sys.modules["tensorflow"] = None
        sys.modules["tf_keras"] = None
    import numpy as np
    from rnn_state_rewriter.cli import main
    from rnn_state_rewriter.keras2 import read_keras2_model

    folder, changes = sys.argv[1], {}
    for name in sys.argv[2:]:
        inputs = [np.load(p) for p in sorted(glob.glob(os.path.join(folder, name + "_x*.npy")))]
        expected = np.load(os.path.join(folder, name + "_y.npy"))
        model = read_keras2_model(os.path.join(folder, name + ".h5"))
        y = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
        changes[name] = float(np.abs(np.asarray(y, dtype="float64") - expected).max())
        out = os.path.join(folder, f"{name}-{os.environ['KERAS_BACKEND']}.keras")
        assert main(["add", os.path.join(folder, name + ".h5"), out, "--keras", "3", "--force"]) == 0
    print(json.dumps(changes))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras2_files_of_pypi_packages_read_into_keras3(pypi_files, backend):
    result = run_on_backend(backend, PYPI_READER, str(pypi_files), *PYPI_FILES, cwd=pypi_files, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    changes = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(changes) == sorted(PYPI_FILES)
    assert all(change <= 1e-5 for change in changes.values()), changes

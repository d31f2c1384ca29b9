"""The console script, run in a subprocess the way users run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rnn_state_rewriter as rsr

SCRIPT = shutil.which("rnn-state-rewriter", path=str(Path(sys.executable).parent)) or shutil.which("rnn-state-rewriter")
X = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """Runs the console script as users do: without TF_CPP_MIN_LOG_LEVEL unless given."""
    assert SCRIPT, "the rnn-state-rewriter console script is not installed"
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = [SCRIPT, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd, env={**environment, **env})


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rnn-state-rewriter:")]


def assert_refused(result: subprocess.CompletedProcess, status: int, *needles: str) -> None:
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = our_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Model files of both generations and formats, made in one subprocess."""
    folder = tmp_path_factory.mktemp("models")
    code = """
import numpy as np, keras, tf_keras
def model(K, **kw):
    return K.Sequential([K.Input((5, 3)), K.layers.LSTM(4, name="lstm"), K.layers.Dense(1, name="head")], **kw)
model(keras).save("k3.keras")
tk = model(tf_keras)
tk.save("tk.keras"); tk.save("tk.h5"); tk.save("tk_saved", save_format="tf")
inputs = keras.Input((5, 3))
keras.Model(inputs, keras.layers.LSTM(2)(keras.layers.Lambda(lambda t: t * 2)(inputs))).save("lambda.keras")
inputs = tf_keras.Input((5, 3))
tf_keras.Model(inputs, tf_keras.layers.LSTM(2)(tf_keras.layers.Lambda(lambda t: t * 2)(inputs))).save("lambda.h5")
keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).save("dense.keras")
data = open("k3.keras", "rb").read()
open("truncated.keras", "wb").write(data[: len(data) // 2])
open("notes.txt", "w").write("not a model")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {p.name: p for p in folder.iterdir()}


def predict(path: Path, generation: str) -> np.ndarray:
    if generation == "keras3":
        import keras as api
    else:
        import tf_keras as api

        import rnn_state_rewriter.backend.tf_keras  # noqa: F401  (what importing tf_keras first does)
    import rnn_state_rewriter  # noqa: F401  (registers the layers, as users do)

    return api.models.load_model(str(path)).predict(X, verbose=0)


@pytest.mark.parametrize(
    "source, output, generation",
    [
        ("k3.keras", "out.keras", "keras3"),
        ("tk.keras", "out.keras", "tf_keras"),
        ("tk.h5", "out.h5", "tf_keras"),
        ("tk_saved", "out_saved", "tf_keras"),
    ],
)
def test_add_then_load_predicts_the_same(files, tmp_path, source, output, generation):
    result = run("add", str(files[source]), str(tmp_path / output))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lstm" in result.stdout and "rewritten" in result.stdout and "(4,) (4,)" in result.stdout
    np.testing.assert_allclose(predict(tmp_path / output, generation), predict(files[source], generation), atol=1e-6)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != output]
    assert leftovers == []


def test_add_options_reach_the_rewrite(files, tmp_path):
    out = tmp_path / "frozen.keras"
    result = run(
        "add",
        str(files["k3.keras"]),
        str(out),
        "--layers",
        "lstm",
        "--initializer",
        "ones",
        "--freeze-base",
        "--noise-stddev",
        "0.1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import keras

    model = keras.models.load_model(str(out))
    assert len(model.trainable_weights) == 2
    np.testing.assert_array_equal(np.array(model.get_layer("lstm_initial_state").weights[0]), np.ones(4))
    assert model.get_layer("lstm_initial_state").noise_stddev == 0.1


def test_inspect_lists_layers_states_and_norms(files, tmp_path):
    out = tmp_path / "ones.keras"
    assert run("add", str(files["k3.keras"]), str(out), "--initializer", "ones").returncode == 0
    result = run("inspect", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    header, row = result.stdout.strip().splitlines()
    assert header.split()[:3] == ["layer", "kind", "states"]
    assert row.split() == ["lstm", "LSTM", "(4,)", "(4,)", "yes", "2", "2"]
    plain = run("inspect", str(files["tk.h5"]))
    assert plain.stdout.strip().splitlines()[1].split()[-2:] == ["no", "-"]


def test_file_with_code_is_refused_unless_unsafe(files, tmp_path):
    for name in ("lambda.keras", "lambda.h5"):
        out = tmp_path / ("out" + Path(name).suffix)
        assert_refused(run("add", str(files[name]), str(out)), 1, "--unsafe", "Lambda")
        assert not out.exists()
    result = run("add", str(files["lambda.keras"]), str(tmp_path / "ok.keras"), "--unsafe")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ok.keras").exists()


def test_existing_output_is_refused_unless_force(files, tmp_path):
    out = tmp_path / "existing.keras"
    out.write_bytes(b"precious")
    assert_refused(run("add", str(files["k3.keras"]), str(out)), 1, "--force")
    assert out.read_bytes() == b"precious"
    assert run("add", str(files["k3.keras"]), str(out), "--force").returncode == 0
    assert out.read_bytes() != b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.keras"]


@pytest.mark.parametrize("command", ["add", "convert", "export"])
def test_an_output_in_a_missing_folder_is_refused_before_the_model_is_read(tmp_path, command):
    """The output is checked first: an unreadable input is not even opened (its error would come first)."""
    source = tmp_path / ("in.h5" if command == "convert" else "in.keras")
    source.write_bytes(b"not a model")
    out = tmp_path / "missing" / ("m.tflite" if command == "export" else "m.keras")
    assert_refused(run(command, str(source), str(out)), 1, "does not exist", str(tmp_path / "missing"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_output_equal_to_input_is_a_usage_error(files):
    before = files["k3.keras"].read_bytes()
    result = run("add", str(files["k3.keras"]), str(files["k3.keras"]))
    assert result.returncode == 2
    assert "OUTPUT must differ from INPUT" in result.stderr
    assert files["k3.keras"].read_bytes() == before


@pytest.mark.parametrize(
    "source, needle",
    [
        ("missing.keras", "no such file"),
        ("truncated.keras", "not a Keras model file"),
        ("notes.txt", "not a Keras model file"),
        ("dense.keras", "no recurrent layer"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_write_nothing(files, tmp_path, source, needle):
    path = files.get(source, files["k3.keras"].parent / source)
    out = tmp_path / "out.keras"
    assert_refused(run("add", str(path), str(out)), 1, needle)
    assert list(tmp_path.iterdir()) == []


def test_unknown_layer_name_lists_the_recurrent_layers(files, tmp_path):
    assert_refused(
        run("add", str(files["k3.keras"]), str(tmp_path / "o.keras"), "--layers", "nope"), 1, "'nope'", "'lstm'"
    )
    assert list(tmp_path.iterdir()) == []


def test_usage_error_exits_2():
    """One through the real script; the bad-input matrix runs the other usage errors in process."""
    result = run("add", "a.keras", "b.keras", "--noise-stddev", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--noise-stddev" in result.stderr


@pytest.mark.parametrize("command", ["add", "inspect", "export", "demo"])
def test_every_subcommand_has_help(command, capsys):
    from rnn_state_rewriter.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rnn-state-rewriter {command}")


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "rnn_state_rewriter", "--help"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and "add" in result.stdout


def test_demo_writes_its_pictures_and_model(tmp_path):
    result = run("demo", "--epochs", "1", "--output-dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == [
        "error_per_step.png",
        "learned_states.png",
        "retrofitted.keras",
        "summary.png",
        "training_curves.png",
    ]
    for name in names[:-1]:
        if name.endswith(".png"):
            assert (tmp_path / "demo" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Retrofitted: largest change in predictions 0" in result.stdout
    assert "Mean squared error per time step" in result.stdout


# ---------------------------------------------------------------- export


def interpret(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.tensorflow  # TFLite needs the TensorFlow backend (on JAX the command line says so)
@pytest.mark.parametrize("source, generation", [("k3.keras", "keras3"), ("tk.h5", "tf_keras")])
def test_export_writes_a_tflite_file_that_keeps_the_learned_states(files, tmp_path, source, generation):
    suffix = Path(source).suffix
    retrofitted = tmp_path / f"learned{suffix}"
    assert run("add", str(files[source]), str(retrofitted), "--initializer", "random_normal").returncode == 0
    out = tmp_path / "model.tflite"
    result = run("export", str(retrofitted), str(out), "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "" and f"wrote {out}" in result.stdout
    expected = predict(retrofitted, generation)
    assert np.abs(expected - predict(files[source], generation)).max() > 1e-4, "learned states must matter here"
    np.testing.assert_allclose(interpret(out, X), expected, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([retrofitted.name, out.name])


@pytest.mark.tensorflow
def test_export_streaming_writes_step_and_start_signatures(files, tmp_path):
    import tensorflow as tf

    retrofitted = tmp_path / "learned.keras"
    assert run("add", str(files["k3.keras"]), str(retrofitted), "--initializer", "random_normal").returncode == 0
    out = tmp_path / "stream.tflite"
    result = run("export", str(retrofitted), str(out), "--streaming", "--batch-size", "4", "--steps", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "streaming signatures 'step' and 'start'" in result.stdout
    interpreter = tf.lite.Interpreter(model_path=str(out))
    assert sorted(interpreter.get_signature_list()) == ["start", "step"]
    states = interpreter.get_signature_runner("start")()
    assert states and all(value.shape[0] == 4 for value in states.values())


def test_export_refusals_write_nothing(files, tmp_path):
    assert_refused(run("export", str(files["k3.keras"]), str(tmp_path / "model.bin")), 1, ".tflite")
    existing = tmp_path / "existing.tflite"
    existing.write_bytes(b"precious")
    assert_refused(run("export", str(files["k3.keras"]), str(existing)), 1, "--force")
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.tflite"]


# ---------------------------------------------------------------- start-up lines, --debug, demo


def test_tensorflow_start_up_lines_stay_off_the_terminal(files, tmp_path):
    """Native stderr (TensorFlow's log lines) is kept off unless the user set TF_CPP_MIN_LOG_LEVEL."""
    noisy = tmp_path / "noisy.py"
    noisy.write_text("import os\nos.write(2, b'a native line\\n')\n")
    quiet = run("inspect", str(files["k3.keras"]), "--custom-objects", str(noisy))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == ""
    assert quiet.stdout.splitlines()[1].split()[:2] == ["lstm", "LSTM"]
    chosen = run("inspect", str(files["k3.keras"]), "--custom-objects", str(noisy), TF_CPP_MIN_LOG_LEVEL="0")
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert "a native line" in chosen.stderr


def test_debug_adds_the_traceback(files, tmp_path):
    result = run("add", str(files["k3.keras"]), str(tmp_path / "o.keras"), "--layers", "nope", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rnn-state-rewriter: error: ")


def test_demo_without_matplotlib_fails_in_one_line(monkeypatch, capsys):
    import rnn_state_rewriter.demo
    from rnn_state_rewriter.cli import main

    def no_matplotlib(**kwargs):
        raise ImportError("the demo draws with matplotlib: pip install 'rnn-state-rewriter[demo]'")

    monkeypatch.setattr(rnn_state_rewriter.demo, "run_demo", no_matplotlib)
    assert main(["demo", "--epochs", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "rnn-state-rewriter: error: the demo draws with matplotlib: pip install 'rnn-state-rewriter[demo]'"
    ]


# ---------------------------------------------------------------- --custom-objects

CUSTOM_MODULE = """
import numpy as np
import {api}

register = {api}.saving.register_keras_serializable if hasattr({api}, "saving") else None
register = register or {api}.utils.register_keras_serializable


class Scale({api}.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {{**super().get_config(), "factor": self.factor}}


class PlainCell({api}.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.built = True

    def call(self, x, states):
        h = {ops}.tanh({ops}.matmul(x, self.kernel) + states[0])
        return h, [h]

    def get_config(self):
        return {{**super().get_config(), "units": self.units}}


@register(package="rsr_cli_test")
class RegisteredScale(Scale):
    pass


@register(package="rsr_cli_test")
class RegisteredCell(PlainCell):
    pass


def save(path, registered):
    scale, cell = (RegisteredScale, RegisteredCell) if registered else (Scale, PlainCell)
    inputs = {api}.Input((5, 3))
    x = {api}.layers.RNN(cell(4), name="rnn")(scale(name="scale")(inputs))
    {api}.Model(inputs, {api}.layers.Dense(1, name="head")(x)).save(path)
"""


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> Path:
    """Per generation, a module of custom classes and models saved with them (registered or not)."""
    folder = tmp_path_factory.mktemp("custom")
    for generation, api, ops, suffix in [("k3", "keras", "keras.ops", ".keras"), ("tk", "tf_keras", "tf", ".h5")]:
        text = CUSTOM_MODULE.format(api=api, ops=ops)
        if ops == "tf":
            text = "import tensorflow as tf\n" + text
        (folder / f"custom_{generation}.py").write_text(text)
        # tf-keras' .h5 loader cannot find a registered cell nested in an RNN, registered or not
        # (its own bug): the registered tf-keras model is saved as .keras.
        code = f"import custom_{generation} as m; m.save('{generation}_plain{suffix}', False); "
        code += f"m.save('{generation}_registered.keras', True)"
        result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.parametrize("generation, suffix", [("k3", ".keras"), ("tk", ".h5")])
def test_unknown_class_names_the_class_and_the_option(custom, generation, suffix):
    for name, needle in ((f"plain{suffix}", "'Scale'"), ("registered.keras", "'Registered")):
        result = run("inspect", str(custom / f"{generation}_{name}"))
        assert_refused(result, 1, needle, "--custom-objects")


@pytest.mark.parametrize("generation, suffix", [("k3", ".keras"), ("tk", ".h5")])
def test_custom_objects_from_a_file_find_unregistered_classes(custom, generation, suffix):
    result = run(
        "inspect",
        str(custom / f"{generation}_plain{suffix}"),
        "--custom-objects",
        str(custom / f"custom_{generation}.py"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[1].split()[:3] == ["rnn", "RNN", "(4,)"]


@pytest.mark.parametrize("generation", ["k3", "tk"])
def test_custom_objects_from_a_module_find_registered_classes(custom, tmp_path, generation):
    source, out = custom / f"{generation}_registered.keras", tmp_path / "out.keras"
    result = run(
        "add", str(source), str(out), "--custom-objects", f"custom_{generation}", PYTHONPATH=_pythonpath(custom)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rewritten" in result.stdout
    api = "keras" if generation == "k3" else "tf_keras"
    code = textwrap.dedent(
        f"""
        import numpy as np, {api} as api, custom_{generation}, rnn_state_rewriter as rsr
        import rnn_state_rewriter.backend.tf_keras  # registers the tf-keras layers (harmless for Keras 3)
        new, old = api.models.load_model({str(out)!r}), api.models.load_model({str(source)!r})
        x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
        assert np.allclose(new.predict(x, verbose=0), old.predict(x, verbose=0), atol=1e-6)
        assert list(rsr.initial_states(new)) == ["rnn"], rsr.initial_states(new)
        """
    )
    env = {**os.environ, "PYTHONPATH": _pythonpath(custom)}
    check = subprocess.run(
        [sys.executable, "-c", code], cwd=custom, capture_output=True, text=True, timeout=600, env=env
    )
    assert check.returncode == 0, check.stderr[-3000:]


def _pythonpath(folder: Path) -> str:
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


def test_add_table_gives_the_plans_reasons(K, tmp_path, capsys):
    """Each row says what the rewrite's plan decided, with its reason (run in this process)."""
    from rnn_state_rewriter.cli import main

    inputs = K.Input((5, 3))
    x = K.layers.LSTM(4, return_sequences=True, name="first")(inputs)
    x = K.layers.Bidirectional(K.layers.GRU(2), name="second")(x)
    source, out = tmp_path / "two.keras", tmp_path / "out.keras"
    K.Model(inputs, x).save(source)
    assert main(["add", str(source), str(out), "--layers", "second"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines]
    assert rows[1] == ["first", "LSTM", "-", "skipped:", "not", "selected"]
    assert rows[2] == ["second", "Bidirectional(GRU)", "(2,)", "(2,)", "rewritten"]
    assert lines[3].startswith("not checked: every layer is one of Keras' own")  # exact by construction
    assert main(["add", str(source), str(out), "--layers", "second", "--check", "always", "--force"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].startswith("checked: at zero states the copy predicts what the original predicts on 3 probe")
    assert "largest change 0)" in lines[3] or "largest change 0." in lines[3]


def test_add_conditions_states_on_a_context_and_retrofits_stateful_layers(K, tmp_path, capsys):
    """`--context NAME --num-ids N` gives one state per id; a stateful layer is wrapped; the file keeps both."""
    from rnn_state_rewriter.cli import main

    series, ids = K.Input(batch_shape=(2, 5, 3)), K.Input(batch_shape=(2,), dtype="int32", name="ids")
    x = K.layers.LSTM(4, return_sequences=True, stateful=True, name="streaming")(series)
    x = K.layers.GRU(2, name="gru")(x)
    source, out = tmp_path / "ctx.keras", tmp_path / "out.keras"
    model = K.Model([series, ids], x)
    model.save(source)
    assert main(["add", str(source), str(out), "--context", "ids", "--num-ids", "9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("rewritten (stateful: resets to the learned state; one state per id of ids)")
    assert lines[2].split() == ["gru", "GRU", "(2,)", "rewritten", "(one", "state", "per", "id", "of", "ids)"]
    loaded = K.models.load_model(out)
    assert {name: [m.shape for m in maps] for name, maps in rsr.context_maps(loaded).items()} == {
        "streaming": [(9, 4), (9, 4)],
        "gru": [(9, 2)],
    }
    batch = [np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32"), np.array([1, 8], "int32")]
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), atol=1e-6)
    assert main(["inspect", str(out)]) == 0
    rows = [line.split(None, 3) for line in capsys.readouterr().out.splitlines()]
    assert rows[1][:3] == ["streaming", "LSTM", "(stateful)"] and "yes, plus a context map" in rows[1][3]
    assert main(["add", str(source), str(out), "--context", "nothing", "--force"]) == 1
    assert "names no input or layer" in capsys.readouterr().err


def test_add_refuses_a_copy_that_predicts_otherwise_and_writes_nothing(tmp_path, capsys):
    """A layer whose state its config does not carry: the check names it; `--no-check` writes anyway."""
    import keras

    from rnn_state_rewriter.cli import main

    @keras.saving.register_keras_serializable("rsr_cli_test")
    class Shift(keras.layers.Layer):
        """Draws a constant shift when built: neither its config nor its saving methods carry it."""

        def build(self, input_shape):
            self.shift = np.random.default_rng().normal(size=input_shape[-1]).astype("float32")

        def call(self, inputs):
            return inputs + self.shift

    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, keras.layers.LSTM(2)(Shift(name="shift")(inputs)))
    source, out = tmp_path / "shift.keras", tmp_path / "out.keras"
    model.save(source)
    assert main(["add", str(source), str(out)]) == 1
    assert "first layer whose outputs differ is 'shift'" in capsys.readouterr().err
    assert not out.exists()
    assert main(["add", str(source), str(out), "--check", "never"]) == 0
    assert out.exists()
    assert main(["add", str(source), str(out), "--no-check", "--force"]) == 0


def test_add_reaches_recurrent_layers_inside_custom_layers_and_the_file_keeps_them(tmp_path, capsys):
    import keras

    import rnn_state_rewriter as rsr
    from rnn_state_rewriter.cli import main

    @keras.saving.register_keras_serializable("rsr_cli_test")
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lstm = keras.layers.LSTM(2, name="lstm")

        def call(self, inputs):
            return self.lstm(inputs)

    inputs = keras.Input((5, 3))
    source, out = tmp_path / "block.keras", tmp_path / "out.keras"
    keras.Model(inputs, Block(name="block")(inputs)).save(source)
    assert main(["add", str(source), str(out), "--initializer", "ones"]) == 0
    assert "block/lstm" in capsys.readouterr().out
    reloaded = keras.models.load_model(out)
    assert [v.tolist() for v in rsr.initial_states(reloaded)["block/lstm"]] == [[1.0, 1.0], [1.0, 1.0]]


def test_inspect_reads_a_file_with_a_custom_layer_retrofitted_by_surgery(tmp_path):
    """The console script registers the loader of retrofitted objects before it loads a file."""
    module = tmp_path / "rsr_cli_blocks.py"
    module.write_text(
        "import keras\n\n\n"
        '@keras.saving.register_keras_serializable("rsr_cli_blocks")\n'
        "class Block(keras.layers.Layer):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.lstm = keras.layers.LSTM(2, name='lstm')\n\n"
        "    def call(self, inputs):\n"
        "        return self.lstm(inputs)\n"
    )
    code = (
        "import sys, importlib.util, keras\n"
        "import rnn_state_rewriter as rsr\n"
        "spec = importlib.util.spec_from_file_location('rsr_cli_blocks', sys.argv[1])\n"
        "blocks = importlib.util.module_from_spec(spec); spec.loader.exec_module(blocks)\n"
        "inputs = keras.Input((5, 3))\n"
        "model = keras.Model(inputs, blocks.Block(name='block')(inputs))\n"
        "rsr.add_trainable_initial_states(model, initializer='ones').save(sys.argv[2])\n"
    )
    source = tmp_path / "retrofitted.keras"
    made = subprocess.run([sys.executable, "-c", code, str(module), str(source)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    result = run("inspect", str(source), "--custom-objects", str(module))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "block/lstm" in result.stdout and "1.414 1.414" in result.stdout

"""Corrupt model files given to the real console script: never a hang, a crash or a traceback.

Valid `.keras` and `.h5` files of both generations are mutated with fixed
seeds (bit flips, truncation, zeroed blocks, swapped blocks) and given to
`rnn-state-rewriter add`, each run bounded by a timeout. Every run must end
in one of two ways:

- exit status 1, one line on stderr, no traceback, nothing written; or
- exit status 0, when the mutation left a model Keras loads (a flipped bit
  in a weight, padding, an unused byte): then the output must be that
  model retrofitted, predicting what the mutated input predicts. Refusing
  such a file would be wrong: it is a valid model file.

`RSR_FUZZ` sets how many mutations per base file (CI: 2, so 8 runs); the
files that hung or escaped before are pinned in `test_regression_inputs`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
SCRIPT = shutil.which("rnn-state-rewriter", path=str(Path(sys.executable).parent)) or shutil.which("rnn-state-rewriter")
PER_FILE = int(os.environ.get("RSR_FUZZ", "2"))
BASES = ["k3.keras", "k3.h5", "tk.keras", "tk.h5"]
X = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
MUTATIONS = ("bit flips", "truncation", "zeroed block", "swapped blocks")


def mutate(data: bytes, seed: int) -> tuple[str, bytes]:
    """One mutation of `data`, chosen and shaped by `seed`."""
    rng = np.random.default_rng(seed)
    kind = MUTATIONS[seed % len(MUTATIONS)]
    buffer = bytearray(data)
    size = len(buffer)
    if kind == "bit flips":
        for _ in range(int(rng.integers(1, 9))):
            position = int(rng.integers(0, size * 8))
            buffer[position // 8] ^= 1 << (position % 8)
    elif kind == "truncation":
        buffer = buffer[: int(rng.integers(0, size))]
    elif kind == "zeroed block":
        start, length = int(rng.integers(0, size)), int(rng.integers(1, 513))
        buffer[start : start + length] = bytes(len(buffer[start : start + length]))
    else:
        length = int(rng.integers(1, min(512, size // 2) + 1))
        first, second = sorted(int(p) for p in rng.choice(size - length, size=2, replace=False))
        if second - first < length:
            second = min(first + length, size - length)
        a, b = bytes(buffer[first : first + length]), bytes(buffer[second : second + length])
        buffer[first : first + length], buffer[second : second + length] = b, a
    return kind, bytes(buffer)


def make_bases(folder: Path) -> None:
    """The valid files: a small LSTM model of each generation, in each format."""
    code = f"""
import warnings; warnings.simplefilter("ignore")
import keras, tf_keras
def model(K):
    K.utils.set_random_seed(0)
    return K.Sequential([K.Input((4, 3)), K.layers.LSTM(2, name="lstm"), K.layers.Dense(1, name="head")])
model(keras).save({str(folder / "k3.keras")!r}); model(keras).save({str(folder / "k3.h5")!r})
model(tf_keras).save({str(folder / "tk.keras")!r}); model(tf_keras).save({str(folder / "tk.h5")!r})
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def run_add(source: Path, output: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    assert SCRIPT, "the rnn-state-rewriter console script is not installed"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = [SCRIPT, "add", str(source), str(output)]  # the default read limit: 10 s for these small files
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def check_outcome(source: Path, output: Path, result: subprocess.CompletedProcess) -> str:
    """Asserts one of the two allowed endings; returns "refused" or "loadable"."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    leftovers = sorted(p.name for p in output.parent.iterdir() if p != output)
    assert leftovers == [], leftovers
    if result.returncode == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnn-state-rewriter: error: "), result.stderr[-3000:]
        assert not output.exists()
        return "refused"
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]
    assert_retrofit_of(source, output)
    return "loadable"


def assert_retrofit_of(source: Path, output: Path) -> None:
    import keras
    import tf_keras

    import rnn_state_rewriter as rsr
    import rnn_state_rewriter.backend.tf_keras  # noqa: F401  (registers the tf-keras layers)

    api = tf_keras if "tk" in source.name else keras
    original, retrofitted = api.models.load_model(str(source)), api.models.load_model(str(output))
    assert rsr.initial_states(retrofitted)
    np.testing.assert_allclose(retrofitted.predict(X, verbose=0), original.predict(X, verbose=0), atol=1e-6)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bases")
    make_bases(folder)
    return folder


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("seed", range(PER_FILE))
def test_mutated_file_is_refused_in_one_line_or_retrofitted(bases, tmp_path, base, seed):
    kind, data = mutate((bases / base).read_bytes(), seed)
    source = tmp_path / "in" / f"{seed}-{base}"
    source.parent.mkdir()
    source.write_bytes(data)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    output = out_folder / ("out.keras" if base.startswith("k3") or base.endswith(".keras") else "out.h5")
    start = time.perf_counter()
    result = run_add(source, output)
    outcome = check_outcome(source, output, result)
    assert source.read_bytes() == data, "the input must be left untouched"
    print(f"{base} seed {seed} ({kind}): {outcome} in {time.perf_counter() - start:.1f} s")


# name -> (how it was made, what the command line says). Made by the mutations above; each hung
# (plain h5py too: reading the `model_config` attribute never returns) or ended in a traceback
# (UnicodeEncodeError, KeyError, zipfile's OSError) before the file was read in a bounded child.
REGRESSION_INPUTS = {
    "hang_tf_keras_bit_flips.h5": ("tk.h5, seed 20", "did not finish within 3 s"),
    "hang_keras3_zeroed_block.h5": ("k3.h5, seed 38", "did not finish within 3 s"),
    "escape_tf_keras_unicode_config.h5": ("tk.h5, seed 8", "not a readable Keras model file"),
    "escape_tf_keras_key_error.h5": ("tk.h5, seed 59", "KeyError"),
    "escape_keras3_zip_offset.keras": ("one bit flipped in the zip's central directory offset", "OSError"),
}


@pytest.mark.parametrize("name", REGRESSION_INPUTS)
def test_regression_inputs(tmp_path, name):
    source = tmp_path / name
    shutil.copy(DATA / name, source)
    output = tmp_path / "out" / ("out.keras" if name.endswith(".keras") else "out.h5")
    output.parent.mkdir()
    assert SCRIPT, "the rnn-state-rewriter console script is not installed"
    command = [SCRIPT, "add", str(source), str(output), "--read-timeout", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert check_outcome(source, output, result) == "refused"
    assert REGRESSION_INPUTS[name][1] in result.stderr, result.stderr
    assert source.read_bytes() == (DATA / name).read_bytes()


def test_debug_prints_the_readers_traceback(tmp_path):
    source = DATA / "escape_keras3_zip_offset.keras"
    result = subprocess.run([SCRIPT, "inspect", str(source), "--debug"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "zipfile" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rnn-state-rewriter: error: ")

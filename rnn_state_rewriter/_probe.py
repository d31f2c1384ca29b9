"""Reading an untrusted model file, bounded: a child process with a time limit.

A corrupt file can make HDF5 hang forever (reading an attribute never
returns, in plain h5py too), crash, or raise exceptions of any type
(`OSError` from `zipfile`, `KeyError` from h5py). So before Keras loads a file
in the command line's own process, `probe(path, timeout)` runs this module as
a script in a child process that reads every part of the file Keras will read:
every zip member (CRC-checked), the JSON documents, and every attribute and
dataset of every HDF5 object (the `.h5` file, or the weights inside a
`.keras` file). Keras then reads a subset of the same objects with the same
library, so a file that passed here loads without hanging (in the fuzz runs
of `tests/test_fuzz.py`, no file that passed hung or crashed the loader). The
child imports only the standard library and h5py (not this package, nor
TensorFlow): it costs a Python start-up and an h5py import, about 0.3 s.

The time limit follows the file (`read_limit`): a few seconds plus time in
proportion to the bytes the child reads, so that a small corrupt file is
refused in seconds while a model of several GB still loads. The child dies
with its parent (Linux: `PR_SET_PDEATHSIG`, set by the child itself as it
starts; `probe` also kills it on any exception, Ctrl-C included), so a command
that is killed or interrupted leaves no reader spinning.

The child prints one JSON object: the Keras generation the file records and
whether it carries Python code, or an error message with its traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import traceback
import zipfile
from dataclasses import dataclass
from typing import Any

CODE_CLASSES = re.compile(rb'"class_name":\s*"(Lambda|__lambda__)"')
# The read limit: a Python start-up and an h5py import on a busy machine, plus the reading itself
# at a rate far below a disk's (h5py reads every dataset; a 1 GB file is given 100 s more).
BASE_SECONDS = 10.0
SECONDS_PER_BYTE = 1 / 10e6
# Runs this file as a script with neither the working folder nor this package's folder on
# sys.path (a `-I` child would miss h5py installed in the user's site or on PYTHONPATH).
_RUN_AS_SCRIPT = (
    "import runpy, sys; del sys.path[0]; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


class _Refused(ValueError):
    """A file that reads fine but is not a Keras model file (said as it is, without a type name)."""


class ProbeError(Exception):
    """The file is not a model file that can be read safely; `details` holds the child's traceback."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Metadata:
    """What a model file records about itself."""

    generation: str  # "3" (Keras 3) or "2" (tf-keras)
    carries_code: bool  # a Lambda layer, which loading would run


def bytes_read(path: str) -> int:
    """How many bytes the child reads: the file, or a SavedModel folder's Keras metadata."""
    if os.path.isdir(path):
        metadata = os.path.join(path, "keras_metadata.pb")
        return os.path.getsize(metadata) if os.path.isfile(metadata) else 0
    return os.path.getsize(path)


def read_limit(path: str) -> float:
    """The time the child gets to read `path`: `BASE_SECONDS` plus 1 s per 10 MB it reads."""
    return BASE_SECONDS + bytes_read(path) * SECONDS_PER_BYTE


def probe(path: str, timeout: float | None = None, *, weights_only: bool = False) -> Metadata:
    """Reads `path` in a child process killed after `timeout` seconds (None: `read_limit(path)`).

    With `weights_only`, `path` may be an `.h5` file of weights without a model config.

    Raises:
        ProbeError: the file cannot be read safely, or the child did not finish in time.
    """
    limit = read_limit(path) if timeout is None else timeout
    command = [sys.executable, "-c", _RUN_AS_SCRIPT, os.path.abspath(__file__), os.path.abspath(path), str(os.getpid())]
    command += ["weights"] if weights_only else []
    try:
        done = subprocess.run(command, capture_output=True, timeout=limit, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        given = "the limit given" if timeout is not None else f"the limit for a file of {bytes_read(path) / 1e6:.3g} MB"
        raise ProbeError(
            f"reading the file did not finish within {limit:.3g} s ({given}; a corrupt HDF5 file can hang "
            "forever); stopped. Pass --read-timeout SECONDS to wait longer"
        ) from None
    details = done.stderr.decode(errors="replace")
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else "?"
        raise ProbeError(f"reading the file crashed the reader ({name}); the file is corrupt", details)
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise ProbeError(f"the file reader failed (exit status {done.returncode})", details) from None
    if "error" in answer:
        raise ProbeError(answer["error"], answer.get("traceback", ""))
    return Metadata(answer["generation"], answer["carries_code"])


# ---------------------------------------------------------------- the child's side


def read_metadata(path: str, weights_only: bool = False) -> dict[str, Any]:
    """Reads every part of a model file (or, if `weights_only`, an `.h5` file of weights too).

    Returns its generation and whether it carries code.
    """
    if weights_only:
        return _read_hdf5_model(path, weights_only=True)
    if os.path.isdir(path):
        return _read_folder(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_hdf5_model(path)


def _read_folder(path: str) -> dict[str, Any]:
    metadata = os.path.join(path, "keras_metadata.pb")
    if os.path.exists(metadata):
        with open(metadata, "rb") as handle:
            return _answer("2", handle.read())
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        raise _Refused(
            "a SavedModel without Keras metadata (e.g. from Keras 3 `model.export()`) "
            "holds no Keras model to rewrite; use the `.keras` file"
        )
    raise _Refused("a folder that is not a SavedModel")


def _read_zip(path: str) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "metadata.json" not in names or "config.json" not in names:
            raise _Refused("not a Keras model file (a zip file without metadata.json and config.json)")
        for name in names:
            data = archive.read(name)  # checks the CRC of every member
            if name.endswith(".h5"):
                import h5py

                with h5py.File(io.BytesIO(data), "r") as handle:
                    _read_every_object(handle)
        metadata = json.loads(archive.read("metadata.json"))
        config = archive.read("config.json")
    json.loads(config)
    return _answer(str(metadata.get("keras_version", "3")).split(".")[0], config)


def _read_hdf5_model(path: str, weights_only: bool = False) -> dict[str, Any]:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise _Refused("not a Keras model file (.keras, .h5 or SavedModel folder)") from None
    with handle:
        _read_every_object(handle)
        version = handle.attrs.get("keras_version", b"2")
        config = handle.attrs.get("model_config")
    if config is None and weights_only:
        return {"generation": _text(version).split(".")[0], "carries_code": False}
    if config is None:
        raise _Refused(
            "an HDF5 file of weights only, without a model config; with the Keras 2 JSON config they go "
            "with: rnn-state-rewriter convert CONFIG.json OUTPUT.keras --weights FILE"
        )
    json.loads(config)
    return _answer(_text(version).split(".")[0], _text(config).encode())


def _read_every_object(handle: Any) -> None:
    """Reads every attribute and every dataset in an HDF5 file, the way loading would."""
    import h5py

    def read(name: str, item: Any) -> None:
        for key in item.attrs:
            item.attrs[key]
        if isinstance(item, h5py.Dataset):
            item[()]

    read("/", handle)
    handle.visititems(read)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _answer(generation: str, config: bytes) -> dict[str, Any]:
    if generation not in ("2", "3"):
        raise _Refused(f"made by an unknown Keras version {generation!r}")
    return {"generation": generation, "carries_code": bool(CODE_CLASSES.search(config))}


def _main(path: str, weights_only: bool) -> None:
    try:
        answer = read_metadata(path, weights_only)
    except Exception as error:  # whatever a corrupt file makes a reader raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if not isinstance(error, _Refused):
            message = f"not a readable Keras model file ({type(error).__name__}: {message})"
        answer = {"error": message, "traceback": traceback.format_exc()}
    sys.stdout.write(json.dumps(answer))


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies, however the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: the parent still kills it on exceptions
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        _die_with_parent(int(sys.argv[2]))
    _main(sys.argv[1], sys.argv[3:] == ["weights"])

"""Model files, untrusted input: loading them safely, importing custom objects, writing outputs atomically.

Before Keras loads a file, a child process reads every part of it under a
time limit (`rnn_state_rewriter._probe`): a corrupt file can make HDF5 hang
forever or crash, and readers raise exceptions of any type. Files are loaded
in Keras safe mode, and a file that carries Python code (a `Lambda` layer) is
refused unless `--unsafe` is given: tf-keras applies safe mode to `.keras`
files only, so the file's own config is checked first, whatever the format.
Outputs are written to a temporary path beside OUTPUT and renamed, so OUTPUT
is never partly written.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rnn_state_rewriter.cli.errors import CliError

UNKNOWN_OBJECT = re.compile(  # how Keras 3 and tf-keras say they met a class they do not know
    r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '?([\w.>]+)'?"
    r"|should have a `call` method. The RNN was passed: cell=(\w+)"
)


def load_model(
    path: str,
    keras_choice: str = "auto",
    unsafe: bool = False,
    custom_objects: Sequence[str] = (),
    read_timeout: float | None = None,
    keras2: bool = False,
) -> Any:
    """Loads an untrusted model file in safe mode, choosing the Keras generation from its metadata.

    The file is first read in a child process under `read_timeout` seconds
    (None: a limit that follows the file's size, `_probe.read_limit`); a
    Keras 2 file loaded with Keras 3 is converted (`rnn_state_rewriter.keras2`);
    `keras2` refuses any other file;
    `custom_objects` names modules or `.py` files to import before loading.
    """
    from rnn_state_rewriter._probe import ProbeError, probe

    if not os.path.exists(path):
        raise CliError(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise CliError(f"{path}: not readable")
    try:
        metadata = probe(path, read_timeout)
    except ProbeError as error:
        raise CliError(f"{path}: {error}", error.details) from None
    if keras2 and metadata.generation != "2":
        raise CliError(
            f"{path}: not a Keras 2 file (it was written by Keras {metadata.generation}); nothing to convert"
        )
    major = _generation_to_load_with(metadata.generation, keras_choice)
    if not unsafe and metadata.carries_code:
        raise carries_code(path)
    api = keras_api(major)
    objects = import_custom_objects(custom_objects)
    try:
        with quiet():
            if major == "3" and metadata.generation == "2":
                return _read_keras2(path, objects, unsafe)
            return api.models.load_model(path, safe_mode=not unsafe, custom_objects=objects)
    except CliError:
        raise
    except Exception as error:  # any failure of Keras to read the file
        raise CliError(load_failure(path, major, error, bool(custom_objects))) from error


def carries_code(path: str) -> CliError:
    return CliError(
        f"{path} carries Python code (a Lambda layer), which loading would run; "
        "refused. Pass --unsafe to load it if you trust the file."
    )


def _generation_to_load_with(recorded: str, choice: str) -> str:
    """`--keras`: auto loads a file with the generation that wrote it, or with Keras 3 where tf-keras is absent."""
    if choice != "auto":
        return choice
    if recorded == "2" and not _importable("tf_keras"):
        return "3"
    return recorded


def _importable(name: str) -> bool:
    """Whether a package is installed and not blocked (`sys.modules[name] = None`)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _read_keras2(path: str, objects: dict[str, Any], unsafe: bool) -> Any:
    """A Keras 2 `.h5` model file read into Keras 3 (`rnn_state_rewriter.keras2`)."""
    from rnn_state_rewriter.keras2 import read_keras2_model

    if os.path.isdir(path):
        raise CliError(
            f"{path}: a tf-keras SavedModel folder is read by tf-keras only "
            "(pip install 'rnn-state-rewriter[tf-keras]'); Keras 3 reads Keras 2 .h5 files"
        )
    try:
        return read_keras2_model(path, custom_objects=objects, safe_mode=not unsafe)
    except ValueError as error:
        if UNKNOWN_OBJECT.search(str(error)):
            raise
        raise CliError(f"{path}: cannot be read into Keras 3: {str(error).splitlines()[0]}") from error


def load_failure(path: str, major: str, error: Exception, had_custom_objects: bool) -> str:
    text = str(error).strip()
    unknown = UNKNOWN_OBJECT.search(text)
    if unknown:
        name = next(group for group in unknown.groups() if group)
        where = "none of the --custom-objects modules defines it; add" if had_custom_objects else "pass"
        return (
            f"{path}: the model uses {name!r}, which is not known here; {where} --custom-objects "
            "MODULE_OR_FILE naming the Python module or .py file that defines it"
        )
    first = text.splitlines()[0] if text else type(error).__name__
    return f"{path}: cannot be loaded as a Keras {major} model: {first}"


def import_custom_objects(sources: Sequence[str]) -> dict[str, Any]:
    """Imports each module (dotted name) or `.py` file; returns the classes and functions it defines.

    Importing runs the classes' registration decorators; the returned
    dictionary, passed as `custom_objects`, finds unregistered ones by name.
    """
    objects: dict[str, Any] = {}
    for source in sources:
        module = _import_source(source)
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            if defined_here and (inspect.isclass(value) or inspect.isfunction(value)) and not name.startswith("_"):
                objects[name] = value
    return objects


def _import_source(source: str) -> Any:
    try:
        if source.endswith(".py") or os.sep in source:
            return _import_file(source)
        return importlib.import_module(source)
    except CliError:
        raise
    except Exception as error:  # whatever the user's module raises while it is imported
        first = (str(error).strip().splitlines() or [""])[0]
        raise CliError(f"--custom-objects {source}: cannot be imported: {type(error).__name__}: {first}") from error


def _import_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise CliError(f"--custom-objects {path}: no such file")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"--custom-objects {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)  # so that it can import its neighbours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silences Python warnings and the Python logs of TensorFlow and absl while Keras works."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def keras_api(major: str) -> Any:
    """The Keras package of a generation (`--keras` 3 or 2), with this package's classes registered for loading."""
    from rnn_state_rewriter.backend import adapter
    from rnn_state_rewriter.binding import bind
    from rnn_state_rewriter.generation import Generation

    generation = Generation.from_major(major)
    try:
        api = adapter(generation).keras_api
    except ImportError:
        raise CliError("this model needs tf-keras (Keras 2): pip install 'rnn-state-rewriter[tf-keras]'") from None
    bind(generation)  # done already by the import hook of `rnn_state_rewriter`; said here, where it matters
    return api


def save_atomically(model: Any, output: str, force: bool) -> None:
    """Saves a model to a temporary path beside `output`, then renames it into place."""
    from rnn_state_rewriter.backend import adapter_for

    extension = os.path.splitext(output)[1].lower()
    if extension not in (".keras", ".h5", ""):
        raise CliError(f"{output}: unknown model format {extension!r}; use .keras")
    if extension not in adapter_for(model, argument="model").SAVE_EXTENSIONS:
        raise CliError(f"{output}: Keras 3 models are saved as .keras files")

    def save(temporary: str) -> None:
        with quiet():
            if extension:
                model.save(temporary)
            else:
                model.save(temporary, save_format="tf")

    write_atomically(output, save)


def check_output(output: str, force: bool, extension: str = "", holds: str = "") -> None:
    """Refuses an output before any work: one not named `extension` (a file of what `holds`), one that
    exists without `--force`, or one whose folder does not exist."""
    if extension and os.path.splitext(output)[1].lower() != extension:
        raise CliError(f"{output}: {holds}; name it {extension}")
    if os.path.exists(output) and not force:
        raise CliError(f"{output}: exists; pass --force to replace it")
    check_folder(output)


def check_folder(output: str) -> str:
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise CliError(f"{output}: folder {folder} does not exist")
    return folder


def write_atomically(output: str, write: Callable[[str], None]) -> None:
    """Calls `write(temporary)` for a path beside `output`, then renames it to `output` (replacing it)."""
    extension = os.path.splitext(output)[1].lower()
    temporary = os.path.join(check_folder(output), f".{os.path.basename(output)}.tmp-{os.getpid()}{extension}")
    try:
        write(temporary)
        if os.path.isdir(temporary) and os.path.exists(output):
            old = temporary + ".old"
            os.replace(output, old)
            os.replace(temporary, output)
            _remove(old)
        else:
            os.replace(temporary, output)
    except Exception as error:
        raise CliError(f"{output}: could not be written: {error}") from error
    finally:
        _remove(temporary)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)

"""The command line: `rnn-state-rewriter add | inspect | export | demo`.

Model files are untrusted input. Before Keras loads one, a child process
reads every part of it under a time limit (`rnn_state_rewriter._probe`): a
corrupt file can make HDF5 hang forever or crash, and readers raise
exceptions of any type. Every failure ends in one line on stderr and exit
status 1 (`--debug` adds the traceback); nothing is written and the input is
never changed. Files are loaded in Keras safe mode, and a file that carries
Python code (a `Lambda` layer) is refused unless `--unsafe` is given: tf-keras
applies safe mode to `.keras` files only, so the file's own config is checked
first, whatever the format. Outputs are written to a temporary path beside
OUTPUT and renamed, so OUTPUT is never partly written.

Importing this module imports neither Keras nor TensorFlow: `main()` first
keeps TensorFlow's start-up log lines off the terminal (it sets
`TF_CPP_MIN_LOG_LEVEL=2` unless the user set it), then imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

PROG = "rnn-state-rewriter"
UNKNOWN_OBJECT = re.compile(  # how Keras 3 and tf-keras say they met a class they do not know
    r"Could not locate (?:class|function) '([^']+)'|Unknown \w+: '?([\w.>]+)'?"
    r"|should have a `call` method. The RNN was passed: cell=(\w+)"
)


class CliError(Exception):
    """A failure explained in one line; exit status 1. `details`: more for `--debug`."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


# ---------------------------------------------------------------- model files


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
        raise _carries_code(path)
    api = _keras_api(major)
    objects = import_custom_objects(custom_objects)
    try:
        with _quiet():
            if major == "3" and metadata.generation == "2":
                return _read_keras2(path, objects, unsafe)
            return api.models.load_model(path, safe_mode=not unsafe, custom_objects=objects)
    except CliError:
        raise
    except Exception as error:  # any failure of Keras to read the file
        raise CliError(_load_failure(path, major, error, bool(custom_objects))) from error


def _carries_code(path: str) -> CliError:
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


def _load_failure(path: str, major: str, error: Exception, had_custom_objects: bool) -> str:
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
def _quiet() -> Iterator[None]:
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


def _keras_api(major: str) -> Any:
    """The Keras package of a generation (`--keras` 3 or 2), with this package's classes registered for loading."""
    from rnn_state_rewriter.backend import adapter
    from rnn_state_rewriter.generation import Generation

    try:
        return adapter(Generation.from_major(major)).keras_api  # importing the seam's module registers them
    except ImportError:
        raise CliError("this model needs tf-keras (Keras 2): pip install 'rnn-state-rewriter[tf-keras]'") from None


def save_atomically(model: Any, output: str, force: bool) -> None:
    """Saves a model to a temporary path beside `output`, then renames it into place."""
    from rnn_state_rewriter.backend import adapter_for

    extension = os.path.splitext(output)[1].lower()
    if extension not in (".keras", ".h5", ""):
        raise CliError(f"{output}: unknown model format {extension!r}; use .keras")
    if extension not in adapter_for(model, argument="model").SAVE_EXTENSIONS:
        raise CliError(f"{output}: Keras 3 models are saved as .keras files")

    def save(temporary: str) -> None:
        with _quiet():
            if extension:
                model.save(temporary)
            else:
                model.save(temporary, save_format="tf")

    _write_atomically(output, save)


def _check_folder(output: str) -> str:
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise CliError(f"{output}: folder {folder} does not exist")
    return folder


def _write_atomically(output: str, write: Callable[[str], None]) -> None:
    """Calls `write(temporary)` for a path beside `output`, then renames it to `output` (replacing it)."""
    extension = os.path.splitext(output)[1].lower()
    temporary = os.path.join(_check_folder(output), f".{os.path.basename(output)}.tmp-{os.getpid()}{extension}")
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


# ---------------------------------------------------------------- commands


def _format_shapes(layer: Any) -> str:
    from rnn_state_rewriter.states import flatten_shapes, state_shapes

    try:
        return " ".join(str(tuple(s)) for s in flatten_shapes(state_shapes(layer)))
    except ValueError:
        return "?"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def command_add(args: argparse.Namespace) -> int:
    if os.path.exists(args.output) and not args.force:
        raise CliError(f"{args.output}: exists; pass --force to replace it")
    model = _load(args, args.input)

    from rnn_state_rewriter.plan import make_plan
    from rnn_state_rewriter.rewrite import retrofit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            plan = make_plan(
                model, layers=args.layers, initializer=args.initializer, context=args.context, num_ids=args.num_ids
            )
            new_model, probe = retrofit(
                model,
                layers=args.layers,
                initializer=args.initializer,
                context=args.context,
                num_ids=args.num_ids,
                noise_stddev=args.noise_stddev,
                freeze_base=args.freeze_base,
                check="auto" if args.check == "auto" else args.check == "always",
                plan=plan,
            )
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from error
    save_atomically(new_model, args.output, args.force)
    print(_table([["layer", "kind", "states", "result"], *map(_decision_row, plan.decisions)]))
    if probe is not None:
        print(
            f"checked: at zero states the copy predicts what the original predicts on {probe.samples} "
            f"probe samples (largest change {probe.max_change:.3g})"
        )
    elif args.check == "auto":
        print(
            "not checked: every layer is one of Keras' own, with no custom code and no preprocessing "
            "state, so the copy is exact by construction (--check always runs the check anyway)"
        )
    print(f"wrote {args.output}")
    return 0


def _decision_row(decision: Any) -> list[str]:
    """One row of the `add` table, as the rewrite's plan decided it."""
    path = decision.path if decision.call == 0 else f"{decision.path} (call {decision.call + 1})"
    shapes = " ".join(str(tuple(shape)) for shape in decision.state_shapes) or "-"
    if decision.action != "add":
        return [path, decision.kind, shapes, f"skipped: {decision.reason}"]
    notes = ["stateful: resets to the learned state"] if decision.stateful else []
    if decision.context:
        notes.append(f"one state per id of {decision.context}" if decision.num_ids else f"from {decision.context}")
    return [path, decision.kind, shapes, "rewritten" + (f" ({'; '.join(notes)})" if notes else "")]


def command_convert(args: argparse.Namespace) -> int:
    if os.path.splitext(args.output)[1].lower() != ".keras":
        raise CliError(f"{args.output}: the conversion writes a Keras 3 model; name it .keras")
    if os.path.exists(args.output) and not args.force:
        raise CliError(f"{args.output}: exists; pass --force to replace it")
    _check_folder(args.output)
    if args.input.lower().endswith(".json"):
        model = _keras2_json_and_weights(args)
    else:
        if args.weights:
            raise CliError("--weights goes with a JSON config as INPUT; a .h5 model file holds its weights")
        model = load_model(args.input, "3", args.unsafe, args.custom_objects or (), args.read_timeout, keras2=True)
    save_atomically(model, args.output, args.force)
    import numpy as np

    count = sum(int(np.prod(w.shape)) for w in model.weights)
    print(f"converted {args.input} to Keras 3: {len(model.layers)} layers, {count} weight values")
    print(f"wrote {args.output}")
    return 0


def _keras2_json_and_weights(args: argparse.Namespace) -> Any:
    """A model from a Keras 2 JSON config, with the weights of a Keras 2 `.h5` file."""
    from rnn_state_rewriter._probe import CODE_CLASSES, ProbeError, probe

    if not args.weights:
        raise CliError(f"{args.input}: a JSON config holds no weights; pass --weights WEIGHTS.h5")
    for path in (args.input, args.weights):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise CliError(f"{path}: no such readable file")
    try:
        if probe(args.weights, args.read_timeout, weights_only=True).generation != "2":
            raise CliError(f"{args.weights}: not written by Keras 2")
    except ProbeError as error:
        raise CliError(f"{args.weights}: {error}", error.details) from None
    with open(args.input, encoding="utf-8") as handle:
        text = handle.read()
    if not args.unsafe and CODE_CLASSES.search(text.encode()):
        raise _carries_code(args.input)
    _keras_api("3")
    from rnn_state_rewriter.keras2 import keras2_model_from_json, load_keras2_weights

    objects = import_custom_objects(args.custom_objects or ())
    try:
        with _quiet():
            model = keras2_model_from_json(text, custom_objects=objects, safe_mode=not args.unsafe)
            load_keras2_weights(model, args.weights)
    except Exception as error:  # any failure to read either file
        raise CliError(_load_failure(args.input, "3", error, bool(args.custom_objects))) from error
    return model


def command_inspect(args: argparse.Namespace) -> int:
    model = _load(args, args.model)

    import numpy as np

    import rnn_state_rewriter as rsr
    from rnn_state_rewriter.plan import recurrent_layers
    from rnn_state_rewriter.states import describe_kind, is_stateful

    try:
        found = recurrent_layers(model)
        learned = rsr.initial_states(model)
        maps = rsr.context_maps(model)
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from error
    if not found:
        raise CliError(f"{args.model}: the model has no recurrent layer")
    rows = [["layer", "kind", "states", "trainable initial state", "norms"]]
    for path, layer in found:
        values = learned.get(path)
        norms = " ".join(f"{float(np.linalg.norm(v)):.4g}" for v in values) if values else "-"
        kind = describe_kind(layer) + (" (stateful)" if is_stateful(layer) else "")
        state = ("yes, plus a context map" if path in maps else "yes") if values else "no"
        rows.append([path, kind, _format_shapes(layer), state, norms])
    print(_table(rows))
    return 0


def command_export(args: argparse.Namespace) -> int:
    if os.path.splitext(args.output)[1].lower() != ".tflite":
        raise CliError(f"{args.output}: the export is a TFLite flatbuffer; name it .tflite")
    if os.path.exists(args.output) and not args.force:
        raise CliError(f"{args.output}: exists; pass --force to replace it")
    _check_folder(args.output)
    model = _load(args, args.model)

    from rnn_state_rewriter.export import to_tflite

    try:
        with _quiet():
            flatbuffer = to_tflite(model, batch_size=args.batch_size, steps=args.steps)
    except (TypeError, ValueError, ImportError) as error:
        raise CliError(f"{args.model}: {error}") from error
    _write_atomically(args.output, lambda temporary: _write_bytes(temporary, flatbuffer))
    print(f"wrote {args.output} ({len(flatbuffer)} bytes; checked against Keras on random inputs within 1e-5)")
    return 0


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def command_demo(args: argparse.Namespace) -> int:
    try:
        from rnn_state_rewriter.demo import run_demo

        run_demo(output_dir=args.output_dir, epochs=args.epochs)
    except ImportError as error:  # matplotlib is missing
        raise CliError(str(error)) from error
    return 0


def _load(args: argparse.Namespace, path: str) -> Any:
    return load_model(path, args.keras, args.unsafe, args.custom_objects or (), args.read_timeout)


# ---------------------------------------------------------------- parser


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _common_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--debug", action="store_true", help="on failure, print the traceback (for bug reports)")


def _loading_options(sub: argparse.ArgumentParser, keras_choice: bool = True) -> None:
    if keras_choice:
        sub.add_argument(
            "--keras",
            choices=["auto", "3", "2"],
            default="auto",
            help="Keras generation to load with: 3 (Keras 3; Keras 2 .h5 files are converted), 2 (tf-keras), "
            "or auto (default): the one that wrote the file, Keras 3 where tf-keras is not installed",
        )
    sub.add_argument(
        "--unsafe",
        action="store_true",
        help="load files that carry Python code (Lambda layers); only for files you trust",
    )
    sub.add_argument(
        "--custom-objects",
        action="append",
        metavar="MODULE_OR_FILE",
        help="import this Python module (dotted name) or .py file, which defines the model's custom "
        "classes or functions, before loading; repeatable",
    )
    sub.add_argument(
        "--read-timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="time limit for reading the file, which a corrupt file can make hang (default: 10 s plus 1 s "
        "per 10 MB of the file)",
    )
    _common_options(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Give the recurrent layers of Keras models trainable initial states.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = commands.add_parser(
        "add",
        help="retrofit a saved model with trainable initial states",
        description="Load INPUT, give its recurrent layers trainable initial states "
        "(pretrained weights kept, predictions unchanged), save OUTPUT.",
    )
    add.add_argument("input", metavar="INPUT", help="model file: .keras, .h5 or SavedModel folder (tf-keras)")
    add.add_argument("output", metavar="OUTPUT", help="where to save: .keras (or .h5 / folder for tf-keras)")
    add.add_argument("--layers", nargs="+", metavar="NAME", help="rewrite only these recurrent layers")
    add.add_argument(
        "--initializer",
        default="zeros",
        metavar="NAME",
        help="initializer of the states (default: zeros, which keeps predictions)",
    )
    add.add_argument(
        "--noise-stddev",
        type=_non_negative_float,
        default=0.0,
        metavar="X",
        help="Gaussian noise on the states in training (default 0)",
    )
    add.add_argument(
        "--context",
        metavar="NAME",
        help="condition the states on the output of this model input or layer: floats (batch, features) "
        "add a learned map of them; integer ids (with --num-ids) pick one learned state per id",
    )
    add.add_argument(
        "--num-ids", type=_positive_int, metavar="N", help="how many ids the --context input holds (0 .. N-1)"
    )
    add.add_argument("--freeze-base", action="store_true", help="make every pre-existing weight non-trainable")
    add.add_argument(
        "--check",
        choices=["auto", "always", "never"],
        default="auto",
        help="compare the copy with the original on a probe batch: where its construction cannot vouch "
        "for it (auto, the default: subclassed models, custom layers, layers whose state is more than "
        "their variables), always, or never",
    )
    add.add_argument("--no-check", dest="check", action="store_const", const="never", help="the same as --check never")
    add.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    _loading_options(add)
    add.set_defaults(run=command_add)

    convert = commands.add_parser(
        "convert",
        help="read a Keras 2 model file into Keras 3",
        description="Read a Keras 2 (or tf.keras 2.x) .h5 model file, or a Keras 2 JSON config with "
        "--weights, into Keras 3 (any backend; TensorFlow not needed) with the same predictions, and save "
        "it as OUTPUT.keras.",
    )
    convert.add_argument("input", metavar="INPUT", help="Keras 2 .h5 model file, or .json config (with --weights)")
    convert.add_argument("output", metavar="OUTPUT", help="where to save the Keras 3 model: .keras")
    convert.add_argument("--weights", metavar="WEIGHTS", help="the .h5 weights of a JSON config")
    convert.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    _loading_options(convert, keras_choice=False)
    convert.set_defaults(run=command_convert)

    inspect_ = commands.add_parser(
        "inspect",
        help="list recurrent layers and their initial states",
        description="Print a table of MODEL's recurrent layers, their state shapes, "
        "whether they have trainable initial states and the norms of the learned ones.",
    )
    inspect_.add_argument("model", metavar="MODEL", help="model file: .keras, .h5 or SavedModel folder")
    _loading_options(inspect_)
    inspect_.set_defaults(run=command_inspect)

    export = commands.add_parser(
        "export",
        help="convert a model to a TFLite flatbuffer that keeps its learned initial states",
        description="Convert MODEL to TFLite (builtin ops, no unrolling) with a fixed batch size, run "
        "the TFLite interpreter on random inputs against Keras, and write OUTPUT only if they agree "
        "within 1e-5. Needs TensorFlow.",
    )
    export.add_argument("model", metavar="MODEL", help="model file: .keras, .h5 or SavedModel folder")
    export.add_argument("output", metavar="OUTPUT", help="the .tflite file to write")
    export.add_argument("--batch-size", type=_positive_int, default=1, metavar="N", help="fixed batch size (default 1)")
    export.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="T",
        help="fixed number of time steps (default: the model's own; variable if it has none)",
    )
    export.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    _loading_options(export)
    export.set_defaults(run=command_export)

    demo = commands.add_parser(
        "demo",
        help="train, retrofit and fine-tune a small model; write pictures",
        description="Train a small LSTM on a generated task, retrofit it in one line, "
        "check its predictions are unchanged, then fine-tune it with and without learned "
        "initial states for the same budget. Writes PNG pictures and the model to DIR.",
    )
    demo.add_argument("--output-dir", default="demo-output", metavar="DIR", help="default: demo-output")
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=12,
        metavar="N",
        help="epochs of pretraining and of each fine-tuning run (default 12)",
    )
    _common_options(demo)
    demo.set_defaults(run=command_demo)
    return parser


class _Interrupted(BaseException):
    """A signal that ends the command (SIGTERM, SIGHUP), raised where the command is, as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM and SIGHUP raise `_Interrupted`, so that cleanup runs on the way out.

    (Their default would end the process at once: a temporary file left beside
    the output, and no chance to stop the file reader.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise _Interrupted(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:  # `nohup` ignores SIGHUP: kept
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, 1 on failure, 2 on usage errors).

    Interrupted by Ctrl-C, SIGTERM or SIGHUP, it stops its file reader, removes
    what it was writing, says so in one line and returns 128 plus the signal's
    number (130 for Ctrl-C).

    Keeps TensorFlow's start-up log lines off the terminal unless the user set
    `TF_CPP_MIN_LOG_LEVEL`: this is the only place the package sets an
    environment variable, before anything imports TensorFlow.
    """
    capture = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    source, output = getattr(args, "input", getattr(args, "model", "")), getattr(args, "output", None)
    if output is not None and os.path.realpath(source) == os.path.realpath(output):
        parser.error("OUTPUT must differ from INPUT: the input file is never overwritten")
    logs: list[str] = []
    try:
        with _signals_interrupt(), _native_logs_captured(capture, logs):
            return int(args.run(args))
    except (KeyboardInterrupt, _Interrupted) as error:
        signum = error.signum if isinstance(error, _Interrupted) else signal.SIGINT
        print(f"{PROG}: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + int(signum)
    except CliError as error:
        _report(str(error), error, args.debug, logs)
    except Exception as error:  # a failure nobody foresaw still ends in one line
        text = (str(error).strip().splitlines() or [""])[0]
        message = f"unexpected {type(error).__name__}: {text} (rerun with --debug for the traceback)"
        _report(message, error, args.debug, logs)
    return 1


@contextlib.contextmanager
def _native_logs_captured(enabled: bool, logs: list[str]) -> Iterator[None]:
    """Sends what native code writes to stderr (TensorFlow's log lines) to `logs`; ours still shows.

    TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA, CPU features)
    and converter lines through absl before reading `TF_CPP_MIN_LOG_LEVEL`,
    so the variable alone does not silence them: file descriptor 2 is
    pointed at a temporary file while the command runs, and `sys.stderr` at
    the terminal.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    previous = sys.stderr
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        encoding = getattr(previous, "encoding", None) or "utf-8"
        sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding=encoding, errors="backslashreplace")
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = previous
            os.dup2(terminal, 2)
            os.close(terminal)
            log.seek(0)
            logs.append(log.read().decode(errors="replace"))


def _report(message: str, error: Exception, debug: bool, logs: list[str]) -> None:
    if debug:
        print("".join(logs).rstrip(), file=sys.stderr)
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        details = getattr(error, "details", "")
        if details:
            print(details.rstrip(), file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)

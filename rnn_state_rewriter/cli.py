"""The command line: `rnn-state-rewriter add | inspect | demo`.

Model files are loaded in Keras safe mode, and a file that carries Python code
(a `Lambda` layer) is refused unless `--unsafe` is given: tf-keras applies
safe mode to `.keras` files only, so the file's own config is checked first,
whatever the format. Outputs are written to a temporary path beside OUTPUT and
renamed, so OUTPUT is never partly written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

PROG = "rnn-state-rewriter"
CODE_CLASSES = re.compile(rb'"class_name":\s*"(Lambda|__lambda__)"')


class CliError(Exception):
    """A failure explained in one line; exit status 1."""


# ---------------------------------------------------------------- model files


def _read_config_bytes(path: str) -> tuple[str, bytes]:
    """The Keras generation ("3" or "2") recorded in a model file, and its config bytes."""
    if os.path.isdir(path):
        metadata = os.path.join(path, "keras_metadata.pb")
        if os.path.exists(metadata):
            with open(metadata, "rb") as handle:
                return "2", handle.read()
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            raise CliError(
                f"{path}: a SavedModel without Keras metadata (e.g. from Keras 3 "
                "`model.export()`) holds no Keras model to rewrite; use the `.keras` file"
            )
        raise CliError(f"{path}: a folder that is not a SavedModel")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                metadata = json.loads(archive.read("metadata.json"))
                config = archive.read("config.json")
        except (KeyError, ValueError, zipfile.BadZipFile) as error:
            raise CliError(f"{path}: not a Keras model file ({error})") from None
        return str(metadata.get("keras_version", "3")).split(".")[0], config
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version", b"2")
            config = handle.attrs.get("model_config")
    except OSError:
        raise CliError(f"{path}: not a Keras model file (.keras, .h5 or SavedModel folder)") from None
    if config is None:
        raise CliError(f"{path}: an HDF5 file without a model config (weights only?)")
    return _text(version).split(".")[0], _text(config).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_model(path: str, keras_choice: str = "auto", unsafe: bool = False) -> Any:
    """Loads a model file in safe mode, choosing the Keras generation from its metadata."""
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file or folder")
    if not os.access(path, os.R_OK):
        raise CliError(f"{path}: not readable")
    recorded, config = _read_config_bytes(path)
    major = recorded if keras_choice == "auto" else keras_choice
    if not unsafe and CODE_CLASSES.search(config):
        raise CliError(
            f"{path} carries Python code (a Lambda layer), which loading would run; "
            "refused. Pass --unsafe to load it if you trust the file."
        )
    api = _keras_api(major)
    try:
        with _quiet():
            return api.models.load_model(path, safe_mode=not unsafe)
    except Exception as error:  # any failure of Keras to read the file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CliError(f"{path}: cannot be loaded as a Keras {major} model: {first}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences Python warnings and TensorFlow's Python log while Keras reads a file."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _keras_api(major: str) -> Any:
    if major == "3":
        import keras

        return keras
    try:
        import tf_keras
    except ImportError:
        raise CliError("this model needs tf-keras (Keras 2): pip install 'rnn-state-rewriter[tf-keras]'") from None
    import rnn_state_rewriter._tf_keras  # noqa: F401  (registers the tf-keras layers)

    return tf_keras


def save_atomically(model: Any, output: str, force: bool) -> None:
    """Saves to a temporary path beside `output`, then renames it into place."""
    from rnn_state_rewriter.generation import Generation, generation_of

    extension = os.path.splitext(output)[1].lower()
    keras3 = generation_of(model) is Generation.KERAS3
    if extension not in (".keras", ".h5", ""):
        raise CliError(f"{output}: unknown model format {extension!r}; use .keras")
    if keras3 and extension != ".keras":
        raise CliError(f"{output}: Keras 3 models are saved as .keras files")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise CliError(f"{output}: folder {folder} does not exist")
    temporary = os.path.join(folder, f".{os.path.basename(output)}.tmp-{os.getpid()}{extension}")
    try:
        with _quiet():
            if extension:
                model.save(temporary)
            else:
                model.save(temporary, save_format="tf")
        if os.path.isdir(temporary):
            if os.path.exists(output) and force:
                old = temporary + ".old"
                os.replace(output, old)
                os.replace(temporary, output)
                _remove(old)
            else:
                os.replace(temporary, output)
        else:
            os.replace(temporary, output)
    except CliError:
        raise
    except Exception as error:
        raise CliError(f"{output}: could not be written: {error}") from None
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
    import rnn_state_rewriter as rsr
    from rnn_state_rewriter.rewrite import recurrent_layers
    from rnn_state_rewriter.states import describe_kind

    if os.path.exists(args.output) and not args.force:
        raise CliError(f"{args.output}: exists; pass --force to replace it")
    model = load_model(args.input, args.keras, args.unsafe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            new_model = rsr.add_trainable_initial_states(
                model,
                layers=args.layers,
                initializer=args.initializer,
                noise_stddev=args.noise_stddev,
                freeze_base=args.freeze_base,
            )
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from None
    before, after = rsr.initial_states(model), rsr.initial_states(new_model)
    selected = set(args.layers or [])
    rows = [["layer", "kind", "states", "result"]]
    for path, layer in recurrent_layers(model):
        if path in after and path not in before:
            result = "rewritten"
        elif path in before:
            result = "skipped: already has a trainable initial state"
        elif getattr(getattr(layer, "forward_layer", layer), "stateful", False):
            result = "skipped: stateful"
        elif selected and path not in selected and layer.name not in selected:
            result = "skipped: not selected"
        else:
            result = "skipped: its call passes initial_state"
        rows.append([path, describe_kind(layer), _format_shapes(layer), result])
    save_atomically(new_model, args.output, args.force)
    print(_table(rows))
    print(f"wrote {args.output}")
    return 0


def command_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    import rnn_state_rewriter as rsr
    from rnn_state_rewriter.rewrite import recurrent_layers
    from rnn_state_rewriter.states import describe_kind

    model = load_model(args.model, args.keras, args.unsafe)
    try:
        found = recurrent_layers(model)
        learned = rsr.initial_states(model)
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from None
    if not found:
        raise CliError(f"{args.model}: the model has no recurrent layer")
    rows = [["layer", "kind", "states", "trainable initial state", "norms"]]
    for path, layer in found:
        values = learned.get(path)
        norms = " ".join(f"{float(np.linalg.norm(v)):.4g}" for v in values) if values else "-"
        rows.append([path, describe_kind(layer), _format_shapes(layer), "yes" if values else "no", norms])
    print(_table(rows))
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from rnn_state_rewriter.demo import run_demo

    run_demo(output_dir=args.output_dir, epochs=args.epochs)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Give the recurrent layers of Keras models trainable initial states.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def loading_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--keras",
            choices=["auto", "3", "2"],
            default="auto",
            help="Keras generation to load with: auto reads it from the file (default)",
        )
        sub.add_argument(
            "--unsafe",
            action="store_true",
            help="load files that carry Python code (Lambda layers); only for files you trust",
        )

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
    add.add_argument("--freeze-base", action="store_true", help="make every pre-existing weight non-trainable")
    add.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    loading_options(add)
    add.set_defaults(run=command_add)

    inspect = commands.add_parser(
        "inspect",
        help="list recurrent layers and their initial states",
        description="Print a table of MODEL's recurrent layers, their state shapes, "
        "whether they have trainable initial states and the norms of the learned ones.",
    )
    inspect.add_argument("model", metavar="MODEL", help="model file: .keras, .h5 or SavedModel folder")
    loading_options(inspect)
    inspect.set_defaults(run=command_inspect)

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
    demo.set_defaults(run=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, 1 on failure, 2 on usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "add" and os.path.realpath(args.input) == os.path.realpath(args.output):
        parser.error("OUTPUT must differ from INPUT: the input file is never overwritten")
    try:
        return int(args.run(args))
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1

"""The command line's parser: its commands, their options, and the checks of option values."""

from __future__ import annotations

import argparse

from rnn_state_rewriter.cli.commands import command_add, command_convert, command_demo, command_export, command_inspect
from rnn_state_rewriter.cli.errors import PROG


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
    export.add_argument(
        "--streaming",
        action="store_true",
        help="a flatbuffer that runs one chunk at a time: signature 'step' (a chunk and the states to the "
        "outputs and the states after it) and 'start' (the context, if any, to the states a stream starts "
        "from); --steps is then the chunk's",
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

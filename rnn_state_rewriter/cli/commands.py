"""The commands: `add`, `convert`, `inspect`, `export`, `demo`; each takes the parsed arguments, returns its status."""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any

from rnn_state_rewriter.cli.errors import CliError
from rnn_state_rewriter.cli.files import (
    carries_code,
    check_output,
    import_custom_objects,
    keras_api,
    load_failure,
    load_model,
    quiet,
    save_atomically,
    write_atomically,
)


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
    check_output(args.output, args.force)
    model = _load(args, args.input)

    from rnn_state_rewriter.decide import make_plan
    from rnn_state_rewriter.options import RetrofitOptions
    from rnn_state_rewriter.rewrite import retrofit

    try:
        options = RetrofitOptions(
            layers=args.layers,
            initializer=args.initializer,
            context=args.context,
            num_ids=args.num_ids,
            noise_stddev=args.noise_stddev,
            freeze_base=args.freeze_base,
            check="auto" if args.check == "auto" else args.check == "always",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            plan = make_plan(model, options)
            new_model, probe = retrofit(model, options, plan)
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
    check_output(args.output, args.force, ".keras", "the conversion writes a Keras 3 model")
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
        raise carries_code(args.input)
    keras_api("3")
    from rnn_state_rewriter.keras2 import keras2_model_from_json, load_keras2_weights

    objects = import_custom_objects(args.custom_objects or ())
    try:
        with quiet():
            model = keras2_model_from_json(text, custom_objects=objects, safe_mode=not args.unsafe)
            load_keras2_weights(model, args.weights)
    except Exception as error:  # any failure to read either file
        raise CliError(load_failure(args.input, "3", error, bool(args.custom_objects))) from error
    return model


def command_inspect(args: argparse.Namespace) -> int:
    model = _load(args, args.model)

    import numpy as np

    import rnn_state_rewriter as rsr
    from rnn_state_rewriter.states import describe_kind, is_stateful
    from rnn_state_rewriter.walk import recurrent_layers

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
    check_output(args.output, args.force, ".tflite", "the export is a TFLite flatbuffer")
    model = _load(args, args.model)

    from rnn_state_rewriter.export import to_tflite

    try:
        with quiet():
            flatbuffer = to_tflite(model, batch_size=args.batch_size, steps=args.steps, streaming=args.streaming)
    except (TypeError, ValueError, ImportError) as error:
        raise CliError(f"{args.model}: {error}") from error
    write_atomically(args.output, lambda temporary: _write_bytes(temporary, flatbuffer))
    kind = "streaming signatures 'step' and 'start'; " if args.streaming else ""
    print(f"wrote {args.output} ({len(flatbuffer)} bytes; {kind}checked against Keras on random inputs within 1e-5)")
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

"""What a trainable initial state costs in training and inference.

Train step and predict time of LSTM, GRU and Bidirectional LSTM (256 units,
batch 64, 100 steps, 32 features) for the plain layer, the retrofitted model
(`add_trainable_initial_states`), `TrainableInitialStateRNN`, the
Dense-on-a-zero-input workaround of keras-team/keras#9797 (a reference: it too
passes a learned `initial_state`), zeros passed as `initial_state` with no
weights behind them (a control: a state computed at run time, before any is
learned), a second plain model built as the first (a control: the spread
between two identical models) and, under tf-keras,
`trainable-initial-state-rnn` 0.0.3 when installed. Each generation runs in
its own process (0.0.3 needs `TF_USE_LEGACY_KERAS=1`); Keras 3 runs once per
backend given with `--backend` (default: the one `KERAS_BACKEND` names, else
TensorFlow), each in its own process, and tf-keras runs with the TensorFlow
backend where TensorFlow is installed. On TensorFlow, Keras 3 runs a second
time with every model compiled with `jit_compile=True` (XLA; rows
`tensorflow XLA`), and so does tf-keras, whose LSTM and GRU layers XLA compiles
anew at every train step on the CPU: its XLA rows run the same computation as
generic `RNN` layers around `LSTMCell` and `GRUCell` (the layer column says
`as RNN(cell)`). On the CPU, Keras' default (`"auto"`) leaves XLA off, and
TensorFlow's default executor then runs the LSTM's gradient loop 4 to 8% slower
whenever its `initial_state` is computed at run time, a matter of the order
it picks for the loop's ops, not of work (the zeros control pays it too, and
`docs/investigations/process_spread.py` measures it over processes). XLA has
no such schedule: the cost that is the package's own is read there, and on
JAX and PyTorch.

PyTorch runs with glibc's malloc thresholds fixed (`_common.TORCH_MALLOC`):
Keras' pure-PyTorch RNN loops allocate 20 to 26 MB per step, and whether those
come back as fresh, page-faulting memory otherwise depends on the heap's
history, which varies from model to model by far more than 2%.
`--flush-denormal` measures PyTorch a second time with
`torch.set_flush_denormal(True)`, as TensorFlow and XLA flush subnormal numbers
on the CPU by default (`docs/investigations/torch_gru_cost.py` shows why
that matters here).

After a warm-up, every variant is timed once per round over interleaved rounds
(at least 31) in a shuffled order. Per row the table gives the median time and
its interquartile range, and the ratio to the plain layer: the median over
rounds of (variant time / plain time of the same round), with a 95% bootstrap
interval of that median, for the wall clock and for the process's CPU time.
A verdict compares the wall-clock interval with 1.02: within, above, or
unresolved where the interval straddles it. Three more layers are timed plain
and retrofitted only: a stateful LSTM (the retrofit wraps it, and it resets
to the learned state) and LSTMs whose states are conditioned on a context
input (one state per id of 100, or a map of 16 float features). The last line is
`overhead train=<ratio> predict=<ratio>` for the retrofitted Keras 3 LSTM on
the first backend given.

    python benchmarks/overhead.py            # the full run
    python benchmarks/overhead.py --quick    # a smoke run with small sizes
    python benchmarks/overhead.py --backend tensorflow jax torch --python torch=.venv-torch/bin/python
    python benchmarks/overhead.py --backend torch --python torch=.venv-torch/bin/python --flush-denormal
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

KINDS = ["LSTM", "GRU", "Bidirectional LSTM"]
# Rows of the plain layer against its retrofit only: a stateful LSTM (the retrofit wraps it, and it resets to
# the learned state), and LSTMs whose states are conditioned on a context input (one state per id of 100 ids,
# or a learned map of 16 float features; the plain model has the same input, unused).
STATEFUL, BY_ID, BY_FEATURES = "stateful LSTM", "LSTM, states by id", "LSTM, states from features"
EXTRA_KINDS = [STATEFUL, BY_ID, BY_FEATURES]
LIMIT = 1.02
PLAIN = "plain layer"
RETROFITTED = "retrofitted (add_trainable_initial_states)"
SECOND_PLAIN = "plain layer, a second copy (control)"
ZEROS = "zeros as initial_state (no weights)"
XLA = " XLA"  # appended to the backend of rows compiled with jit_compile=True
# tf-keras under XLA: its LSTM and GRU layers are compiled anew at every call on the CPU, so the rows run the
# same computation as generic RNN layers around cells, and the layer column says so.
AS_CELLS = " as RNN(cell)"
TF_KERAS_XLA = (
    "tf_keras on tensorflow XLA with its LSTM and GRU layers: tf-keras 2.21 compiles them anew at every train "
    "step on the CPU (1.5 to 2.6 s a step for an LSTM(16) or GRU(16) of 20 steps; its SimpleRNN, an LSTM with "
    "recurrent dropout and a generic RNN around an LSTMCell compile once), as their kernel is picked by a "
    "function TensorFlow swaps at run time; the rows 'as RNN(cell)' run the same computation as RNN(LSTMCell) "
    "and RNN(GRUCell)"
)
FLUSHED = "(FTZ)"  # the label of PyTorch rows run with subnormals flushed to zero


def measure(generation: str, quick: bool, rounds: int, flush: bool = False, jit: bool = False) -> list[dict]:
    """Times every variant of every kind in interleaved rounds; returns the raw times.

    `flush`: PyTorch flushes subnormal numbers to zero (`torch.set_flush_denormal`), set before PyTorch
    starts its worker threads, which keep the setting they start with. `jit`: every model is compiled with
    `jit_compile=True` (TensorFlow's XLA).
    """
    if flush:
        import torch

        torch.set_flush_denormal(True)
    import numpy as np

    if generation == "keras3":
        import keras as K
    else:
        import tensorflow as tf

        K = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1, as 0.0.3 needs
    from _common import (
        dense_on_zero_input,
        head_model,
        model_with_states,
        recurrent_layer,
        zeros_as_initial_state,
    )

    import rnn_state_rewriter as rsr

    units, batch, steps, features = (16, 8, 10, 4) if quick else (256, 64, 100, 32)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")

    cells = jit and generation == "tf_keras"  # see TF_KERAS_XLA
    label = AS_CELLS if cells else ""

    def recurrent(kind: str):
        return recurrent_layer(K, kind, units, cells)

    def model_from(body):
        return head_model(K, steps, features, body)

    def with_states(kind: str, source):
        return model_with_states(K, kind, units, steps, features, source, cells)

    Old = None
    if generation == "tf_keras" and importlib.util.find_spec("trainable_initial_state_rnn") is not None:
        from trainable_initial_state_rnn import TrainableInitialStateRNN as Old

    results = []
    for kind in KINDS[:1] if quick else KINDS:  # quick: the LSTM only
        K.utils.set_random_seed(0)
        plain = model_from(lambda t, kind=kind: recurrent(kind)(t))
        K.utils.set_random_seed(0)
        second = model_from(lambda t, kind=kind: recurrent(kind)(t))
        variants = {
            PLAIN: plain,
            SECOND_PLAIN: second,
            RETROFITTED: rsr.add_trainable_initial_states(plain),
            "TrainableInitialStateRNN": model_from(
                lambda t, kind=kind: rsr.TrainableInitialStateRNN(recurrent(kind))(t)
            ),
            "Dense on zero input (keras#9797)": with_states(kind, dense_on_zero_input),
            ZEROS: with_states(kind, zeros_as_initial_state),
        }
        if Old is not None:
            variants["trainable-initial-state-rnn 0.0.3"] = model_from(lambda t, kind=kind: Old(recurrent(kind))(t))
        if quick and jit:  # a smoke run compiles each model with XLA: the retrofit and the controls only
            variants = {name: variants[name] for name in (PLAIN, SECOND_PLAIN, RETROFITTED, ZEROS)}
        results += timed(K, generation, kind + label, variants, x, y, quick, rounds, flush, jit)
    for kind in EXTRA_KINDS[:1] if quick else EXTRA_KINDS:
        K.utils.set_random_seed(0)
        plain, inputs, options = extra_model(K, kind, units, batch, steps, features, cells)
        retrofitted = rsr.add_trainable_initial_states(plain, **options)
        variants = {PLAIN: plain, RETROFITTED: retrofitted}
        data = [x, *inputs] if inputs else x
        results += timed(K, generation, kind + label, variants, data, y, quick, rounds, flush, jit)
    return results


def extra_model(K, kind: str, units: int, batch: int, steps: int, features: int, cells: bool = False):
    """The plain model of an `EXTRA_KINDS` row, its extra inputs' data, and the retrofit's arguments."""
    import numpy as np
    from _common import recurrent_layer

    rng = np.random.default_rng(1)
    if kind == STATEFUL:
        inputs = K.Input(batch_shape=(batch, steps, features))
        model = K.Model(inputs, K.layers.Dense(1)(recurrent_layer(K, "LSTM", units, cells, stateful=True)(inputs)))
        return model, [], {}
    sequences = K.Input((steps, features))
    if kind == BY_ID:
        context = K.Input((), dtype="int32", name="context")
        data, options = rng.integers(0, 100, size=(batch,)).astype("int32"), {"context": "context", "num_ids": 100}
    else:
        context = K.Input((16,), name="context")
        data, options = rng.normal(size=(batch, 16)).astype("float32"), {"context": "context"}
    model = K.Model([sequences, context], K.layers.Dense(1)(recurrent_layer(K, "LSTM", units, cells)(sequences)))
    return model, [data], options


def timed(
    K, generation: str, kind: str, variants: dict, x, y, quick: bool, rounds: int, flush: bool, jit: bool = False
) -> list[dict]:
    """Times a train step and a prediction of every variant in interleaved rounds; one row each."""
    from _common import interleaved_times

    calls = {}
    backend = K.backend.backend() + (f" {FLUSHED}" if flush else "") + (XLA if jit else "")
    for name, model in variants.items():
        model.compile(K.optimizers.Adam(1e-3), "mse", **({"jit_compile": True} if jit else {}))
        try:
            for _ in range(1 if quick else 3):  # warm-up: tracing and first-call costs
                model.train_on_batch(x, y)
                model.predict_on_batch(x)
        except RuntimeError as error:  # Keras 3's own stateful layers do not train on PyTorch
            first = str(error).splitlines()[0][:160]
            return [{"note": f"{generation} on {backend}, {kind}, {name}: a train step fails ({first}); not timed"}]
        calls[f"{name}|train"] = lambda m=model: m.train_on_batch(x, y)
        calls[f"{name}|predict"] = lambda m=model: m.predict_on_batch(x)
    times = interleaved_times(calls, rounds)
    rows = []
    for name in variants:
        row = {"generation": generation, "backend": backend, "kind": kind, "variant": name}
        for phase in ("train", "predict"):
            for clock in ("wall", "cpu"):
                row[f"{phase}_{clock}"] = times[f"{name}|{phase}"][clock].tolist()
        rows.append(row)
    return rows


def run_generation(
    generation: str, backend: str, python: str, quick: bool, rounds: int, flush: bool = False, jit: bool = False
) -> list[dict]:
    """Runs `measure` for one generation on one backend in a child process and returns its rows."""
    from _common import child_env

    env = child_env(backend if generation == "keras3" else None, steady_heap=True)
    if generation == "tf_keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
    command = [python, __file__, "--generation", generation, "--rounds", str(rounds)]
    command += ["--quick"] if quick else []
    command += ["--flush-denormal"] if flush else []
    command += ["--jit"] if jit else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{generation} ({backend}) run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: list[dict], rounds: int, pythons: dict[str, str]) -> None:
    """Prints the table, a sentence on the headline row and the `overhead ...` line."""
    import numpy as np
    from _common import machine, paired_ratio, quartiles, table, verdict

    notes = [r["note"] for r in results if "note" in r]
    results = [r for r in results if "note" not in r]
    print(f"Machine: {machine(pythons)}")
    print(
        f"{rounds} interleaved rounds. ms: median [interquartile range] of the wall clock. ratio: median over "
        "rounds of variant / plain layer of the same round [95% bootstrap interval], wall clock and process "
        f"CPU time. verdict: the wall-clock interval against {LIMIT}."
        + (
            f" torch {FLUSHED}: PyTorch with torch.set_flush_denormal(True), as TensorFlow and XLA flush "
            "subnormal numbers on the CPU by default."
            if any(r["backend"].endswith(FLUSHED) for r in results)
            else ""
        )
        + "\n"
    )
    plain = {(r["generation"], r["backend"], r["kind"]): r for r in results if r["variant"] == PLAIN}
    rows, headline = [], {}
    for r in results:
        base = plain[(r["generation"], r["backend"], r["kind"])]
        row = [r["generation"], r["backend"], r["kind"], r["variant"]]
        verdicts = []
        for phase in ("train", "predict"):
            q1, median, q3 = quartiles(np.array(r[f"{phase}_wall"]) * 1000)
            row.append(f"{median:.1f} [{q1:.1f}, {q3:.1f}]")
            for clock in ("wall", "cpu"):
                ratio, low, high = paired_ratio(np.array(r[f"{phase}_{clock}"]), np.array(base[f"{phase}_{clock}"]))
                row.append(f"{ratio:.3f} [{low:.3f}, {high:.3f}]")
                if clock == "wall":
                    verdicts.append(verdict(low, high, LIMIT) if r is not base else "-")
                    if r["generation"] == "keras3" and r["kind"] == "LSTM" and r["variant"] == RETROFITTED:
                        headline.setdefault(r["backend"], {})[phase] = (ratio, low, high)
        rows.append(row + verdicts)
    header = ["Keras", "backend", "layer", "variant", "train ms", "train ratio", "train CPU ratio"]
    header += ["predict ms", "predict ratio", "predict CPU ratio", "train verdict", "predict verdict"]
    print(table(header, rows))
    for note in notes:
        print(f"\nNot measured: {note}.")
    print()
    for backend, ratios in headline.items():
        train, predict = ratios["train"], ratios["predict"]
        schedule = backend == "tensorflow" and f"tensorflow{XLA}" in headline
        print(
            f"Retrofitted Keras 3 LSTM against the plain layer on {backend}: train {train[0]:.3f} "
            f"[{train[1]:.3f}, {train[2]:.3f}], predict {predict[0]:.3f} [{predict[1]:.3f}, {predict[2]:.3f}]"
            + (
                " (TensorFlow's default executor: compare with the zeros control, which pays the same schedule, "
                "and the second copy, the spread between identical models; the package's own cost is the XLA row)."
                if schedule
                else "."
            )
        )
    # the headline reads where the cost is the package's own: XLA rather than TensorFlow's default executor
    ours = [b for b in headline if not (b == "tensorflow" and f"tensorflow{XLA}" in headline)]
    first = headline[ours[0]]
    print(f"overhead train={first['train'][0]:.3f} predict={first['predict'][0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, few rounds, the LSTM only (under XLA: the retrofit and the controls) (a smoke run)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 31, quick 3)")
    parser.add_argument("--generation", choices=["keras3", "tf_keras"], help=argparse.SUPPRESS)
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)  # a child: jit_compile=True
    from _common import backend_arguments, backend_pythons, generations_to_measure

    backend_arguments(parser)
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="measure PyTorch a second time with torch.set_flush_denormal(True), rows labelled "
        f"'torch {FLUSHED}' (TensorFlow and XLA flush subnormal numbers on the CPU by default; "
        "see docs/investigations/torch_gru_cost.py)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 31)
    if args.generation:  # a child process: measure one generation, print JSON
        print(json.dumps(measure(args.generation, args.quick, rounds, args.flush_denormal, args.jit)))
        return
    pythons = backend_pythons(args.backend, args.python)
    if args.flush_denormal and "torch" not in args.backend:
        parser.error("--flush-denormal concerns PyTorch: add torch to --backend")
    results = []
    for generation, backend in generations_to_measure(args.backend, pythons):
        results += run_generation(generation, backend, pythons[backend], args.quick, rounds)
        if backend == "tensorflow":  # again under XLA: no executor schedule there
            results += run_generation(generation, backend, pythons[backend], args.quick, rounds, jit=True)
            if generation == "tf_keras":
                results.append({"note": TF_KERAS_XLA})
    if args.flush_denormal:
        results += run_generation("keras3", "torch", pythons["torch"], args.quick, rounds, flush=True)
    report(results, rounds, pythons)


if __name__ == "__main__":
    main()

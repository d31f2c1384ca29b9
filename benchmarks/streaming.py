"""What one new chunk of a stream costs: the streaming flatbuffer against re-running the whole window.

An application that runs a recurrent model on a stream without carrying its
state re-runs the model on everything seen so far each time a chunk arrives;
with `to_tflite(model, streaming=True)` it runs the new chunk only, from the
states the last call returned. This program times both on the TFLite
interpreter (the same model, retrofitted with learned states, Keras 3 on
TensorFlow; batch of one): one `step` of a chunk of CHUNK steps, and one invoke
of the whole-sequence flatbuffer on a window of W steps, for windows growing
with the stream. Calls run in interleaved rounds (each round calls everything
once, in a shuffled order); the table gives the median time of each and the
median over rounds of the ratio step / window with a 95% bootstrap interval.
The ratio should fall as the window grows: the step's cost stays that of one
chunk.

    python benchmarks/streaming.py            # the full run
    python benchmarks/streaming.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import interleaved_times, machine, paired_ratio, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model, short windows, few rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 51, quick 5)")
    parser.add_argument("--chunk", type=int, default=16, help="time steps of one chunk (default 16)")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 51)
    units, features = (16, 4) if args.quick else (128, 32)
    windows = [args.chunk, 4 * args.chunk] if args.quick else [args.chunk * k for k in (1, 4, 16, 64, 256)]

    import keras
    import tensorflow as tf

    import rnn_state_rewriter as rsr

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, features), name="x")
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm")(inputs)
    x = keras.layers.GRU(units, return_sequences=True, name="gru")(x)
    plain = keras.Model(inputs, keras.layers.Dense(1, name="head")(x))
    model = rsr.add_trainable_initial_states(plain, initializer="random_normal")

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        streaming = tf.lite.Interpreter(model_content=rsr.to_tflite(model, streaming=True, steps=args.chunk))
        whole = tf.lite.Interpreter(model_content=rsr.to_tflite(model))
    step = streaming.get_signature_runner("step")
    states = streaming.get_signature_runner("start")()
    rng = np.random.default_rng(0)
    chunk = rng.normal(size=(1, args.chunk, features)).astype("float32")
    interpreters = {}
    for window in windows:  # one interpreter per window length, allocated once
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            interpreter = tf.lite.Interpreter(model_content=rsr.to_tflite(model, steps=window))
        interpreter.allocate_tensors()
        data = rng.normal(size=(1, window, features)).astype("float32")
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
        interpreters[window] = interpreter
    del whole

    calls = {"step": lambda: step(x0=chunk, **states)}
    calls.update({f"window {w}": interpreters[w].invoke for w in windows})
    for call in calls.values():  # warm-up
        call()
    times = interleaved_times(calls, rounds)

    rows = []
    for window in windows:
        name = f"window {window}"
        median, low, high = paired_ratio(times["step"]["wall"], times[name]["wall"])
        rows.append(
            [
                str(window),
                f"{np.median(times['step']['wall']) * 1e3:.3f}",
                f"{np.median(times[name]['wall']) * 1e3:.3f}",
                f"{median:.3g} [{low:.3g}, {high:.3g}]",
            ]
        )
    print(f"Machine: {machine()}")
    print(
        f"TFLite interpreter, Keras 3 on TensorFlow; LSTM({units}) -> GRU({units}) -> Dense(1) on {features} features, "
        f"retrofitted; batch 1; chunk of {args.chunk} steps; {rounds} interleaved rounds, wall clock. ratio: median "
        "over rounds of step / window of the same round [95% bootstrap interval]."
    )
    print()
    print(
        table(
            ["window (steps seen)", "step of one chunk ms", "whole window ms", "ratio step / window [95% interval]"],
            rows,
        )
    )
    first = paired_ratio(times["step"]["wall"], times[f"window {windows[0]}"]["wall"])[0]
    last = paired_ratio(times["step"]["wall"], times[f"window {windows[-1]}"]["wall"])[0]
    print(f"streaming chunk/window first={first:.3g} last={last:.3g}")


if __name__ == "__main__":
    main()

"""What a trainable initial state costs in training and inference.

Train step and predict time of LSTM, GRU and Bidirectional LSTM (256 units,
batch 64, 100 steps, 32 features) for the plain layer, the retrofitted model
(`add_trainable_initial_states`), `TrainableInitialStateRNN`, the
Dense-on-a-zero-input workaround of keras-team/keras#9797 and, under tf-keras,
`trainable-initial-state-rnn` 0.0.3 when installed. Each generation runs in its
own process (0.0.3 needs `TF_USE_LEGACY_KERAS=1`). After a warm-up, every
variant is timed once per round over interleaved rounds; the table gives
medians and their ratio to the plain layer. The last line is
`overhead train=<ratio> predict=<ratio>` for the retrofitted Keras 3 LSTM.

    python benchmarks/overhead.py            # the full run
    python benchmarks/overhead.py --quick    # a smoke run with small sizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

KINDS = ["LSTM", "GRU", "Bidirectional LSTM"]


def measure(generation: str, quick: bool, repeats: int) -> list[dict]:
    import numpy as np

    if generation == "keras3":
        import keras as K
    else:
        import tensorflow as tf

        K = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1, as 0.0.3 needs
    from _common import interleaved_medians

    import rnn_state_rewriter as rsr

    units, batch, steps, features = (16, 8, 10, 4) if quick else (256, 64, 100, 32)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")

    def recurrent(kind: str):
        if kind == "LSTM":
            return K.layers.LSTM(units)
        if kind == "GRU":
            return K.layers.GRU(units)
        return K.layers.Bidirectional(K.layers.LSTM(units))

    def model_from(layer_fn):
        inputs = K.Input((steps, features))
        return K.Model(inputs, K.layers.Dense(1)(layer_fn(inputs)))

    def dense_workaround(kind: str):
        def build(inputs):
            # keras-team/keras#9797: a Dense layer on a zero input learns the state (its bias).
            zeros = K.layers.Lambda(lambda t: t[:, 0, :1] * 0.0)(inputs)
            count = 4 if kind == "Bidirectional LSTM" else (2 if kind == "LSTM" else 1)
            states = [K.layers.Dense(units)(zeros) for _ in range(count)]
            return recurrent(kind)(inputs, initial_state=states)

        return model_from(build)

    try:
        if generation != "tf_keras":
            raise ImportError
        from trainable_initial_state_rnn import TrainableInitialStateRNN as Old
    except ImportError:
        Old = None

    results = []
    for kind in KINDS[:1] if quick else KINDS:  # quick: the LSTM only
        K.utils.set_random_seed(0)
        plain = model_from(lambda t, kind=kind: recurrent(kind)(t))
        variants = {
            "plain layer": plain,
            "retrofitted (add_trainable_initial_states)": rsr.add_trainable_initial_states(plain),
            "TrainableInitialStateRNN": model_from(
                lambda t, kind=kind: rsr.TrainableInitialStateRNN(recurrent(kind))(t)
            ),
            "Dense on zero input (keras#9797)": dense_workaround(kind),
        }
        if Old is not None:
            variants["trainable-initial-state-rnn 0.0.3"] = model_from(lambda t, kind=kind: Old(recurrent(kind))(t))
        calls = {}
        for name, model in variants.items():
            model.compile(K.optimizers.Adam(1e-3), "mse")
            for _ in range(1 if quick else 3):  # warm-up: tracing and first-call costs
                model.train_on_batch(x, y)
                model.predict_on_batch(x)
            calls[(name, "train")] = lambda m=model: m.train_on_batch(x, y)
            calls[(name, "predict")] = lambda m=model: m.predict_on_batch(x)
        medians = interleaved_medians({f"{n}|{p}": c for (n, p), c in calls.items()}, repeats)
        for name in variants:
            results.append(
                {
                    "generation": generation,
                    "kind": kind,
                    "variant": name,
                    "train": medians[f"{name}|train"],
                    "predict": medians[f"{name}|predict"],
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 21, quick 2)")
    parser.add_argument("--generation", choices=["keras3", "tf_keras"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 21)
    if args.generation:  # a child process: measure one generation, print JSON
        print(json.dumps(measure(args.generation, args.quick, repeats)))
        return

    from _common import machine, table

    results = []
    for generation in ("keras3", "tf_keras"):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        if generation == "tf_keras":
            env["TF_USE_LEGACY_KERAS"] = "1"
        command = [sys.executable, __file__, "--generation", generation, "--repeats", str(repeats)]
        command += ["--quick"] if args.quick else []
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{generation} run failed:\n{done.stderr[-3000:]}")
        results += json.loads(done.stdout.strip().splitlines()[-1])

    print(f"Machine: {machine()}")
    print(f"Medians of {repeats} interleaved rounds; ratio = variant / plain layer of the same kind and generation.\n")
    plain = {(r["generation"], r["kind"]): r for r in results if r["variant"] == "plain layer"}
    rows = []
    for r in results:
        base = plain[(r["generation"], r["kind"])]
        rows.append(
            [
                r["generation"],
                r["kind"],
                r["variant"],
                f"{r['train'] * 1000:.1f}",
                f"{r['train'] / base['train']:.3f}",
                f"{r['predict'] * 1000:.1f}",
                f"{r['predict'] / base['predict']:.3f}",
            ]
        )
    header = ["Keras", "layer", "variant", "train ms", "train ratio", "predict ms", "predict ratio"]
    print(table(header, rows))
    headline = next(
        r for r in results if r["generation"] == "keras3" and r["kind"] == "LSTM" and r["variant"].startswith("retro")
    )
    base = plain[("keras3", "LSTM")]
    print(
        f"\noverhead train={headline['train'] / base['train']:.3f} predict={headline['predict'] / base['predict']:.3f}"
    )


if __name__ == "__main__":
    main()

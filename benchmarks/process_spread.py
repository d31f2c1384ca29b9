"""How much a train-step ratio moves from one process to the next.

`overhead.py` gives each ratio a bootstrap interval over the rounds of one
process. On Keras 3's TensorFlow backend the LSTM's ratios were found to move
between processes by far more than that interval (the retrofitted LSTM 1.007
in one run, 1.114 in another; zeros passed as `initial_state`, which learn
nothing, 0.905 and 1.119). This program runs the same measurement in several
fresh processes: the plain LSTM (or GRU), the retrofitted one, zeros passed as
`initial_state` and the Dense-on-a-zero-input workaround (keras-team/keras#9797),
interleaved rounds of `train_on_batch` (`--layer LSTM`, `GRU` or `Bidirectional`
(LSTM); 256 units, batch 64, 100 steps, 32 features) in each process. Per process and variant it prints the median
per-round CPU time ratio to the plain layer; then, over processes, their median
and range.

    python benchmarks/process_spread.py [--processes 5] [--rounds 21] [--layer LSTM|GRU|Bidirectional]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

UNITS, BATCH, STEPS, FEATURES = 256, 64, 100, 32
VARIANTS = ["retrofitted", "zeros as initial_state", "Dense on zero input"]


def measure(layer: str, rounds: int) -> dict[str, float]:
    """One process: the median per-round CPU time ratio of each variant to the plain layer."""
    import keras as K
    import numpy as np
    from _common import interleaved_times

    import rnn_state_rewriter as rsr

    count = {"LSTM": 2, "GRU": 1, "Bidirectional": 4}[layer]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    K.utils.set_random_seed(0)

    def model(states=None):
        inputs = K.Input((STEPS, FEATURES))
        initial = states(inputs) if states else None
        if layer == "Bidirectional":
            recurrent = K.layers.Bidirectional(K.layers.LSTM(UNITS))
        else:
            recurrent = getattr(K.layers, layer)(UNITS)
        return K.Model(inputs, K.layers.Dense(1)(recurrent(inputs, initial_state=initial)))

    def zeros(inputs):
        return [K.layers.Lambda(lambda t: K.ops.repeat(t[:, 0, :1] * 0.0, UNITS, axis=1))(inputs) for _ in range(count)]

    def dense(inputs):
        zero = K.layers.Lambda(lambda t: t[:, 0, :1] * 0.0)(inputs)
        return [K.layers.Dense(UNITS)(zero) for _ in range(count)]

    plain = model()
    models = {"plain": plain, VARIANTS[0]: rsr.add_trainable_initial_states(plain)}
    models.update({VARIANTS[1]: model(zeros), VARIANTS[2]: model(dense)})
    for m in models.values():
        m.compile(K.optimizers.Adam(1e-3), "mse")
        for _ in range(3):
            m.train_on_batch(x, y)
    times = interleaved_times({name: lambda m=m: m.train_on_batch(x, y) for name, m in models.items()}, rounds)
    base = times["plain"]["cpu"]
    return {name: float(np.median(times[name]["cpu"] / base)) for name in VARIANTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=5, help="fresh processes (default 5)")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds per process (default 21)")
    parser.add_argument(
        "--layer", choices=["LSTM", "GRU", "Bidirectional"], default="LSTM", help="Bidirectional: of LSTM"
    )
    parser.add_argument("--quick", action="store_true", help="2 processes of 2 rounds (a smoke run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    from _common import backend_arguments, backend_pythons, child_env, machine, table

    backend_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.processes, args.rounds = 2, 2
    if args.child:
        print(json.dumps(measure(args.layer, args.rounds)))
        return
    import numpy as np

    pythons = backend_pythons(args.backend, args.python)
    rows = []
    for backend in args.backend:
        per_process = []
        for _ in range(args.processes):
            command = [pythons[backend], __file__, "--child", "--layer", args.layer, "--rounds", str(args.rounds)]
            done = subprocess.run(command, env=child_env(backend), capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"a {backend} process failed:\n{done.stderr[-3000:]}")
            per_process.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for name in VARIANTS:
            ratios = np.array([p[name] for p in per_process])
            each = ", ".join(f"{r:.3f}" for r in ratios)
            spread = f"{np.median(ratios):.3f} [{ratios.min():.3f}, {ratios.max():.3f}]"
            rows.append([backend, args.layer, name, each, spread])
    print(f"Machine: {machine(pythons)}")
    print(
        f"{args.processes} processes of {args.rounds} interleaved rounds each; per process, the median of per-round "
        "CPU time ratios to the plain layer; then their median [lowest, highest] over processes.\n"
    )
    print(table(["backend", "layer", "variant", "each process", "median [range]"], rows))


if __name__ == "__main__":
    main()

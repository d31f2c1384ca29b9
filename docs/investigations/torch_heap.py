"""Why the PyTorch train steps are timed with glibc's malloc thresholds fixed.

Keras' pure-PyTorch RNN loop (what runs on the CPU) allocates and frees
gradients of 20 to 26 MB at every time step. glibc's malloc serves blocks
above a threshold with fresh `mmap` pages, which fault in when first touched,
and it moves that threshold, and the heap's trim threshold, as the program
runs. Whether those blocks fault in again at every step then depends on each
model's allocation history, not on the model.

This program builds three models of one LSTM (256 units, batch 64, 100 steps,
32 features, as in `overhead.py`): the plain layer, its retrofit, and zeros
passed as `initial_state`, and gives, per model, the minor page faults of a
train step and its median wall-clock time, in two child processes: glibc's
defaults, and the thresholds fixed as `overhead.py` and `torch_gru_cost.py` run
them (`_common.TORCH_MALLOC`).

    KERAS_BACKEND=torch python docs/investigations/torch_heap.py [--steps 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# the benchmarks' shared helpers (_common.py)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))
os.environ.setdefault("KERAS_BACKEND", "torch")

UNITS, BATCH, STEPS, FEATURES = 256, 64, 100, 32


def measure(steps: int) -> dict[str, list[float]]:
    """Per model: minor page faults per train step and the median wall-clock ms of one, after 3 warm-up steps."""
    import resource
    import time

    import keras as K
    import numpy as np
    from _common import head_model, model_with_states, recurrent_layer, zeros_as_initial_state

    import rnn_state_rewriter as rsr

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    K.utils.set_random_seed(0)
    plain = head_model(K, STEPS, FEATURES, lambda t: recurrent_layer(K, "LSTM", UNITS)(t))
    zeros = model_with_states(K, "LSTM", UNITS, STEPS, FEATURES, zeros_as_initial_state)
    models = {"plain LSTM": plain, "retrofitted": rsr.add_trainable_initial_states(plain), "zeros": zeros}
    for model in models.values():
        model.compile(K.optimizers.Adam(1e-3), "mse")
        for _ in range(3):
            model.train_on_batch(x, y)
    found = {}
    for name, model in models.items():
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
        found[name] = [per_step, float(np.median(times) * 1000)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="train steps per model (default 7, quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 steps per model (a smoke run; the sizes stay)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.quick else 7)
    if args.child:
        print(json.dumps(measure(args.steps)))
        return
    import keras
    from _common import TORCH_MALLOC, child_env, machine, table

    if keras.backend.backend() != "torch":
        sys.exit("torch_heap.py measures the PyTorch backend: run it with KERAS_BACKEND=torch")
    fixed = ", ".join(f"{name}={value}" for name, value in TORCH_MALLOC.items())
    settings = {"glibc's defaults": False, f"fixed ({fixed})": True}
    rows = []
    for label, steady in settings.items():
        command = [sys.executable, __file__, "--child", "--steps", str(args.steps)]
        env = child_env("torch", steady_heap=steady)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"the run with {label} failed:\n{done.stderr[-3000:]}")
        for name, (faults, ms) in json.loads(done.stdout.strip().splitlines()[-1]).items():
            rows.append([label, name, f"{faults:,.0f}", f"{ms:.1f}"])
    print(f"Machine: {machine()}")
    print(
        f"LSTM({UNITS}), batch {BATCH}, {STEPS} steps, {FEATURES} features; after 3 warm-up train steps, "
        f"{args.steps} more per model, one model after the other.\n"
    )
    print(table(["malloc thresholds", "model", "minor page faults per train step", "median ms"], rows))


if __name__ == "__main__":
    main()

"""Where the PyTorch backend's GRU train step pays for a learned initial state.

`overhead.py` finds that, on Keras 3's PyTorch backend (CPU), every way of
learning a GRU's initial state (the retrofit, `TrainableInitialStateRNN`, the
Dense workaround) costs the train step about 6%, while zeros passed as
`initial_state` cost nothing. This program narrows it down, in one process,
over interleaved rounds (GRU(256), batch 64, 100 steps, 32 features):

1. Keras train steps: the plain model, the retrofitted one, the retrofitted one
   with its broadcast state copied to a contiguous tensor, and zeros passed as
   `initial_state`.
2. Keras' own pure-PyTorch GRU loop (`_fallback_gru`, what the layer runs on
   the CPU) forward and backward, started from zeros or from a broadcast
   trainable state.

Each row gives the median process CPU time and the median per-round ratio to
its first row with a 95% bootstrap interval.

    KERAS_BACKEND=torch python benchmarks/torch_gru_cost.py [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_BACKEND", "torch")

UNITS, BATCH, STEPS, FEATURES = 256, 64, 100, 32


def keras_steps(x, y) -> dict:
    """The train steps of part 1, as calls."""
    import keras as K

    import rnn_state_rewriter as rsr
    from rnn_state_rewriter import _ops

    K.utils.set_random_seed(0)
    inputs = K.Input((STEPS, FEATURES))
    plain = K.Model(inputs, K.layers.Dense(1)(K.layers.GRU(UNITS)(inputs)))
    broadcast = _ops.Keras3Ops.broadcast_to_batch
    _ops.Keras3Ops.broadcast_to_batch = lambda self, *args: broadcast(self, *args) * 1.0  # a contiguous copy
    try:
        contiguous = rsr.add_trainable_initial_states(plain)
    finally:
        _ops.Keras3Ops.broadcast_to_batch = broadcast
    zeros_in = K.Input((STEPS, FEATURES))
    zero_state = K.layers.Lambda(lambda t: K.ops.repeat(t[:, 0, :1] * 0.0, UNITS, axis=1))(zeros_in)
    zeros = K.Model(zeros_in, K.layers.Dense(1)(K.layers.GRU(UNITS)(zeros_in, initial_state=[zero_state])))
    models = {
        "plain GRU": plain,
        "retrofitted": rsr.add_trainable_initial_states(plain),
        "retrofitted, state made contiguous": contiguous,
        "zeros as initial_state (no weights)": zeros,
    }
    calls = {}
    for name, model in models.items():
        model.compile(K.optimizers.Adam(1e-3), "mse")
        for _ in range(3):
            model.train_on_batch(x, y)
        calls[name] = lambda m=model: m.train_on_batch(x, y)
    return calls


def loop_steps(x) -> dict:
    """Forward and backward of Keras' pure-PyTorch GRU loop, part 2, as calls."""
    import torch
    from keras.src.backend.torch.rnn import _fallback_gru

    torch.manual_seed(0)
    inputs = torch.as_tensor(x)
    kernel = (torch.randn(FEATURES, 3 * UNITS) * 0.1).requires_grad_()
    recurrent = (torch.randn(UNITS, 3 * UNITS) * 0.05).requires_grad_()
    bias = torch.zeros(2, 3 * UNITS, requires_grad=True)
    state = torch.zeros(UNITS, requires_grad=True)

    def run(initial):
        last, _, _ = _fallback_gru(inputs, initial(), kernel, recurrent, bias, torch.tanh, torch.sigmoid, False)
        last.sum().backward()

    return {
        "_fallback_gru from zeros": lambda: run(lambda: torch.zeros(BATCH, UNITS)),
        "_fallback_gru from a broadcast trainable state": lambda: run(lambda: state.expand(BATCH, UNITS)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds (default 21)")
    args = parser.parse_args()
    import keras
    import numpy as np
    from _common import interleaved_times, machine, paired_ratio, table

    if keras.backend.backend() != "torch":
        sys.exit("torch_gru_cost.py measures the PyTorch backend: run it with KERAS_BACKEND=torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    print(f"Machine: {machine()}")
    print(f"{args.rounds} interleaved rounds; CPU ms: median; ratio: to the part's first row [95% bootstrap].\n")
    rows = []
    for part, calls in (("1. Keras train step", keras_steps(x, y)), ("2. GRU loop alone", loop_steps(x))):
        times = interleaved_times(calls, args.rounds)
        base = times[next(iter(calls))]["cpu"]
        for name in calls:
            clocks = times[name]
            ratio, low, high = paired_ratio(clocks["cpu"], base)
            rows.append([part, name, f"{np.median(clocks['cpu']) * 1000:.1f}", f"{ratio:.3f} [{low:.3f}, {high:.3f}]"])
    print(table(["part", "variant", "CPU ms", "CPU ratio"], rows))


if __name__ == "__main__":
    main()

"""Why the PyTorch backend's GRU train step costs more with a learned initial state.

`overhead.py` finds that, on Keras 3's PyTorch backend (CPU), every way of
learning a GRU's initial state (the retrofit, `TrainableInitialStateRNN`, the
Dense workaround) costs the train step about 6 to 8%, while zeros passed as
`initial_state` cost nothing. The cause is subnormal floating-point numbers:

- In this benchmark's task (random data, 100 steps) the gradient that reaches
  the first step has vanished to about 1e-22, so the learned state, which
  starts at zero and moves by Adam's steps, stays near 1e-19.
- The first step's term of the recurrent kernel's gradient, stateᵀ · gradient,
  is then about 1e-41: subnormal (below float32's smallest normal, 1.2e-38).
  x86 CPUs compute subnormals in microcode, about a hundred times slower, so
  that one 256x64x768 matmul takes milliseconds instead of a tenth of one.
- From zeros (the plain layer) that product is exactly zero: no subnormals.
- TensorFlow and XLA (JAX) flush subnormals to zero on the CPU by default;
  PyTorch does not unless `torch.set_flush_denormal(True)` is called before
  its first parallel computation (its worker threads keep the setting they
  start with).

This program shows each link, in two child processes, PyTorch's default and
with `torch.set_flush_denormal(True)` called first (both with glibc's malloc
thresholds fixed, as in `overhead.py`) (GRU(256), batch 64, 100
steps, 32 features, 3 warm-up steps, as in `overhead.py`):

1. the magnitudes after the warm-up: the learned state, its gradient, and the
   share of the first step's stateᵀ · gradient terms that are subnormal;
2. the slowest `aten::mm` of one train step, plain and retrofitted (profiler);
3. that matmul alone, at normal magnitudes and at the measured ones; and, in
   a third child, with `torch.set_flush_denormal(True)` called only after a
   first parallel matmul (it stays slow: the worker threads keep the default);
4. Keras train steps in interleaved rounds: the plain GRU, the retrofitted one
   and zeros passed as `initial_state`, as CPU time ratios to the plain one;

and what a float32 matmul whose exact result is subnormal returns, in
PyTorch under both settings and, with `--others PYTHON` (an interpreter with
TensorFlow and JAX), in TensorFlow, TensorFlow with XLA, and JAX.

    KERAS_BACKEND=torch python docs/investigations/torch_gru_cost.py [--rounds 21] [--quick] [--others .venv/bin/python]
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
SMALLEST_NORMAL = 1.1754944e-38  # float32


def build(x, y) -> dict:
    """The plain GRU model, its retrofit and zeros as `initial_state`, compiled and warmed up."""
    import keras as K
    from _common import head_model, model_with_states, recurrent_layer, zeros_as_initial_state

    import rnn_state_rewriter as rsr

    K.utils.set_random_seed(0)
    plain = head_model(K, STEPS, FEATURES, lambda t: recurrent_layer(K, "GRU", UNITS)(t))
    zeros = model_with_states(K, "GRU", UNITS, STEPS, FEATURES, zeros_as_initial_state)
    retrofitted = rsr.add_trainable_initial_states(plain)
    models = {"plain GRU": plain, "retrofitted": retrofitted, "zeros as initial_state": zeros}
    for model in models.values():
        model.compile(K.optimizers.Adam(1e-3), "mse")
        for _ in range(3):
            model.train_on_batch(x, y)
    return models


def magnitudes(model, x, y) -> dict:
    """Largest |state|, largest |gradient at the state|, and the subnormal share of stateᵀ · gradient."""
    import numpy as np
    import torch

    state = next(w for w in model.trainable_weights if "initial_state" in w.path)
    loss = torch.mean((model(torch.as_tensor(x)) - torch.as_tensor(y)) ** 2)
    grad = torch.autograd.grad(loss, state.value)[0].detach().double().numpy()
    value = state.value.detach().double().numpy()
    products = np.abs(np.outer(value, grad)).ravel()  # in float64, so nothing is flushed on the way
    subnormal = np.mean((products > 0) & (products < SMALLEST_NORMAL))
    return {"state": float(np.abs(value).max()), "gradient": float(np.abs(grad).max()), "subnormal": float(subnormal)}


def slowest_mm(model, x, y) -> tuple[float, str]:
    """Milliseconds and input shapes of the slowest `aten::mm` in one train step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model.train_on_batch(x, y)
    mms = [e for e in prof.events() if e.name == "aten::mm"]
    slowest = max(mms, key=lambda e: e.cpu_time_total)
    return slowest.cpu_time_total / 1000, " x ".join(str(s) for s in slowest.input_shapes[:2])


def matmul_ms(state: float, gradient: float, repeats: int = 20) -> float:
    """Median milliseconds of one stateᵀ · gradient matmul (256x64 times 64x768) at these magnitudes."""
    import time

    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(BATCH, UNITS, generator=generator) * state
    b = torch.randn(BATCH, 3 * UNITS, generator=generator) * gradient
    torch.mm(a.t(), b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a.t(), b)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def measure(rounds: int, flush: bool) -> dict:
    """Everything one setting of PyTorch's subnormal handling shows, as JSON-ready numbers."""
    import torch

    if flush:
        torch.set_flush_denormal(True)  # before anything starts PyTorch's worker threads
    import numpy as np
    from _common import interleaved_times, paired_ratio

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(BATCH, 1)).astype("float32")
    models = build(x, y)
    found = magnitudes(models["retrofitted"], x, y)
    found["slowest_mm"] = {name: slowest_mm(models[name], x, y) for name in ("plain GRU", "retrofitted")}
    tiny = torch.full((1, 1), 1e-20), torch.full((1, 1), 1e-21)
    found["tiny_product"] = float(torch.mm(*tiny)[0, 0])  # exactly 1e-41: subnormal in float32
    found["matmul_normal_ms"] = matmul_ms(1.0, 1.0)
    found["matmul_measured_ms"] = matmul_ms(found["state"], found["gradient"])
    times = interleaved_times({name: lambda m=m: m.train_on_batch(x, y) for name, m in models.items()}, rounds)
    base = times["plain GRU"]["cpu"]
    found["train"] = {
        name: [float(np.median(times[name]["cpu"]) * 1000), *paired_ratio(times[name]["cpu"], base)] for name in models
    }
    return found


def late_flush(state: float, gradient: float) -> dict:
    """The matmul of step 3 when `torch.set_flush_denormal(True)` comes after a first parallel computation."""
    import torch

    big = torch.randn(1024, 1024)
    torch.mm(big, big)  # starts PyTorch's worker threads with the default setting
    torch.set_flush_denormal(True)
    return {"matmul_measured_ms": matmul_ms(state, gradient)}


def others_flush() -> dict:
    """TensorFlow's and XLA's (JAX's) result for a matmul whose exact value, 1e-41, is subnormal in float32."""
    import numpy as np

    a, b = np.full((1, 1), 1e-20, "float32"), np.full((1, 1), 1e-21, "float32")
    found = {"exact (float64)": float((a.astype("float64") @ b.astype("float64"))[0, 0])}
    import tensorflow as tf

    found["TensorFlow"] = float(tf.linalg.matmul(a, b).numpy()[0, 0])
    found["TensorFlow (tf.function, jit_compile)"] = float(
        tf.function(tf.linalg.matmul, jit_compile=True)(a, b).numpy()[0, 0]
    )
    import importlib.util

    if importlib.util.find_spec("jax") is not None:
        import jax.numpy as jnp

        found["JAX (XLA)"] = float(jnp.matmul(a, b)[0, 0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 21, quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 rounds (a smoke run; the sizes stay)")
    parser.add_argument(
        "--others",
        metavar="PYTHON",
        help="an interpreter with TensorFlow and JAX, to show how they round a subnormal product",
    )
    parser.add_argument("--child", choices=["default", "flush", "late", "others"], help=argparse.SUPPRESS)
    parser.add_argument("--magnitudes", nargs=2, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 21)
    if args.child == "late":
        print(json.dumps(late_flush(*args.magnitudes)))
        return
    if args.child == "others":
        print(json.dumps(others_flush()))
        return
    if args.child:
        print(json.dumps(measure(args.rounds, args.child == "flush")))
        return
    import keras
    from _common import child_env, machine, table

    if keras.backend.backend() != "torch":
        sys.exit("torch_gru_cost.py measures the PyTorch backend: run it with KERAS_BACKEND=torch")
    settings = {"default": "PyTorch's default", "flush": "torch.set_flush_denormal(True)"}
    found = {}
    env = child_env("torch", steady_heap=True)  # see _common.TORCH_MALLOC

    def run(child: str, *extra: str, python: str = sys.executable) -> dict:
        command = [python, __file__, "--child", child, "--rounds", str(args.rounds), *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"the {child} run failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    for child in settings:
        found[child] = run(child)
    measured = (str(found["default"]["state"]), str(found["default"]["gradient"]))
    late = run("late", "--magnitudes", *measured)
    others = run("others", python=args.others) if args.others else None
    print(f"Machine: {machine()}")
    print(f"GRU({UNITS}), batch {BATCH}, {STEPS} steps, {FEATURES} features; after 3 warm-up train steps.\n")
    rows = []
    for child, label in settings.items():
        f = found[child]
        rows.append([label, "1. largest |learned state|", f"{f['state']:.3g}"])
        rows.append([label, "1. largest |gradient at the state|", f"{f['gradient']:.3g}"])
        rows.append([label, "1. share of state x gradient terms that are subnormal", f"{f['subnormal']:.2f}"])
        for name, (ms, shapes) in f["slowest_mm"].items():
            rows.append([label, f"2. slowest aten::mm of a {name} train step ({shapes})", f"{ms:.2f} ms"])
        rows.append([label, "3. that matmul alone, normal magnitudes", f"{f['matmul_normal_ms']:.3f} ms"])
        rows.append([label, "3. that matmul alone, the measured magnitudes", f"{f['matmul_measured_ms']:.3f} ms"])
        for name, (ms, ratio, low, high) in f["train"].items():
            value = f"{ms:.1f}, {ratio:.3f} [{low:.3f}, {high:.3f}]"
            rows.append([label, f"4. train step, {name}: CPU ms, ratio to plain", value])
    label = "torch.set_flush_denormal(True) after a first parallel matmul"
    rows.append(
        [label, "3. that matmul alone, the default run's measured magnitudes", f"{late['matmul_measured_ms']:.3f} ms"]
    )
    print(table(["PyTorch subnormals", "what", "value"], rows))
    products = [[f"PyTorch, {label}", f"{found[child]['tiny_product']:.3g}"] for child, label in settings.items()]
    if others is not None:
        products += [[name, f"{value:.3g}"] for name, value in others.items()]
    print("\nA 1x1 matmul of 1e-20 by 1e-21 in float32 (exactly 1e-41, a subnormal; 0 where subnormals are flushed):\n")
    print(table(["where", "result"], products))
    print(f"\n{args.rounds} interleaved rounds; ratio: median of per-round CPU time ratios [95% bootstrap interval].")


if __name__ == "__main__":
    main()

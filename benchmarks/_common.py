"""Helpers shared by the benchmark programs: timing, spreads, tables, machine facts."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np


def interleaved_times(
    calls: dict[str, Callable[[], object]], rounds: int, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Seconds of each call in every round, wall clock and process CPU time.

    Every call runs once per round, in a shuffled order, so slow phases of a
    shared, noisy machine hit all of them alike; comparing two calls round by
    round (`paired_ratio`) cancels most of that noise. CPU time counts the work
    of every thread of this process, so other processes on the machine disturb
    it less than the wall clock (they still share caches and memory bandwidth).
    """
    order = list(calls)
    rng = random.Random(seed)
    wall: dict[str, list[float]] = {name: [] for name in order}
    cpu: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"wall": np.array(wall[name]), "cpu": np.array(cpu[name])} for name in order}


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """The 25th, 50th and 75th percentiles."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(median), float(q3)


def paired_ratio(
    times: np.ndarray, base: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of the per-round ratios `times / base`, with a 95% bootstrap interval of that median."""
    ratios = np.asarray(times) / np.asarray(base)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(ratios, size=(resamples, len(ratios)), replace=True), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


def verdict(low: float, high: float, limit: float) -> str:
    """Whether an interval lies within `limit`, above it, or straddles it (unresolved)."""
    if high <= limit:
        return f"<= {limit:g}"
    if low > limit:
        return f"> {limit:g}"
    return "unresolved"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def machine(pythons: dict[str, str] | None = None) -> str:
    """Cores, CPU model and the versions of Python, Keras and the backends (where installed).

    `pythons` maps a backend to the interpreter that ran it, where that is not this one.
    """
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for entry in handle:
                if entry.startswith("model name"):
                    cpu = entry.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import keras

    versions = [f"Python {platform.python_version()}", f"Keras {keras.__version__}"]
    for package in ("tensorflow", "tf-keras", "jax", "torch"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    for backend, python in (pythons or {}).items():
        if python != sys.executable:
            probe = f"from importlib import metadata; print(metadata.version({backend!r}))"
            found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
            version = found.stdout.strip() or "not installed"
            versions.append(f"{backend} {version} (run by {python})")
    return f"{os.cpu_count()} cores, {cpu}; " + ", ".join(versions)


BACKENDS = ("tensorflow", "jax", "torch")


def backend_arguments(parser) -> None:
    """Adds `--backend` (one or more Keras 3 backends) and `--python BACKEND=PATH` to an argument parser."""
    default = os.environ.get("KERAS_BACKEND", "tensorflow")
    parser.add_argument(
        "--backend",
        nargs="+",
        choices=BACKENDS,
        default=[default] if default in BACKENDS else ["tensorflow"],
        help="Keras 3 backends to measure, each in its own process (default: KERAS_BACKEND, else tensorflow); "
        "the tf-keras rows run with tensorflow",
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="BACKEND=PATH",
        help="the interpreter for a backend's processes, e.g. torch=.venv-torch/bin/python "
        "(PyTorch and TensorFlow cannot share a process, so they often live in separate environments); "
        "default: this one",
    )


def backend_pythons(backends: list[str], overrides: list[str]) -> dict[str, str]:
    """The interpreter of each backend: `sys.executable` unless `--python BACKEND=PATH` names another."""
    pythons = {backend: sys.executable for backend in backends}
    for entry in overrides:
        backend, sep, path = entry.partition("=")
        if not sep or backend not in BACKENDS:
            raise SystemExit(f"--python takes BACKEND=PATH with BACKEND one of {', '.join(BACKENDS)}; got {entry!r}")
        pythons[backend] = path
    return pythons


def has_module(python: str, module: str) -> bool:
    """Whether `module` can be imported by the interpreter `python` (without importing it)."""
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def generations_to_measure(backends: list[str], pythons: dict[str, str]) -> list[tuple[str, str]]:
    """`(generation, backend)` pairs: Keras 3 on each backend given, and tf-keras where `tensorflow` is given
    and its interpreter has tf_keras."""
    runs = [("keras3", backend) for backend in backends]
    if "tensorflow" in pythons and has_module(pythons["tensorflow"], "tf_keras"):
        runs.append(("tf_keras", "tensorflow"))
    return runs


# The models the train-step benchmarks time: Input -> recurrent layer -> Dense(1), where the recurrent
# layer may take its initial state from one of the reference sources below. `K` is the Keras module of the
# generation measured (`keras`, or `tf.keras` under TF_USE_LEGACY_KERAS=1).
STATE_COUNTS = {"LSTM": 2, "GRU": 1, "Bidirectional LSTM": 4}


def recurrent_layer(K, kind: str, units: int, cells: bool = False, **options):
    """A fresh LSTM, GRU or Bidirectional LSTM (`kind`, a key of `STATE_COUNTS`) of `units` units.

    `cells`: the same computation as a generic `RNN` around an `LSTMCell` (`GRUCell`). tf-keras' `LSTM` and
    `GRU` pick their kernel through a function TensorFlow swaps at run time, which XLA compiles anew at every
    call on the CPU; `RNN(LSTMCell)` compiles once.
    """
    if kind == "Bidirectional LSTM":
        return K.layers.Bidirectional(recurrent_layer(K, "LSTM", units, cells, **options))
    if cells:
        return K.layers.RNN(getattr(K.layers, f"{kind}Cell")(units), **options)
    return getattr(K.layers, kind)(units, **options)


def head_model(K, steps: int, features: int, body: Callable[[object], object]):
    """`Input((steps, features))`, then `body(inputs)`, then `Dense(1)`."""
    inputs = K.Input((steps, features))
    return K.Model(inputs, K.layers.Dense(1)(body(inputs)))


def zeros_as_initial_state(K, kind: str, units: int) -> Callable[[object], list]:
    """For `initial_state=`: zeros computed from the input, with no variable behind them (what passing states
    costs before any is learned); one Lambda layer per state."""
    if hasattr(K, "ops"):
        repeat = K.ops.repeat
    else:  # tf-keras
        import tensorflow as tf

        repeat = tf.repeat

    def states(inputs) -> list:
        zeros = lambda t: repeat(t[:, 0, :1] * 0.0, units, axis=1)  # noqa: E731
        return [K.layers.Lambda(zeros)(inputs) for _ in range(STATE_COUNTS[kind])]

    return states


def model_with_states(
    K,
    kind: str,
    units: int,
    steps: int,
    features: int,
    source: Callable[..., Callable[[object], list]],
    cells: bool = False,
):
    """`head_model` around a fresh `recurrent_layer` whose `initial_state=` comes from `source`
    (`zeros_as_initial_state` or `dense_on_zero_input`)."""
    states = source(K, kind, units)
    layer = lambda t: recurrent_layer(K, kind, units, cells)(t, initial_state=states(t))  # noqa: E731
    return head_model(K, steps, features, layer)


def dense_on_zero_input(K, kind: str, units: int) -> Callable[[object], list]:
    """For `initial_state=`: the workaround of keras-team/keras#9797, a Dense layer per state on a zero input,
    which learns the state as its bias."""

    def states(inputs) -> list:
        zero = K.layers.Lambda(lambda t: t[:, 0, :1] * 0.0)(inputs)
        return [K.layers.Dense(units)(zero) for _ in range(STATE_COUNTS[kind])]

    return states


# glibc's malloc hands blocks above a threshold that it adjusts as the program runs to mmap, and trims
# the heap above another. Keras' pure-PyTorch RNN loops (what the CPU runs) allocate and free 20 to 26 MB
# gradients of the whole input projection at every step; depending on the heap's history these come back
# as fresh pages, and the page faults they cost varied from 6,000 to 160,000 per LSTM train step between
# three models of the same layer (PyTorch 2.13, Keras 3.15), far above a 2% difference. Fixed thresholds
# (the largest mmap threshold glibc accepts, a trim threshold never reached) keep those blocks in the heap.
# `overhead.py` and the investigations `docs/investigations/torch_gru_cost.py` and `process_spread.py` ask
# for them (`child_env(..., steady_heap=True)`); `docs/investigations/torch_heap.py` compares both;
# `retrofit.py`, which measures memory, does not.
TORCH_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30)}


def child_env(backend: str | None, steady_heap: bool = False) -> dict[str, str]:
    """The environment of a measuring child process: quiet TensorFlow, and `KERAS_BACKEND` where given;
    `steady_heap`: glibc's malloc thresholds fixed for PyTorch (`TORCH_MALLOC`)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    if steady_heap and backend == "torch":
        env.update(TORCH_MALLOC)
    return env

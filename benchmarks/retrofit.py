"""What the retrofit costs: time and peak memory of `add_trainable_initial_states`.

Compared with the baseline a user would otherwise run, `clone_model` followed
by `set_weights(get_weights())`: the retrofit as called by default (these
models hold only Keras' own layers, so the default `check="auto"` copies them
without running them) and with `check=True` (the "check=True" columns: the
copy, then one forward pass of each model on a probe batch), for functional
stacked-LSTM models of 10, 50 and 200 recurrent layers and one large model of about 100M parameters, in both
Keras generations. Each measurement runs in its own process: it builds the
model, resets the process's peak resident set (Linux `clear_refs`), runs the
operation once, and reports the time and the peak above the resident set it
started from. Processes run in interleaved rounds; the table gives medians,
and the ratio of the medians of process CPU time too, which other processes on
a shared machine disturb less than the wall clock.

Before measuring, each process calls `model.get_config()` once. Both
operations serialize the model's layers, and Keras' serialization imports
TensorFlow lazily the first time, where it is installed, even on JAX. That
one-time import took about 3 s and as much resident memory as 1.2 times the
large model's weights. It is Keras', not the operation's, and it would
otherwise be counted for whichever operation runs first in a process.

Keras 3 runs on each backend given with `--backend` (default: the one
`KERAS_BACKEND` names, else TensorFlow); tf-keras runs with TensorFlow, where
installed.

    python benchmarks/retrofit.py            # the full run
    python benchmarks/retrofit.py --quick    # a smoke run with small models
    python benchmarks/retrofit.py --backend tensorflow jax torch --python torch=.venv-torch/bin/python
    python benchmarks/retrofit.py --backend tensorflow --paired 15   # small stacks, ratio with an interval

Process-per-measurement times of small models vary by 10% from round to round;
`--paired` times the 10- and 50-layer stacks instead by repeated calls in one
process per model (after one warm-up call of each, so one-time costs such as
imports are left out), which gives a ratio with a bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "10 layers": (10, 64, 64),
    "50 layers": (50, 64, 64),
    "200 layers": (200, 64, 64),
    "~100M params": (3, 2048, 2048),
}
QUICK_CASES = {"4 layers": (4, 16, 16)}
SMALL_CASES = {"10 layers": CASES["10 layers"], "50 layers": CASES["50 layers"]}


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _model_and_methods(generation: str, layers: int, units: int, features: int):
    """The stacked-LSTM model and its two operations: `clone_model` + `set_weights`, and the retrofit."""
    if generation == "keras3":
        import keras as K
    else:
        import tf_keras as K
    import rnn_state_rewriter as rsr

    inputs = K.Input((20, features))
    x = inputs
    for i in range(layers):
        x = K.layers.LSTM(units, return_sequences=i < layers - 1)(x)
    model = K.Model(inputs, K.layers.Dense(1)(x))

    def baseline():
        clone = K.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    return model, {
        "baseline": baseline,
        "retrofit": lambda: rsr.add_trainable_initial_states(model),
        "checked": lambda: rsr.add_trainable_initial_states(model, check=True),
    }


def measure(generation: str, method: str, layers: int, units: int, features: int) -> dict:
    model, methods = _model_and_methods(generation, layers, units, features)
    weight_bytes = sum(int(w.numpy().nbytes) for w in model.weights)
    operation = methods[method]
    model.get_config()  # Keras' one-time lazy imports (TensorFlow, even on JAX), outside the measurement
    resident = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak resident set (VmHWM)
        peak_reset = True
    except OSError:
        peak_reset = False
    start, start_cpu = time.perf_counter(), time.process_time()
    result = operation()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    extra = _status("VmHWM") - resident if peak_reset else float("nan")
    assert len(result.weights) >= len(model.weights)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "extra_bytes": extra, "weight_bytes": weight_bytes}


def measure_paired(generation: str, layers: int, units: int, features: int, rounds: int) -> dict:
    """CPU seconds of both operations on one model in one process, after one warm-up call of each,
    over interleaved rounds in shuffled order."""
    from _common import interleaved_times

    _, methods = _model_and_methods(generation, layers, units, features)
    methods = {name: methods[name] for name in ("baseline", "retrofit")}
    for operation in methods.values():
        operation()  # first-use costs of either (imports, classes, caches) out of the comparison
    times = interleaved_times(methods, rounds)
    return {method: times[method]["cpu"].tolist() for method in methods}


def paired_table(generations: dict[str, str], pythons: dict[str, str], rounds: int, cases: dict) -> None:
    """`--paired`: the small stacks' time ratio from repeated calls in one process, with its interval."""
    import numpy as np
    from _common import child_env, paired_ratio, table, verdict

    rows = []
    for generation, backend in generations.items():
        for case, (layers, units, features) in cases.items():
            command = [pythons[backend], __file__, "--paired-child", generation.split("/")[0]]
            command += [str(v) for v in (layers, units, features, rounds)]
            env = child_env(backend if generation != "tf_keras" else None)
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{generation} {case} paired run failed:\n{done.stderr[-3000:]}")
            cpu = json.loads(done.stdout.strip().splitlines()[-1])
            ours, base = np.array(cpu["retrofit"]), np.array(cpu["baseline"])
            ratio, low, high = paired_ratio(ours, base)
            rows.append(
                [
                    generation,
                    case,
                    f"{np.median(base) * 1000:.0f}",
                    f"{np.median(ours) * 1000:.0f}",
                    f"{ratio:.3f} [{low:.3f}, {high:.3f}]",
                    verdict(low, high, 1.0),
                ]
            )
    print(
        f"Small stacks, one process per model: after one warm-up call of each, {rounds} interleaved rounds. "
        "ratio: median over rounds of retrofit / baseline CPU time of the same round [95% bootstrap interval]; "
        "verdict: that interval against 1 (no slower than the baseline).\n"
    )
    header = ["Keras", "model", "baseline CPU ms", "retrofit CPU ms", "CPU time ratio", "verdict"]
    print(table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, one round (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--paired-child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument(
        "--paired",
        type=int,
        metavar="ROUNDS",
        help="instead of the table: time the 10- and 50-layer stacks by repeated calls in one process per model, "
        "ROUNDS interleaved rounds, for a ratio with a confidence interval",
    )
    from _common import backend_arguments, backend_pythons, child_env, generations_to_measure, machine, table

    backend_arguments(parser)
    args = parser.parse_args()
    if args.child:
        generation, method, layers, units, features = args.child
        print(json.dumps(measure(generation, method, int(layers), int(units), int(features))))
        return
    if args.paired_child:
        generation, *sizes = args.paired_child
        print(json.dumps(measure_paired(generation, *map(int, sizes))))
        return

    cases = QUICK_CASES if args.quick else CASES
    rounds = args.rounds or (1 if args.quick else 3)
    pythons = backend_pythons(args.backend, args.python)
    # A "generation" here is what a row measures: Keras 3 on one backend, or tf-keras.
    generations = {
        gen if gen == "tf_keras" else f"{gen}/{backend}": backend
        for gen, backend in generations_to_measure(args.backend, pythons)
    }
    if args.paired:
        print(f"Machine: {machine(pythons)}")
        paired_table(generations, pythons, args.paired, QUICK_CASES if args.quick else SMALL_CASES)
        return
    jobs = [(g, c, m) for g in generations for c in cases for m in ("baseline", "retrofit", "checked")]
    samples: dict[tuple, list[dict]] = {job: [] for job in jobs}
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(jobs)
        for generation, case, method in jobs:
            backend = generations[generation]
            command = [pythons[backend], __file__, "--child", generation.split("/")[0], method, *map(str, cases[case])]
            env = child_env(backend if generation != "tf_keras" else None)
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{generation} {case} {method} failed:\n{done.stderr[-3000:]}")
            samples[(generation, case, method)].append(json.loads(done.stdout.strip().splitlines()[-1]))

    def median(generation: str, case: str, method: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[(generation, case, method)])

    def round_ratios(generation: str, case: str) -> str:
        """The lowest and highest per-round ratio of CPU times (each round ran both methods once)."""
        pairs = zip(samples[(generation, case, "retrofit")], samples[(generation, case, "baseline")], strict=True)
        ratios = [ours["cpu_seconds"] / base["cpu_seconds"] for ours, base in pairs]
        return f"[{min(ratios):.3f}, {max(ratios):.3f}]"

    print(f"Machine: {machine(pythons)}")
    print(
        f"Medians of {rounds} interleaved rounds, one process per measurement. CPU time ratio: of the medians, "
        "and the lowest and highest ratio of one round's two measurements.\n"
    )
    rows = []
    for generation in generations:
        for case in cases:
            base_s, ours_s = (median(generation, case, m, "seconds") for m in ("baseline", "retrofit"))
            base_c, ours_c = (median(generation, case, m, "cpu_seconds") for m in ("baseline", "retrofit"))
            base_m, ours_m = (median(generation, case, m, "extra_bytes") for m in ("baseline", "retrofit"))
            full_c, full_m = (median(generation, case, "checked", key) for key in ("cpu_seconds", "extra_bytes"))
            weights = median(generation, case, "retrofit", "weight_bytes")
            layers = cases[case][0]
            rows.append(
                [
                    generation,
                    case,
                    f"{weights / 2**20:.1f}",
                    f"{base_s:.2f}",
                    f"{ours_s:.2f}",
                    f"{ours_s / base_s:.3f}",
                    f"{ours_c / base_c:.3f} {round_ratios(generation, case)}",
                    f"{ours_s / layers * 1000:.1f}",
                    f"{base_m / weights:.2f}",
                    f"{ours_m / weights:.2f}",
                    f"{full_c / base_c:.3f}",
                    f"{full_m / weights:.2f}",
                ]
            )
    header = [
        "Keras",
        "model",
        "weights MiB",
        "baseline s",
        "retrofit s",
        "time ratio",
        "CPU time ratio [rounds' range]",
        "retrofit ms/layer",
        "baseline extra peak / weights",
        "retrofit extra peak / weights",
        "check=True CPU time ratio",
        "check=True extra peak / weights",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    main()

"""Does learning the initial state help? Honestly reported, over 5 seeds.

Three tasks on short windows. Trained from scratch, with one-step-ahead
forecasting: (1) generated windows of a noisy periodic signal, (2) yearly
sunspot numbers 1700-2008, the data set shipped inside statsmodels
(`statsmodels.datasets.sunspots`; installed by the `benchmark` extra). The
same LSTM, from the same initial weights for each seed, is trained with zero
initial states, learned states (`add_trainable_initial_states`), and learned
states with Gaussian noise (Zimmermann et al., 2012). (3) The demo's task
(`rnn_state_rewriter.demo`): an LSTM pretrained with zero states on 128-step
stretches of a stream is fine-tuned on 16-step windows in each of the three
ways, from the same pretrained weights, for the demo's budget. The tables give
the mean and standard deviation over seeds of the validation MSE and of the
error per time step; nothing is claimed beyond these numbers.

Two more tasks are built so that the start matters: (4) streams cut into
stateful chunks, reset at the start of each stream, where every stream starts
from a similar state: a stateful LSTM reset to zeros, the same LSTM reset to a
learned state (`add_trainable_initial_states` of the stateful model), and
chunks run independently from one learned state; (5) many short series whose
levels differ by series id: zero states, one learned state shared by all
series, and one learned state per id (`context=..., num_ids=...`).

    python benchmarks/benefit.py            # 5 seeds, full training
    python benchmarks/benefit.py --quick    # 2 seeds, 1 epoch (a smoke run)
    python benchmarks/benefit.py --tasks stream ids   # only tasks 4 and 5
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

WINDOW = 12
VARIANTS = {"zero states": None, "learned states": 0.0, "learned states + noise 0.1": 0.1}


def periodic_task(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)

    def windows(count: int) -> tuple[np.ndarray, np.ndarray]:
        phase = rng.uniform(0, 2 * np.pi, (count, 1))
        t = np.arange(WINDOW + 1)[None, :]
        series = np.sin(2 * np.pi * t / 9.0 + phase) + 0.5 * np.sin(2 * np.pi * t / 23.0 + 2 * phase)
        series = series + rng.normal(0, 0.2, series.shape)
        return series[:, :-1, None].astype("float32"), series[:, 1:, None].astype("float32")

    return (*windows(1024), *windows(512))


def sunspot_task() -> tuple[np.ndarray, ...]:
    import statsmodels.api as sm

    values = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype="float64")
    split = int(len(values) * 0.7)
    mean, std = values[:split].mean(), values[:split].std()
    values = (values - mean) / std

    def windows(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        stacked = np.stack([series[i : i + WINDOW + 1] for i in range(len(series) - WINDOW)])
        return stacked[:, :-1, None].astype("float32"), stacked[:, 1:, None].astype("float32")

    return (*windows(values[:split]), *windows(values[split - WINDOW :]))


def run(task: tuple[np.ndarray, ...], seed: int, noise: float | None, epochs: int) -> tuple[list[float], np.ndarray]:
    """Trains from scratch; returns the validation MSE per epoch and per time step."""
    import keras

    import rnn_state_rewriter as rsr

    x, y, x_val, y_val = task
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((WINDOW, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.LSTM(16, return_sequences=True)(inputs)))
    if noise is not None:
        model = rsr.add_trainable_initial_states(model, noise_stddev=noise)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0)
    per_step = ((model.predict(x_val, verbose=0) - y_val) ** 2).mean(axis=(0, 2))
    return [float(v) for v in history.history["val_loss"]], per_step


def run_demo_task(seed: int, epochs: int) -> dict[str, tuple[list[float], np.ndarray]]:
    """The demo's flow for one seed: pretrain with zero states, then fine-tune each variant from those weights."""
    import keras

    import rnn_state_rewriter as rsr
    from rnn_state_rewriter import demo

    task = demo.make_task(seed)
    pretrained = demo.pretrain(keras, task, epochs, seed)
    results = {}
    for variant, noise in VARIANTS.items():
        if noise is None:
            model = keras.models.clone_model(pretrained)
            model.set_weights(pretrained.get_weights())
        else:
            model = rsr.add_trainable_initial_states(pretrained, noise_stddev=noise)
        losses = demo.fine_tune(keras, model, task, epochs, seed + 5)
        results[variant] = (losses, demo.error_per_step(model, task["validation"]))
    return results


STREAMS, CHUNK, CHUNKS = 32, 8, 8  # task 4: 32 streams of 64 steps, fed as 8 stateful chunks of 8 steps
STREAM_VARIANTS = ["stateful, reset to zeros", "stateful, reset to a learned state", "chunks apart, learned state"]
IDS, ID_WINDOW = 40, 6  # task 5: 40 series ids, windows of 6 steps
ID_VARIANTS = {"zero states": None, "one learned state": "shared", "one learned state per id": "per id"}


def stream_task(seed: int) -> tuple[np.ndarray, ...]:
    """Streams of a damped oscillation around 1 that all start near the same point and phase, with noise."""
    rng = np.random.default_rng(seed + 100)

    def streams() -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(CHUNK * CHUNKS + 1)[None, :]
        amplitude = 2.0 + 0.2 * rng.normal(size=(STREAMS, 1))
        phase = 0.3 * rng.normal(size=(STREAMS, 1))
        series = 1.0 + amplitude * np.exp(-t / 40.0) * np.cos(2 * np.pi * t / 16.0 + phase)
        series = series + rng.normal(0, 0.1, series.shape)
        return series[:, :-1, None].astype("float32"), series[:, 1:, None].astype("float32")

    return (*streams(), *streams())


def run_stream(task: tuple[np.ndarray, ...], seed: int, variant: str, epochs: int) -> np.ndarray:
    """Trains one variant by truncated backpropagation through time; returns the validation MSE per chunk."""
    import keras

    import rnn_state_rewriter as rsr

    x, y, x_val, y_val = task
    keras.utils.set_random_seed(seed)
    stateful = variant != STREAM_VARIANTS[2]
    inputs = keras.Input(batch_shape=(STREAMS, CHUNK, 1))
    lstm = keras.layers.LSTM(16, return_sequences=True, stateful=stateful)
    model = keras.Model(inputs, keras.layers.Dense(1)(lstm(inputs)))
    if variant != STREAM_VARIANTS[0]:
        model = rsr.add_trainable_initial_states(model)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    chunks = [slice(i * CHUNK, (i + 1) * CHUNK) for i in range(CHUNKS)]
    for _ in range(epochs):
        rsr.reset_states(model)  # every stream starts again: back to the start state
        for part in chunks:
            model.train_on_batch(x[:, part], y[:, part])
    rsr.reset_states(model)
    errors = []
    for part in chunks:
        prediction = keras.ops.convert_to_numpy(model(x_val[:, part], training=False))
        errors.append(float(((prediction - y_val[:, part]) ** 2).mean()))
    return np.array(errors)


def id_task(seed: int) -> tuple[np.ndarray, ...]:
    """Short noisy windows of series whose levels differ by series id; one-step-ahead targets."""
    rng = np.random.default_rng(seed + 200)
    levels = rng.normal(0, 2.0, IDS)

    def windows(count: int) -> tuple[np.ndarray, ...]:
        ids = rng.integers(0, IDS, count)
        series = levels[ids][:, None] + rng.normal(0, 0.5, (count, ID_WINDOW + 1))
        return series[:, :-1, None].astype("float32"), ids.astype("int32"), series[:, 1:, None].astype("float32")

    return (*windows(2048), *windows(512))


def run_ids(task: tuple[np.ndarray, ...], seed: int, variant: str | None, epochs: int) -> np.ndarray:
    """Trains one variant from scratch; returns the validation MSE per time step."""
    import keras

    import rnn_state_rewriter as rsr

    x, ids, y, x_val, ids_val, y_val = task
    keras.utils.set_random_seed(seed)
    series, series_id = keras.Input((ID_WINDOW, 1)), keras.Input((), dtype="int32", name="series_id")
    outputs = keras.layers.Dense(1)(keras.layers.LSTM(16, return_sequences=True)(series))
    model = keras.Model([series, series_id], outputs)
    if variant == "shared":
        model = rsr.add_trainable_initial_states(model)
    elif variant == "per id":
        model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=IDS)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    model.fit([x, ids], y, epochs=epochs, batch_size=32, verbose=0)
    prediction = model.predict([x_val, ids_val], verbose=0)
    return ((prediction - y_val) ** 2).mean(axis=(0, 2))


def start_tables(seeds: range, epochs: int) -> None:
    """Tasks 4 and 5: where the start matters by construction."""
    from _common import table

    rows = []
    for variant in STREAM_VARIANTS:
        errors = np.array([run_stream(stream_task(seed), seed, variant, epochs) for seed in seeds])
        rows.append(
            [
                variant,
                mean_sd(list(errors[:, 0])),
                mean_sd(list(errors[:, 1])),
                mean_sd(list(errors[:, 2:].mean(1))),
                mean_sd(list(errors.mean(1))),
            ]
        )
    print(
        f"\nStreams cut into stateful chunks: {STREAMS} streams of {CHUNK * CHUNKS} steps in {CHUNKS} chunks of "
        f"{CHUNK}, reset at each stream's start; LSTM(16), {epochs} epochs of truncated backpropagation. "
        "Validation MSE (mean ± sd over seeds)\n"
    )
    print(table(["variant", "chunk 1 (after the reset)", "chunk 2", "chunks 3-8", "all chunks"], rows))
    rows = []
    for name, variant in ID_VARIANTS.items():
        steps = np.array([run_ids(id_task(seed), seed, variant, epochs) for seed in seeds])
        rows.append([name, *(mean_sd(list(steps[:, i])) for i in range(3)), mean_sd(list(steps.mean(1)))])
    print(
        f"\nSeries whose levels differ by id: {IDS} ids, windows of {ID_WINDOW} steps, noise sd 0.5 around "
        f"levels of sd 2; LSTM(16), {epochs} epochs. Validation MSE (mean ± sd over seeds); the noise alone "
        "gives 0.25\n"
    )
    print(table(["variant", "step 0", "step 1", "step 2", "all steps"], rows))


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch (a smoke run)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=["windows", "stream", "ids"],
        default=["windows", "stream", "ids"],
        help="windows: tasks 1-3; stream: task 4; ids: task 5 (default: all)",
    )
    args = parser.parse_args()
    seeds = range(2) if args.quick else range(5)
    epochs = 1 if args.quick else 60
    demo_epochs = 1 if args.quick else 12  # the demo's default budget

    import tensorflow as tf
    from _common import machine, table

    tf.get_logger().setLevel("ERROR")  # this program's own output only
    if "windows" not in args.tasks:
        print(f"Machine: {machine()}\nKeras 3, seeds {list(seeds)}.")
        start_tables(seeds, 2 if args.quick else 40)
        return
    tasks = {"noisy periodic windows": periodic_task()}
    try:
        tasks["sunspots (statsmodels)"] = sunspot_task()
    except ImportError:
        if not args.quick:
            sys.exit("benefit.py needs statsmodels for its sunspot data: pip install -e '.[benchmark]'")
        print("statsmodels is not installed: the sunspot task is left out of this quick run.")
    print(f"Machine: {machine()}")
    print(
        f"Keras 3, seeds {list(seeds)}. Tasks 1-2: LSTM(16) trained from scratch on windows of {WINDOW} steps, "
        f"{epochs} epochs. Task 3: the demo's LSTM(32), pretrained {demo_epochs} epochs with zero states on "
        f"128-step stretches, then fine-tuned {demo_epochs} epochs on 16-step windows.\n"
    )
    runs: dict[tuple[str, str], list[tuple[list[float], np.ndarray]]] = {}
    for task_name, task in tasks.items():
        for variant, noise in VARIANTS.items():
            runs[(task_name, variant)] = [run(task, seed, noise, epochs) for seed in seeds]
    demo_name = "stream windows (the demo)"
    for seed in seeds:
        for variant, result in run_demo_task(seed, demo_epochs).items():
            runs.setdefault((demo_name, variant), []).append(result)

    rows, step_rows = [], []
    for (task_name, variant), results in runs.items():
        finals = [losses[-1] for losses, _ in results]
        rows.append([task_name, variant, mean_sd(finals), f"{min(finals):.4f} .. {max(finals):.4f}"])
        steps = np.array([per_step for _, per_step in results])
        step_rows.append(
            [task_name, variant, *(mean_sd(list(steps[:, i])) for i in range(4)), mean_sd(list(steps[:, 4:].mean(1)))]
        )
    print(table(["task", "variant", "final val MSE (mean ± sd)", "range over seeds"], rows))
    print("\nValidation MSE per time step (mean ± sd over seeds)\n")
    print(table(["task", "variant", "step 0", "step 1", "step 2", "step 3", "later steps"], step_rows))
    checkpoints = sorted({1, 3, demo_epochs // 2, demo_epochs} & set(range(1, demo_epochs + 1)))
    print(f"\n{demo_name}: validation MSE after each epoch of fine-tuning (mean ± sd over seeds)\n")
    epoch_rows = [
        [variant, *(mean_sd([losses[e - 1] for losses, _ in runs[(demo_name, variant)]]) for e in checkpoints)]
        for variant in VARIANTS
    ]
    print(table(["variant", *(f"epoch {e}" for e in checkpoints)], epoch_rows))
    if {"stream", "ids"} & set(args.tasks):
        start_tables(seeds, 2 if args.quick else 40)


if __name__ == "__main__":
    main()

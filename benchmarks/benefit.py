"""Does learning the initial state help? Honestly reported, over 5 seeds.

Two one-step-ahead forecasting tasks on short windows, where the start of each
window lacks context: (1) generated windows of a noisy periodic signal,
(2) yearly sunspot numbers 1700-2008, the data set shipped inside statsmodels
(`statsmodels.datasets.sunspots`; installed by the `benchmark` extra). The same
LSTM, from the same initial weights for each seed, is trained with zero
initial states, learned states (`add_trainable_initial_states`), and learned
states with Gaussian noise (Zimmermann et al., 2012). The table gives the mean
and standard deviation over seeds of the final validation MSE and of the error
at the first steps; nothing is claimed beyond these numbers.

    python benchmarks/benefit.py            # 5 seeds, full training
    python benchmarks/benefit.py --quick    # 2 seeds, 1 epoch (a smoke run)
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


def run(task: tuple[np.ndarray, ...], seed: int, noise: float | None, epochs: int) -> tuple[float, np.ndarray]:
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
    return float(history.history["val_loss"][-1]), per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch (a smoke run)")
    args = parser.parse_args()
    seeds = range(2) if args.quick else range(5)
    epochs = 1 if args.quick else 60

    import tensorflow as tf
    from _common import machine, table

    tf.get_logger().setLevel("ERROR")  # this program's own output only
    tasks = {"noisy periodic windows": periodic_task()}
    try:
        tasks["sunspots (statsmodels)"] = sunspot_task()
    except ImportError:
        if not args.quick:
            sys.exit("benefit.py needs statsmodels for its sunspot data: pip install -e '.[benchmark]'")
        print("statsmodels is not installed: the sunspot task is left out of this quick run.")
    print(f"Machine: {machine()}")
    print(f"Keras 3, LSTM(16), windows of {WINDOW} steps, {epochs} epochs, seeds {list(seeds)}.\n")
    rows, step_rows = [], []
    for task_name, task in tasks.items():
        for variant, noise in VARIANTS.items():
            finals, steps = [], []
            for seed in seeds:
                final, per_step = run(task, seed, noise, epochs)
                finals.append(final)
                steps.append(per_step)
            steps_mean = np.mean(steps, axis=0)
            rows.append(
                [
                    task_name,
                    variant,
                    f"{np.mean(finals):.4f} ± {np.std(finals):.4f}",
                    f"{min(finals):.4f} .. {max(finals):.4f}",
                ]
            )
            step_rows.append(
                [task_name, variant, *(f"{v:.4f}" for v in steps_mean[:4]), f"{steps_mean[4:].mean():.4f}"]
            )
    print(table(["task", "variant", "final val MSE (mean ± sd)", "range over seeds"], rows))
    print("\nValidation MSE per time step (mean over seeds)\n")
    print(table(["task", "variant", "step 0", "step 1", "step 2", "step 3", f"steps 4-{WINDOW - 1}"], step_rows))


if __name__ == "__main__":
    main()

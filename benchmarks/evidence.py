"""Evidence on real data: when does a learned initial state help, and by how much?

Every data set here is real and ships inside the `aeon` package (installed by
the `evidence` extra: `pip install -e ".[evidence]"`; nothing is downloaded),
with its official split where it has one. Keras 3 on its default backend
(TensorFlow), CPU. For each seed, the variants of a task start from the same
initial weights and train for the same number of epochs; a learned start is
added with `add_trainable_initial_states` to that same freshly built model.

1. Classification, UCR/UEA archive sets with their official train/test splits
   (JapaneseVowels, variable length, post-padded and masked; BasicMotions;
   ItalyPowerDemand; GunPoint): an LSTM reads the whole series and a
   softmax reads its last output. Test accuracy of: zero states; a learned
   start; and the retrofit route, a model trained with zero states for half
   the budget, then fine-tuned for the other half as it is, or retrofitted
   first (`add_trainable_initial_states`, predictions unchanged) and then
   fine-tuned.
2. Forecasting, the M1 competition's 181 yearly series (horizon 6): an LSTM
   reads the last 4 values of a series, scaled by their mean, and a dense
   layer gives the next 6. Zero states, one learned start shared by all
   series, and one learned start per series id (`context=, num_ids=`).
   sMAPE and MASE (scaled by the in-sample naive forecast's error) on each
   series' last 6 values, with the naive forecast (the last value repeated) as
   the reference.
3. Streams: two long sensor recordings (Daphnet freezing-of-gait
   accelerometers, 9 channels at 64 Hz; an arterial blood pressure record of
   the UCR anomaly archive, InternalBleeding16) cut into streams of 128 steps,
   the first 70% for training. A stateful LSTM forecasts the next step,
   trained by truncated backpropagation on chunks of 16 steps, reset at the
   start of each stream: to zeros, or to a learned start (the retrofit of the
   stateful model). Evaluated as deployed: `streaming_model` run chunk by
   chunk from `start_states`. MSE on the first chunk after a reset, and over
   the whole stream.

Each figure is the mean and standard deviation over seeds; each comparison
with zero states is paired by seed: the mean of the per-seed differences with
its 95% t-interval, and whether that interval excludes zero ("yes") or not
("no": not distinguishable from noise at this number of seeds).

    python benchmarks/evidence.py                     # 5 seeds, full budgets
    python benchmarks/evidence.py --quick             # one set of each task, one seed, a few epochs
    python benchmarks/evidence.py --plots docs/evidence   # also draw the figures
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CLASSIFICATION_SETS = ["JapaneseVowels", "BasicMotions", "ItalyPowerDemand", "GunPoint"]
CLASSIFICATION_VARIANTS = [
    "zero states",
    "learned start",
    "pretrained, fine-tuned as it is",
    "pretrained, retrofitted, fine-tuned",
]
FORECAST_VARIANTS = ["zero states", "one learned start", "a learned start per series id"]
STREAM_SETS = ["Daphnet S06R02E0", "InternalBleeding16"]
STREAM_VARIANTS = ["stateful, reset to zeros", "stateful, reset to a learned start"]
PAD = -99.0  # post-padding of variable-length series, masked
HORIZON, LOOKBACK = 6, 4
STREAM_STEPS, CHUNK = 128, 16


# ----------------------------------------------------------------------------
# Data (all of it shipped inside aeon)
# ----------------------------------------------------------------------------


def classification_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Train and test series as `(n, steps, channels)`, standardized by the training set's channel statistics,
    post-padded with `PAD` where lengths differ; integer labels; the number of classes."""
    from aeon.datasets import load_classification

    x, y = load_classification(name, split="train")
    x_test, y_test = load_classification(name, split="test")
    classes = sorted(set(y) | set(y_test))
    series = [np.asarray(s, dtype="float64").T for s in x]  # (steps, channels) each
    test_series = [np.asarray(s, dtype="float64").T for s in x_test]
    stacked = np.concatenate(series)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-8
    steps = max(len(s) for s in [*series, *test_series])

    def padded(items: list[np.ndarray]) -> np.ndarray:
        out = np.full((len(items), steps, items[0].shape[1]), PAD, dtype="float32")
        for i, s in enumerate(items):
            out[i, : len(s)] = (s - mean) / std
        return out

    labels = {c: i for i, c in enumerate(classes)}
    return (
        padded(series),
        np.array([labels[c] for c in y]),
        padded(test_series),
        np.array([labels[c] for c in y_test]),
        len(classes),
    )


def m1_yearly() -> list[np.ndarray]:
    """The M1 competition's yearly series, in their order."""
    from aeon.datasets import load_forecasting

    frame = load_forecasting("m1_yearly_dataset")
    return [np.asarray(values, dtype="float64") for values in frame["series_value"]]


def forecast_windows(series: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Training windows from each series but its last `HORIZON` values, and the test window of each series;
    inputs and targets divided by the mean of the inputs (scale-free), with the series id."""
    x, y, ids, x_test, y_test, scale_test, naive_mae = [], [], [], [], [], [], []
    for i, s in enumerate(series):
        train, test = s[:-HORIZON], s[-HORIZON:]
        for start in range(len(train) - LOOKBACK - HORIZON + 1):
            inputs = train[start : start + LOOKBACK]
            scale = inputs.mean()
            x.append(inputs / scale)
            y.append(train[start + LOOKBACK : start + LOOKBACK + HORIZON] / scale)
            ids.append(i)
        inputs = train[-LOOKBACK:]
        x_test.append(inputs / inputs.mean())
        y_test.append(test)
        scale_test.append(inputs.mean())
        naive_mae.append(np.abs(np.diff(train)).mean())
    return {
        "x": np.array(x, dtype="float32")[..., None],
        "y": np.array(y, dtype="float32"),
        "ids": np.array(ids, dtype="int32"),
        "x_test": np.array(x_test, dtype="float32")[..., None],
        "ids_test": np.arange(len(series), dtype="int32"),
        "y_test": np.array(y_test),
        "scale_test": np.array(scale_test),
        "naive_mae": np.array(naive_mae),
        "last": np.array([s[:-HORIZON][-1] for s in series]),
    }


def smape(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """sMAPE in percent, per series and step (the M competitions' definition)."""
    return 200.0 * np.abs(forecast - actual) / (np.abs(forecast) + np.abs(actual))


def stream_data(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A long recording cut into streams of `STREAM_STEPS` steps, standardized by the training part; inputs
    and next-step targets (every channel), the first 70% of the streams for training."""
    import aeon
    import pandas as pd

    folder = os.path.join(os.path.dirname(aeon.__file__), "datasets", "data")  # the sets aeon ships
    if name.startswith("Daphnet"):
        frame = pd.read_csv(os.path.join(folder, "Daphnet_S06R02E0", "S06R02E0.csv"))
        values = frame.drop(columns=["timestamp", "is_anomaly"]).to_numpy(dtype="float64")
    else:
        parts = [
            pd.read_csv(os.path.join(folder, "KDD-TSAD_135", f"135_UCR_Anomaly_InternalBleeding16_{split}.csv"))
            for split in ("TRAIN", "TEST")
        ]
        values = np.concatenate([p[["value"]].to_numpy(dtype="float64") for p in parts])
    count = (len(values) - 1) // STREAM_STEPS
    inputs = values[: count * STREAM_STEPS].reshape(count, STREAM_STEPS, -1)
    targets = values[1 : count * STREAM_STEPS + 1].reshape(count, STREAM_STEPS, -1)
    split = int(count * 0.7)
    mean, std = inputs[:split].mean(axis=(0, 1)), inputs[:split].std(axis=(0, 1)) + 1e-8
    scaled = [((a - mean) / std).astype("float32") for a in (inputs, targets)]
    return scaled[0][:split], scaled[1][:split], scaled[0][split:], scaled[1][split:]


# ----------------------------------------------------------------------------
# The runs
# ----------------------------------------------------------------------------


def run_classification(data: tuple, seed: int, steps: int) -> dict[str, float]:
    """Test accuracy of each variant, from the same initial weights, for the same number of gradient steps
    (`steps`, rounded up to whole epochs of batches of 16)."""
    import keras

    import rnn_state_rewriter as rsr

    x, y, x_test, y_test, classes = data
    epochs = -(-steps // -(-len(x) // 16))

    def fresh() -> keras.Model:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(x.shape[1:])
        hidden = keras.layers.LSTM(32)(keras.layers.Masking(PAD)(inputs))
        return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(hidden))

    def fit(model: keras.Model, count: int) -> keras.Model:
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
        keras.utils.set_random_seed(seed + 1)  # the same batches for every variant
        model.fit(x, y, epochs=count, batch_size=16, verbose=0)
        return model

    def accuracy(model: keras.Model) -> float:
        return float((model.predict(x_test, batch_size=256, verbose=0).argmax(-1) == y_test).mean())

    half = epochs // 2
    pretrained = fit(fresh(), half)
    as_it_is = fresh()
    as_it_is.set_weights(pretrained.get_weights())
    return {
        "zero states": accuracy(fit(fresh(), epochs)),
        "learned start": accuracy(fit(rsr.add_trainable_initial_states(fresh()), epochs)),
        "pretrained, fine-tuned as it is": accuracy(fit(as_it_is, epochs - half)),
        "pretrained, retrofitted, fine-tuned": accuracy(
            fit(rsr.add_trainable_initial_states(pretrained), epochs - half)
        ),
    }


def run_forecast(data: dict[str, np.ndarray], seed: int, epochs: int) -> dict[str, tuple[float, float, np.ndarray]]:
    """sMAPE and MASE of each variant on every series' last `HORIZON` values (means over series and steps),
    and sMAPE per horizon step (`forecast_errors`)."""
    import keras

    import rnn_state_rewriter as rsr

    count = len(data["naive_mae"])
    results = {}
    for variant in FORECAST_VARIANTS:
        keras.utils.set_random_seed(seed)
        series = keras.Input((LOOKBACK, 1), name="series")
        series_id = keras.Input((), dtype="int32", name="series_id")
        outputs = keras.layers.Dense(HORIZON)(keras.layers.LSTM(32)(series))
        model = keras.Model([series, series_id], outputs)
        if variant == FORECAST_VARIANTS[1]:
            model = rsr.add_trainable_initial_states(model)
        elif variant == FORECAST_VARIANTS[2]:
            model = rsr.add_trainable_initial_states(model, context="series_id", num_ids=count)
        model.compile(keras.optimizers.Adam(3e-3), "mae")
        keras.utils.set_random_seed(seed + 1)
        model.fit([data["x"], data["ids"]], data["y"], epochs=epochs, batch_size=64, verbose=0)
        scaled = model.predict([data["x_test"], data["ids_test"]], batch_size=256, verbose=0)
        results[variant] = forecast_errors(scaled * data["scale_test"][:, None], data)
    return results


def forecast_errors(forecast: np.ndarray, data: dict[str, np.ndarray]) -> tuple[float, float, np.ndarray]:
    """(sMAPE, MASE, sMAPE per horizon step)."""
    actual = data["y_test"]
    per_step = smape(forecast, actual).mean(axis=0)
    mase = (np.abs(forecast - actual).mean(axis=1) / data["naive_mae"]).mean()
    return float(per_step.mean()), float(mase), per_step


def run_stream(data: tuple, seed: int, epochs: int) -> dict[str, np.ndarray]:
    """MSE per time step of the test streams for each variant, run as deployed (`streaming_model`, chunk by
    chunk from `start_states`)."""
    import keras

    import rnn_state_rewriter as rsr

    x, y, x_test, y_test = data
    streams, channels = len(x), x.shape[-1]
    chunks = [slice(i, i + CHUNK) for i in range(0, STREAM_STEPS, CHUNK)]
    results = {}
    for variant in STREAM_VARIANTS:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(batch_shape=(streams, CHUNK, channels))
        hidden = keras.layers.LSTM(32, return_sequences=True, stateful=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(channels)(hidden))
        if variant == STREAM_VARIANTS[1]:
            model = rsr.add_trainable_initial_states(model)
        model.compile(keras.optimizers.Adam(3e-3), "mse")
        for _ in range(epochs):
            rsr.reset_states(model)  # each stream starts again: back to its start
            for part in chunks:
                model.train_on_batch(x[:, part], y[:, part])
        stream = rsr.streaming_model(model)
        states = rsr.start_states(model, batch_size=len(x_test))
        errors = []
        for part in chunks:
            prediction, *states = stream.predict_on_batch([x_test[:, part], *states])
            errors.append(((prediction - y_test[:, part]) ** 2).mean(axis=(0, 2)))
        results[variant] = np.concatenate(errors)
    return results


# ----------------------------------------------------------------------------
# Statistics and tables
# ----------------------------------------------------------------------------


def mean_sd(values: list[float], digits: int = 3) -> str:
    values_array = np.asarray(values, dtype="float64")
    spread = values_array.std(ddof=1) if len(values_array) > 1 else 0.0
    return f"{values_array.mean():.{digits}f} ± {spread:.{digits}f}"


def paired(values: list[float], reference: list[float], digits: int = 3) -> str:
    """The mean per-seed difference from the reference, its 95% t-interval, and whether it excludes zero."""
    differences = np.asarray(values, dtype="float64") - np.asarray(reference, dtype="float64")
    if len(differences) < 2:
        return f"{differences.mean():+.{digits}f} (one seed)"
    from scipy import stats

    half = stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences))
    low, high = differences.mean() - half, differences.mean() + half
    distinct = "yes" if low > 0 or high < 0 else "no"
    return f"{differences.mean():+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] {distinct}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    from _common import table

    print(table(header, rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one set of each task, one seed, a few epochs")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; 1 with --quick)")
    parser.add_argument("--tasks", nargs="+", default=["classification", "forecast", "stream"])
    parser.add_argument("--plots", default=None, help="a folder to draw the figures in")
    args = parser.parse_args()
    seeds = range(args.seeds or (1 if args.quick else 5))
    # classification: gradient steps (small sets take more epochs); the others: epochs
    epochs = (
        {"classification": 40, "forecast": 2, "stream": 2}
        if args.quick
        else {
            "classification": 480,
            "forecast": 40,
            "stream": 40,
        }
    )
    from _common import machine

    print(f"# Evidence on real data ({'quick' if args.quick else 'full'}; seeds: {len(seeds)}; {machine()})\n")
    began = time.perf_counter()
    figures = {}
    if "classification" in args.tasks:
        figures["classification"] = classification_tables(seeds, epochs["classification"], args.quick)
    if "forecast" in args.tasks:
        figures["forecast"] = forecast_tables(seeds, epochs["forecast"])
    if "stream" in args.tasks:
        figures["stream"] = stream_tables(seeds, epochs["stream"], args.quick)
    if args.plots:
        draw(figures, args.plots)
    print(f"Ran in {time.perf_counter() - began:.0f} s.")


def classification_tables(seeds: range, steps: int, quick: bool) -> dict[str, dict[str, list[float]]]:
    sets = CLASSIFICATION_SETS[:1] if quick else CLASSIFICATION_SETS
    print(f"## Classification: test accuracy (official splits; LSTM(32), {steps} gradient steps in all)\n")
    rows, comparison, found = [], [], {}
    for name in sets:
        data = classification_data(name)
        runs = [run_classification(data, seed, steps) for seed in seeds]
        found[name] = {variant: [run[variant] for run in runs] for variant in CLASSIFICATION_VARIANTS}
        x, _, x_test, _, classes = data
        shape = f"{len(x)}/{len(x_test)}, {x.shape[1]} steps, {x.shape[2]} ch, {classes} classes"
        rows.append([name, shape, *(mean_sd(found[name][v]) for v in CLASSIFICATION_VARIANTS)])
        comparison.append(
            [
                name,
                paired(found[name]["learned start"], found[name]["zero states"]),
                paired(
                    found[name]["pretrained, retrofitted, fine-tuned"], found[name]["pretrained, fine-tuned as it is"]
                ),
            ]
        )
    print_table(["set", "train/test, shape", *CLASSIFICATION_VARIANTS], rows)
    print("Paired by seed (difference in accuracy, 95% interval, distinguishable from noise):\n")
    print_table(["set", "learned start - zero states", "retrofitted - as it is (fine-tuning)"], comparison)
    return found


def forecast_tables(seeds: range, epochs: int) -> dict[str, object]:
    series = m1_yearly()
    data = forecast_windows(series)
    naive = forecast_errors(np.repeat(data["last"][:, None], HORIZON, axis=1), data)
    print(
        f"## Forecasting: M1 yearly, {len(series)} series, horizon {HORIZON} "
        f"({len(data['x'])} training windows, {len(data['x']) / len(series):.1f} per series; {epochs} epochs)\n"
    )
    runs = [run_forecast(data, seed, epochs) for seed in seeds]
    rows = [["naive (last value)", f"{naive[0]:.2f}", f"{naive[1]:.3f}", "", ""]]
    for variant in FORECAST_VARIANTS:
        smapes = [run[variant][0] for run in runs]
        mases = [run[variant][1] for run in runs]
        reference = [run[FORECAST_VARIANTS[0]][0] for run in runs]
        against = "" if variant == FORECAST_VARIANTS[0] else paired(smapes, reference, 2)
        mase_against = (
            "" if variant == FORECAST_VARIANTS[0] else paired(mases, [run[FORECAST_VARIANTS[0]][1] for run in runs])
        )
        rows.append([variant, mean_sd(smapes, 2), mean_sd(mases), against, mase_against])
    print_table(["variant", "sMAPE %", "MASE", "sMAPE - zero states (paired)", "MASE - zero states (paired)"], rows)
    per_step = {v: np.mean([run[v][2] for run in runs], axis=0) for v in FORECAST_VARIANTS}
    return {"naive": naive[2], **per_step}


def stream_tables(seeds: range, epochs: int, quick: bool) -> dict[str, dict[str, np.ndarray]]:
    sets = STREAM_SETS[:1] if quick else STREAM_SETS
    print(
        f"## Streams: next-step MSE (standardized), streams of {STREAM_STEPS} steps in chunks of {CHUNK}, "
        f"{epochs} epochs\n"
    )
    rows, found = [], {}
    for name in sets:
        data = stream_data(name)
        runs = [run_stream(data, seed, epochs) for seed in seeds]
        found[name] = {v: np.array([run[v] for run in runs]) for v in STREAM_VARIANTS}
        first = {v: list(found[name][v][:, :CHUNK].mean(axis=1)) for v in STREAM_VARIANTS}
        overall = {v: list(found[name][v].mean(axis=1)) for v in STREAM_VARIANTS}
        shape = f"{len(data[0])}/{len(data[2])} streams, {data[0].shape[-1]} ch"
        for v in STREAM_VARIANTS:
            against = v == STREAM_VARIANTS[0]
            rows.append(
                [
                    name,
                    shape,
                    v,
                    mean_sd(first[v]),
                    mean_sd(overall[v]),
                    "" if against else paired(first[v], first[STREAM_VARIANTS[0]]),
                    "" if against else paired(overall[v], overall[STREAM_VARIANTS[0]]),
                ]
            )
    print_table(
        ["recording", "train/test", "variant", "first chunk", "whole stream", "first chunk: - zeros", "whole: - zeros"],
        rows,
    )
    return found


def draw(figures: dict[str, object], folder: str) -> None:
    """The figures a reader looks at first: accuracy per set, sMAPE per horizon step, error per step of a stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    if "classification" in figures:
        found = figures["classification"]
        fig, ax = plt.subplots(figsize=(9, 4.6))
        width = 0.8 / len(CLASSIFICATION_VARIANTS)
        for k, variant in enumerate(CLASSIFICATION_VARIANTS):
            for i, name in enumerate(found):
                values = found[name][variant]
                xs = np.full(len(values), i + (k - 1.5) * width)
                ax.bar(
                    i + (k - 1.5) * width,
                    np.mean(values),
                    width,
                    color=f"C{k}",
                    alpha=0.5,
                    label=variant if i == 0 else None,
                )
                ax.scatter(xs, values, color=f"C{k}", s=10, zorder=3)
        ax.set_xticks(range(len(found)), list(found))
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.05)
        ax.set_title("Classification, official test splits (bars: mean over seeds; dots: each seed)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "classification.png"), dpi=110)
        plt.close(fig)
    if "forecast" in figures:
        found = figures["forecast"]
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = np.arange(1, HORIZON + 1)
        ax.plot(steps, found["naive"], "k--", label="naive (last value)")
        for k, variant in enumerate(FORECAST_VARIANTS):
            ax.plot(steps, found[variant], marker="o", color=f"C{k}", label=variant)
        ax.set_xlabel("years ahead")
        ax.set_ylabel("sMAPE % (mean over series and seeds)")
        ax.set_title("M1 yearly: error per step of the horizon")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "forecast.png"), dpi=110)
        plt.close(fig)
    if "stream" in figures:
        found = figures["stream"]
        fig, axes = plt.subplots(1, len(found), figsize=(6 * len(found), 4), squeeze=False)
        for ax, (name, variants) in zip(axes[0], found.items(), strict=True):
            for k, variant in enumerate(STREAM_VARIANTS):
                curve = variants[variant].mean(axis=0)[: 4 * CHUNK]
                ax.plot(np.arange(1, len(curve) + 1), curve, color=f"C{k}", label=variant)
            for edge in range(CHUNK, 4 * CHUNK, CHUNK):
                ax.axvline(edge + 0.5, color="0.85", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel(f"time step since the reset (chunks of {CHUNK})")
            ax.set_ylabel("next-step MSE (mean over seeds)")
            ax.set_title(name)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "streams.png"), dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()

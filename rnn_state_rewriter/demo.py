"""The package's main job on an embedded task: `rnn-state-rewriter demo`.

The task (generated, nothing to download) is the situation of Gers,
Schraudolph & Schmidhuber (2002, section 5.1): a model trained on long
stretches of a stream is run on short windows cut from it. The stream is a
noisy reading of a level that wanders around `LEVEL`; at every step the model
outputs the stream's exponential moving average, which depends on everything
read so far, before the window too. An LSTM pretrained with zero initial
states on 128-step stretches settles into its usual mid-stream state after a
few steps; on 16-step windows it starts from zero, far from that state, and
its first outputs are far off.

The demo pretrains that LSTM, retrofits it in one line, checks that its
predictions are unchanged, then fine-tunes a plain copy and the retrofitted
copy on the short windows for the same budget, and prints and draws the
validation error per epoch and per time step.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

STEPS = 16  # the short windows
LONG_STEPS = 128  # the stretches the model is pretrained on
LEVEL = 2.0
SMOOTHING = 0.1  # weight of the newest reading in the moving average


def make_stream(length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stream of `length` readings and its moving average (the target).

    The level follows a slow random walk pulled back to `LEVEL`; each reading
    adds noise of standard deviation 0.5; the target at step t is the
    exponential moving average of all readings up to t.
    """
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 0.05, length)
    level = np.empty(length)
    level[0] = LEVEL
    for t in range(1, length):
        level[t] = LEVEL + 0.99 * (level[t - 1] - LEVEL) + shocks[t]
    readings = level + rng.normal(0.0, 0.5, length)
    average = np.empty(length)
    current = LEVEL
    for t in range(length):
        current += SMOOTHING * (readings[t] - current)
        average[t] = current
    return readings, average


def cut_windows(
    stream: tuple[np.ndarray, np.ndarray], count: int, steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`count` windows of `steps` steps from random places of the stream (past its first 500 steps)."""
    readings, average = stream
    starts = np.random.default_rng(seed).integers(500, len(readings) - steps, count)
    index = starts[:, None] + np.arange(steps)
    return readings[index][..., None].astype("float32"), average[index][..., None].astype("float32")


def make_task(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Long stretches for pretraining, short windows for fine-tuning and validation.

    Training data come from one stream, validation windows from another.
    """
    train_stream = make_stream(100_000, seed)
    return {
        "long": cut_windows(train_stream, 256, LONG_STEPS, seed + 1),
        "short": cut_windows(train_stream, 2048, STEPS, seed + 2),
        "validation": cut_windows(make_stream(30_000, seed + 3), 512, STEPS, seed + 4),
    }


def build_model(keras: Any) -> Any:
    inputs = keras.Input((None, 1), name="readings")
    x = keras.layers.LSTM(32, return_sequences=True, name="lstm")(inputs)
    outputs = keras.layers.Dense(1, name="moving_average")(x)
    return keras.Model(inputs, outputs, name="smoother")


def pretrain(keras: Any, task: dict, epochs: int, seed: int, verbose: int = 0) -> Any:
    """The LSTM trained with zero initial states on the long stretches."""
    keras.utils.set_random_seed(seed)
    model = build_model(keras)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    model.fit(*task["long"], epochs=epochs, batch_size=16, verbose=verbose)
    return model


def fine_tune(keras: Any, model: Any, task: dict, epochs: int, seed: int, verbose: int = 0) -> list[float]:
    """Trains `model` on the short windows; returns the validation MSE after each epoch."""
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    history = model.fit(
        *task["short"], validation_data=task["validation"], epochs=epochs, batch_size=64, verbose=verbose
    )
    return [float(v) for v in history.history["val_loss"]]


def error_per_step(model: Any, windows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    x, y = windows
    prediction = model.predict(x, verbose=0)
    return np.asarray(((prediction - y) ** 2).mean(axis=(0, 2)))


def run_demo(output_dir: str = "demo-output", epochs: int = 12, seed: int = 0) -> dict[str, Any]:
    """Runs the demo; writes pictures and the retrofitted model to `output_dir`.

    `epochs` is the length of the pretraining and of each fine-tuning run.
    Returns the numbers it reports (losses per epoch, errors per step).

    Raises:
        ImportError: if matplotlib, which draws the pictures, is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "The demo draws its pictures with matplotlib, which is not installed: "
            "pip install 'rnn-state-rewriter[demo]'"
        ) from error
    import keras

    import rnn_state_rewriter as rsr

    os.makedirs(output_dir, exist_ok=True)
    task = make_task(seed)
    validation = task["validation"]

    print(f"Pretraining an LSTM with zero initial states on {LONG_STEPS}-step stretches for {epochs} epochs")
    pretrained = pretrain(keras, task, epochs, seed, verbose=2)
    retrofitted = rsr.add_trainable_initial_states(pretrained)  # the one line
    x_val = validation[0]
    change = float(np.abs(retrofitted.predict(x_val, verbose=0) - pretrained.predict(x_val, verbose=0)).max())
    print(f"\nRetrofitted: largest change in predictions {change:.3g} (zero initial states)")
    if change > 1e-5:
        raise RuntimeError(f"the retrofit changed predictions by {change}")

    plain = keras.models.clone_model(pretrained)
    plain.set_weights(pretrained.get_weights())
    losses = {}
    for label, model in (("zero states", plain), ("learned states", retrofitted)):
        print(f"\nFine-tuning the {label} model on {STEPS}-step windows for {epochs} epochs")
        losses[label] = fine_tune(keras, model, task, epochs, seed + 5, verbose=2)
    errors = {
        "pretrained (zero states)": error_per_step(pretrained, validation),
        "fine-tuned, zero states": error_per_step(plain, validation),
        "fine-tuned, learned states": error_per_step(retrofitted, validation),
    }
    states = rsr.initial_states(retrofitted)["lstm"]
    model_path = os.path.join(output_dir, "retrofitted.keras")
    retrofitted.save(model_path)

    _report(losses, errors)
    pictures = _draw(Figure, FigureCanvasAgg, output_dir, losses, errors, states)
    print(f"\nWrote {', '.join(pictures + [model_path])}")
    return {
        "losses": losses,
        "errors": errors,
        "prediction_change": change,
        "files": pictures + [model_path],
    }


def _report(losses: dict[str, list[float]], errors: dict[str, np.ndarray]) -> None:
    """Prints the tables and one summary sentence computed from them."""
    zero, learned = losses["zero states"], losses["learned states"]
    print("\nValidation MSE per epoch of fine-tuning (same budget)")
    print(f"{'epoch':>5}  {'zero states':>12}  {'learned states':>14}")
    for epoch, (a, b) in enumerate(zip(zero, learned, strict=True), start=1):
        print(f"{epoch:>5}  {a:>12.4f}  {b:>14.4f}")
    print("\nMean squared error per time step on the validation windows")
    names = list(errors)
    print(f"{'step':>5}  " + "  ".join(f"{name:>26}" for name in names))
    for step in range(STEPS):
        print(f"{step:>5}  " + "  ".join(f"{errors[name][step]:>26.4f}" for name in names))
    plain, ours = errors["fine-tuned, zero states"], errors["fine-tuned, learned states"]
    print(
        f"\nAfter {len(zero)} epochs of fine-tuning each: validation MSE {zero[-1]:.4f} with zero states, "
        f"{learned[-1]:.4f} with learned states ({learned[-1] / zero[-1]:.2f}x); "
        f"at step 0 {plain[0]:.4f} and {ours[0]:.4f} ({ours[0] / plain[0]:.2f}x); "
        f"over steps {STEPS // 2}-{STEPS - 1} {plain[STEPS // 2 :].mean():.4f} and {ours[STEPS // 2 :].mean():.4f} "
        f"({ours[STEPS // 2 :].mean() / plain[STEPS // 2 :].mean():.2f}x)."
    )


def _draw(
    Figure: Any,
    Canvas: Any,
    folder: str,
    losses: dict[str, list[float]],
    errors: dict[str, np.ndarray],
    states: list[np.ndarray],
) -> list[str]:
    colors = {"pretrained (zero states)": "0.6", "zero states": "C0", "learned states": "C1"}
    colors |= {"fine-tuned, zero states": "C0", "fine-tuned, learned states": "C1"}

    def save(figure: Any, name: str) -> str:
        path = os.path.join(folder, name)
        Canvas(figure)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        return path

    def curves(axis: Any) -> None:
        for label, values in losses.items():
            axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, color=colors[label], label=label)
        axis.set(
            xlabel="epoch of fine-tuning",
            ylabel="validation MSE",
            yscale="log",
            title=f"Fine-tuning on {STEPS}-step windows",
        )
        axis.legend()

    def per_step(axis: Any) -> None:
        for label, values in errors.items():
            axis.plot(values, marker="o", markersize=3, color=colors[label], label=label)
        axis.set(xlabel="time step in the window", ylabel="validation MSE", yscale="log", title="Error per time step")
        axis.legend()

    def learned_states(axis: Any) -> None:
        width = 0.4
        units = np.arange(len(states[0]))
        axis.bar(units - width / 2, states[0], width, label="h0")
        axis.bar(units + width / 2, states[1], width, label="c0")
        axis.set(xlabel="LSTM unit", ylabel="value", title="Learned initial state (zero before fine-tuning)")
        axis.legend()

    paths = []
    for name, draw in (
        ("training_curves.png", curves),
        ("error_per_step.png", per_step),
        ("learned_states.png", learned_states),
    ):
        figure = Figure(figsize=(6, 4))
        draw(figure.add_subplot())
        paths.append(save(figure, name))
    figure = Figure(figsize=(15, 4))
    for index, draw in enumerate((curves, per_step, learned_states), start=1):
        draw(figure.add_subplot(1, 3, index))
    paths.append(save(figure, "summary.png"))
    return paths

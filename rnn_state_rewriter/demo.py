"""The package's main job on an embedded task: `rnn-state-rewriter demo`.

The task (generated, nothing to download): short windows of a noisy periodic
signal; at every step the model must output the input of the *previous* step.
Before each window the signal rests at a fixed level, so at step 0 the answer
lies before the window and only the starting state can carry it: a zero state
cannot, a learned one can. The demo trains an LSTM with zero states (the "pretrained" model),
retrofits it in one line, checks its predictions are unchanged, then fine-tunes
a plain copy and the retrofitted copy for the same budget and reports loss per
epoch and error per time step, with pictures.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

STEPS = 16
PERIOD = 16.0
REST = 1.0


def make_task(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows `x` of shape (count, STEPS, 1) and targets `y` (the previous input).

    `x` is a noisy periodic signal of random phase and amplitude. The target at
    step t is the input at step t - 1; before the window the signal is at its
    rest level `REST`, so the target at step 0 is `REST` for every window.
    """
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.5, 1.5, size=(count, 1))
    phase = rng.uniform(0.0, PERIOD, size=(count, 1))
    t = np.arange(STEPS)[None, :]
    x = amplitude * np.sin(2 * np.pi * (t + phase) / PERIOD) + rng.normal(0.0, 0.3, size=(count, STEPS))
    y = np.concatenate([np.full((count, 1), REST), x[:, :-1]], axis=1)
    return x[..., None].astype("float32"), y[..., None].astype("float32")


def build_model(keras: Any) -> Any:
    inputs = keras.Input((STEPS, 1), name="signal")
    x = keras.layers.LSTM(32, return_sequences=True, name="lstm")(inputs)
    outputs = keras.layers.Dense(1, name="previous_value")(x)
    return keras.Model(inputs, outputs, name="echo")


def error_per_step(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    prediction = model.predict(x, verbose=0)
    return np.asarray(((prediction - y) ** 2).mean(axis=(0, 2)))


def _fine_tune(keras: Any, model: Any, data: tuple, epochs: int, label: str) -> list[float]:
    print(f"\nFine-tuning {label} for {epochs} epochs")
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x, y, x_val, y_val = data
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=64, verbose=1)
    return [float(v) for v in history.history["val_loss"]]


def run_demo(output_dir: str = "demo-output", epochs: int = 12, seed: int = 0) -> dict[str, Any]:
    """Runs the demo; writes pictures and the retrofitted model to `output_dir`.

    Returns the numbers it reports (losses per epoch, errors per step).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from rnn_state_rewriter.cli import CliError

        raise CliError("the demo draws with matplotlib: pip install 'rnn-state-rewriter[demo]'") from None
    import keras

    import rnn_state_rewriter as rsr

    os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    x, y = make_task(2048, seed)
    x_val, y_val = make_task(512, seed + 1)
    data = (x, y, x_val, y_val)

    print(f"Pretraining an LSTM with zero initial states for {epochs} epochs")
    pretrained = build_model(keras)
    pretrained.compile(keras.optimizers.Adam(3e-3), "mse")
    history = pretrained.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=64, verbose=1)
    pretrain_loss = [float(v) for v in history.history["val_loss"]]

    retrofitted = rsr.add_trainable_initial_states(pretrained)  # the one line
    change = float(np.abs(retrofitted.predict(x_val, verbose=0) - pretrained.predict(x_val, verbose=0)).max())
    print(f"\nRetrofitted: largest change in predictions {change:.3g} (zero initial states)")
    if change > 1e-5:
        raise RuntimeError(f"the retrofit changed predictions by {change}")

    plain = keras.models.clone_model(pretrained)
    plain.set_weights(pretrained.get_weights())
    keras.utils.set_random_seed(seed + 2)
    zero_loss = _fine_tune(keras, plain, data, epochs, "the plain model (zero initial states)")
    keras.utils.set_random_seed(seed + 2)
    learned_loss = _fine_tune(keras, retrofitted, data, epochs, "the retrofitted model (learned initial states)")

    errors = {
        "pretrained": error_per_step(pretrained, x_val, y_val),
        "fine-tuned, zero states": error_per_step(plain, x_val, y_val),
        "fine-tuned, learned states": error_per_step(retrofitted, x_val, y_val),
    }
    states = rsr.initial_states(retrofitted)["lstm"]
    model_path = os.path.join(output_dir, "retrofitted.keras")
    retrofitted.save(model_path)

    print("\nValidation loss per epoch of fine-tuning (same budget)")
    print(f"{'epoch':>5}  {'zero states':>12}  {'learned states':>14}")
    for epoch, (a, b) in enumerate(zip(zero_loss, learned_loss, strict=True), start=1):
        print(f"{epoch:>5}  {a:>12.5f}  {b:>14.5f}")
    print("\nMean squared error per time step after fine-tuning")
    print(f"{'step':>5}  {'zero states':>12}  {'learned states':>14}")
    for step in range(STEPS):
        print(
            f"{step:>5}  {errors['fine-tuned, zero states'][step]:>12.5f}  "
            f"{errors['fine-tuned, learned states'][step]:>14.5f}"
        )

    pictures = _draw(Figure, FigureCanvasAgg, output_dir, pretrain_loss, zero_loss, learned_loss, errors, states)
    print(f"\nWrote {', '.join(pictures + [model_path])}")
    return {
        "pretrain_loss": pretrain_loss,
        "zero_loss": zero_loss,
        "learned_loss": learned_loss,
        "errors": errors,
        "prediction_change": change,
        "files": pictures + [model_path],
    }


def _draw(
    Figure: Any,
    Canvas: Any,
    folder: str,
    pretrain: list[float],
    zero: list[float],
    learned: list[float],
    errors: dict[str, np.ndarray],
    states: list[np.ndarray],
) -> list[str]:
    def save(figure: Any, name: str) -> str:
        path = os.path.join(folder, name)
        Canvas(figure)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        return path

    def curves(axis: Any) -> None:
        n = len(pretrain)
        axis.plot(range(1, n + 1), pretrain, color="0.6", label="pretraining (zero states)")
        axis.plot(range(n + 1, 2 * n + 1), zero, label="fine-tuning, zero states")
        axis.plot(range(n + 1, 2 * n + 1), learned, label="fine-tuning, learned states")
        axis.axvline(n + 0.5, color="0.8", linestyle="--")
        axis.set(xlabel="epoch", ylabel="validation MSE", yscale="log", title="Training curves")
        axis.legend()

    def per_step(axis: Any) -> None:
        for label, values in errors.items():
            axis.plot(values, marker="o", markersize=3, label=label)
        axis.set(xlabel="time step", ylabel="validation MSE", yscale="log", title="Error per time step")
        axis.legend()

    def learned_states(axis: Any) -> None:
        width = 0.4
        units = np.arange(len(states[0]))
        axis.bar(units - width / 2, states[0], width, label="h0")
        axis.bar(units + width / 2, states[1], width, label="c0")
        axis.set(xlabel="LSTM unit", ylabel="value", title="Learned initial state")
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

"""The demo's task, its failure mode without matplotlib, and its summary sentence."""

import sys

import numpy as np
import pytest

from rnn_state_rewriter import demo


def test_target_is_the_moving_average_of_everything_read_before():
    readings, average = demo.make_stream(2000, seed=0)
    previous = np.concatenate([[demo.LEVEL], average[:-1]])
    np.testing.assert_allclose(average - previous, demo.SMOOTHING * (readings - previous), atol=1e-9)
    x, y = demo.cut_windows((readings, average), count=8, steps=demo.STEPS, seed=1)
    assert x.shape == y.shape == (8, demo.STEPS, 1)
    # The window's first target carries the stream before it: far from what a
    # zero start knows, and not readable from the first reading alone.
    assert abs(float(y[:, 0].mean()) - demo.LEVEL) < 0.5
    assert float(np.abs(y[:, 0, 0] - demo.SMOOTHING * x[:, 0, 0]).min()) > 1.0


def test_task_splits_have_the_documented_lengths():
    task = demo.make_task(seed=0)
    assert task["long"][0].shape[1] == demo.LONG_STEPS
    assert task["short"][0].shape[1] == task["validation"][0].shape[1] == demo.STEPS


def test_missing_matplotlib_raises_an_import_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"rnn-state-rewriter\[demo\]"):
        demo.run_demo(str(tmp_path / "out"), epochs=1)
    assert not (tmp_path / "out").exists()


def test_summary_sentence_is_computed_from_the_numbers(capsys):
    steps = np.linspace(1.0, 0.1, demo.STEPS)
    losses = {"zero states": [0.3, 0.2], "learned states": [0.2, 0.1]}
    errors = {
        "pretrained (zero states)": steps * 3,
        "fine-tuned, zero states": steps,
        "fine-tuned, learned states": steps / 2,
    }
    demo._report(losses, errors)
    out = capsys.readouterr().out
    assert "validation MSE 0.2000 with zero states, 0.1000 with learned states (0.50x)" in out
    assert "at step 0 1.0000 and 0.5000 (0.50x)" in out

"""Each benchmark program runs in its --quick mode and prints its table.

Benchmarks measure; the tests only check that they run and report.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(name: str, *args: str, python: str = sys.executable, backend: str | None = None) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [python, str(BENCHMARKS / name), "--quick", *args], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


HAS_JAX = importlib.util.find_spec("jax") is not None
# PyTorch lives in its own environment (it aborts beside TensorFlow); .ci/run names its interpreter.
TORCH_PYTHON = os.environ.get("RSR_PYTHON_TORCH")
needs_torch_python = pytest.mark.skipif(not TORCH_PYTHON, reason="needs RSR_PYTHON_TORCH, a Python with PyTorch")


def test_overhead_quick_ends_with_the_headline_line():
    # JAX first where installed: each backend in its own process, the headline line is the first one's
    out = run("overhead.py", *(["--backend", "jax", "tensorflow"] if HAS_JAX else []))
    last = out.strip().splitlines()[-1]
    assert last.startswith("overhead train=") and " predict=" in last
    assert "| keras3   | tensorflow" in out and "| tf_keras | tensorflow" in out and "Dense on zero input" in out
    assert "| stateful LSTM  " in out  # the quick run's one extra layer: plain against retrofitted
    # both generations on TensorFlow again under XLA, with both controls; tf-keras' as RNN(cell) layers, and
    # the note says why its LSTM and GRU layers are not timed there
    assert "| keras3   | tensorflow XLA | LSTM " in out
    assert "| tf_keras | tensorflow XLA | LSTM as RNN(cell) " in out
    assert "| tf_keras | tensorflow XLA | stateful LSTM as RNN(cell) " in out
    assert "Not measured: tf_keras on tensorflow XLA with its LSTM and GRU layers" in out
    for control in ("plain layer, a second copy (control)", "zeros as initial_state (no weights)"):
        assert out.count(f"| {control}") == 4 + HAS_JAX  # each generation on TensorFlow with and without XLA; JAX
    xla_train = out.split("on tensorflow XLA: train ")[1].split(" ")[0]
    if not HAS_JAX:  # the headline reads the package's own cost: XLA, not the default executor's schedule
        assert last.startswith(f"overhead train={xla_train} ")
    # every row but the plain layer's has a ratio with its interval and a verdict against 1.02
    rows = [line for line in out.splitlines() if line.startswith("| keras3") or line.startswith("| tf_keras")]
    assert rows and all(line.count("[") == 6 for line in rows)
    assert all(any(v in line for v in ("<= 1.02", "> 1.02", "unresolved")) for line in rows if "plain" not in line)
    if HAS_JAX:
        assert "| keras3   | jax" in out and "LSTM against the plain layer on jax:" in out
        jax_train = out.split("on jax: train ")[1].split(" ")[0]
        assert last.startswith(f"overhead train={jax_train} ")


@needs_torch_python
def test_overhead_measures_pytorch_again_with_subnormals_flushed():
    out = run("overhead.py", "--backend", "torch", "--python", f"torch={TORCH_PYTHON}", "--flush-denormal")
    assert re.search(r"\| keras3 +\| torch +\| LSTM", out) and re.search(r"\| keras3 +\| torch \(FTZ\) +\| LSTM", out)
    assert "LSTM against the plain layer on torch (FTZ):" in out


def test_overhead_refuses_flush_denormal_without_pytorch():
    command = [sys.executable, str(BENCHMARKS / "overhead.py"), "--quick", "--backend", "jax", "--flush-denormal"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "add torch to --backend" in result.stderr


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory needs Linux /proc")
def test_retrofit_quick_reports_time_and_memory_ratios():
    out = run("retrofit.py")
    assert "time ratio" in out and "retrofit extra peak / weights" in out and "check=True CPU time ratio" in out
    assert out.count("| keras3/tensorflow") == 1 and out.count("| tf_keras") == 1


def test_retrofit_paired_gives_a_ratio_with_its_interval_and_verdict():
    out = run("retrofit.py", "--paired", "3")
    rows = [line for line in out.splitlines() if line.startswith(("| keras3/tensorflow", "| tf_keras"))]
    assert len(rows) == 2 and all(line.count("[") == 1 for line in rows), out
    assert all(any(v in line for v in ("<= 1 ", "> 1 ", "unresolved")) for line in rows), out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory needs Linux /proc")
@pytest.mark.skipif(not HAS_JAX, reason="needs JAX beside TensorFlow")
def test_retrofit_measures_only_the_backends_given():
    out = run("retrofit.py", "--backend", "jax")
    assert out.count("| keras3/jax") == 1
    assert "| keras3/tensorflow" not in out and "| tf_keras" not in out  # tf-keras rows come with tensorflow


def test_benefit_quick_reports_every_variant():
    out = run("benefit.py")
    for variant in ("zero states", "learned states", "learned states + noise 0.1"):
        assert f"| {variant}" in out
    assert "Validation MSE per time step" in out
    for variant in ("stateful, reset to a learned state", "chunks apart, learned state", "one learned state per id"):
        assert f"| {variant}" in out
    assert "| stream windows (the demo)" in out and "after each epoch of fine-tuning" in out


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="needs the evidence extra (aeon's data)")
def test_evidence_quick_compares_every_variant_on_real_data():
    out = run("evidence.py")
    assert "| JapaneseVowels" in out and "| pretrained, retrofitted, fine-tuned |" in out  # a column
    for row in ("naive (last value)", "one learned start", "a learned start per series id"):
        assert f"| {row} " in out
    assert "| Daphnet S06R02E0 " in out and "| stateful, reset to a learned start |" in out
    assert "(one seed)" in out  # the paired comparison, which needs seeds to say more


@pytest.mark.tensorflow
def test_streaming_quick_times_a_chunk_against_the_whole_window():
    out = run("streaming.py")
    assert "| window (steps seen) |" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("streaming chunk/window first=") and " last=" in last

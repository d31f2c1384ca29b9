"""Each benchmark program runs in its --quick mode and prints its table.

Benchmarks measure; the tests only check that they run and report.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(name: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), "--quick"], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_overhead_quick_ends_with_the_headline_line():
    out = run("overhead.py")
    last = out.strip().splitlines()[-1]
    assert last.startswith("overhead train=") and " predict=" in last
    assert "| keras3" in out and "| tf_keras" in out and "Dense on zero input" in out
    # every row but the plain layer's has a ratio with its interval and a verdict against 1.02
    rows = [line for line in out.splitlines() if line.startswith("| keras3") or line.startswith("| tf_keras")]
    assert rows and all(line.count("[") == 6 for line in rows)
    assert all(any(v in line for v in ("<= 1.02", "> 1.02", "unresolved")) for line in rows if "plain" not in line)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory needs Linux /proc")
def test_retrofit_quick_reports_time_and_memory_ratios():
    out = run("retrofit.py")
    assert "time ratio" in out and "retrofit extra peak / weights" in out
    assert out.count("| keras3") == 1 and out.count("| tf_keras") == 1


def test_benefit_quick_reports_every_variant():
    out = run("benefit.py")
    for variant in ("zero states", "learned states", "learned states + noise 0.1"):
        assert f"| {variant}" in out
    assert "Validation MSE per time step" in out
    assert "| stream windows (the demo)" in out and "after each epoch of fine-tuning" in out

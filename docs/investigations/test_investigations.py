"""The investigation programs run in their --quick mode and print what they found.

Not part of the test suite (pytest collects `tests/` and the package): these
programs explain past measurements, and their checks read TensorFlow's internal
node names (`lstm/while_grad/body/...`, `_MklMatMul`), which change with
TensorFlow. Run them by hand beside the program you change, from the
repository root:

    pytest docs/investigations/test_investigations.py

PyTorch lives in its own environment (it aborts beside TensorFlow): set
`RSR_PYTHON_TORCH` to its interpreter for the PyTorch programs.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def run(name: str, *args: str, python: str = sys.executable, backend: str | None = None) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [python, str(HERE / name), "--quick", *args], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


HAS_JAX = importlib.util.find_spec("jax") is not None
TORCH_PYTHON = os.environ.get("RSR_PYTHON_TORCH")
needs_torch_python = pytest.mark.skipif(not TORCH_PYTHON, reason="needs RSR_PYTHON_TORCH, a Python with PyTorch")


@needs_torch_python
def test_torch_gru_cost_shows_the_subnormal_products_and_both_settings():
    out = run("torch_gru_cost.py", "--others", sys.executable, python=TORCH_PYTHON, backend="torch")
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    for setting in ("PyTorch's default", "torch.set_flush_denormal(True)"):
        rows = [row for row in cells if row[0] == setting]
        assert len(rows) == 10, out
        # the mechanism, not a timing: every first-step state x gradient term is subnormal
        assert any("subnormal" in row[1] and row[2] == "1.00" for row in rows), out
    assert len([row for row in cells if row[0].endswith("after a first parallel matmul")]) == 1, out
    products = {row[0]: row[1] for row in cells if len(row) == 2}
    assert float(products["PyTorch, PyTorch's default"]) > 0, out  # PyTorch keeps the subnormal
    flushed = ["PyTorch, torch.set_flush_denormal(True)", "TensorFlow", "TensorFlow (tf.function, jit_compile)"]
    assert all(float(products[name]) == 0 for name in [*flushed, "JAX (XLA)"] if name in products), out
    assert "JAX (XLA)" in products or not HAS_JAX, out


@needs_torch_python
def test_torch_heap_counts_page_faults_per_model_under_both_malloc_settings():
    out = run("torch_heap.py", python=TORCH_PYTHON, backend="torch")
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    rows = [row for row in cells[1:] if row[0] != "malloc thresholds"]
    assert [row[0] for row in rows] == ["glibc's defaults"] * 3 + [rows[3][0]] * 3, out
    assert rows[3][0].startswith("fixed (MALLOC_MMAP_THRESHOLD_="), out
    assert [row[1] for row in rows] == ["plain LSTM", "retrofitted", "zeros"] * 2, out
    assert all(float(row[2].replace(",", "")) >= 0 and float(row[3]) > 0 for row in rows), out


VARIANT_NAMES = ["retrofitted", "retrofitted, state frozen at zero", "zeros as initial_state", "Dense on zero input"]


def test_process_spread_reports_each_process_and_the_spread_over_them():
    out = run("process_spread.py")
    rows = [line for line in out.splitlines() if line.startswith("| tensorflow")]
    variants = [line.split("|")[3].strip() for line in rows]
    assert variants == VARIANT_NAMES, out
    assert all(line.count("[") == 2 for line in rows), out  # CPU and wall: median [range] each
    assert "The plain layer's train step, median wall-clock ms per process:" in out, out
    for column in (4, 6):  # two processes, one ratio each
        assert all(len(line.split("|")[column].split(",")) == 2 for line in rows), out
    # each process reads every model's executed graph: the executor's order in the backward loop
    for seed in (0, 1):
        line = next(line for line in out.splitlines() if line.startswith(f"- process {seed}: plain "))
        order = r"(first|queued, \d ahead)"
        assert re.fullmatch(rf"- process \d: plain {order}(; [^;]+ {order} \(\d\.\d{{3}}\)){{4}}", line), line
    grouped = [line.split("|") for line in out.split("grouped by the plain model's order")[1].splitlines()]
    counts = [int(cells[3]) for cells in grouped if len(cells) > 4 and cells[1].strip().startswith(("first", "queued"))]
    assert sum(counts) == 8, out  # 4 variants x 2 processes


def test_process_spread_forms_times_every_way_of_computing_the_start_in_each_process():
    out = run("process_spread.py", "--forms")
    variants = [line.split("|")[3].strip() for line in out.splitlines() if line.startswith("| tensorflow")]
    assert variants[: len(VARIANT_NAMES)] == VARIANT_NAMES, out
    spec = importlib.util.spec_from_file_location("process_spread", HERE / "process_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert [v for v in variants if v.startswith("form: ")] == list(module.FORMS), out
    grouped = [line.split("|") for line in out.split("grouped by the plain model's order")[1].splitlines()]
    counts = [int(cells[3]) for cells in grouped if len(cells) > 4 and cells[1].strip().startswith(("first", "queued"))]
    assert sum(counts) == 2 * len(variants), out  # every variant's order read in both processes


def test_process_spread_timeline_profiles_both_loops_of_every_model():
    out = run("process_spread.py", "--timeline")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in rows[0]] == [
        "model",
        "state gradient",
        "step ms",
        "forward loop ms",
        "backward loop ms",
        "backward idle ms",
        "backward gaps",
        "next %",
    ], out
    models = {cells[0].strip(): cells[1:] for cells in rows[1:]}
    assert list(models) == ["plain", *VARIANT_NAMES], out
    for cells in models.values():
        order, step, forward, backward, idle, _, next_ = (cell.strip() for cell in cells)
        assert 0 < float(idle) < float(backward) < float(step) and 0 < float(forward) < float(step), out
        # the order read from the graph is what the executor did: `first` runs the state gradient next
        assert (order == "first") == (float(next_) > 50), out


def _graph(*nodes: tuple[str, str, list[str]]):
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    for name, op, inputs in nodes:
        graph.node.add(name=name, op=op, input=inputs)
    return graph


def test_state_gradient_order_reads_which_matmul_the_executor_runs_inline():
    pytest.importorskip("tensorflow")
    spec = importlib.util.spec_from_file_location("process_spread", HERE / "process_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loop = "lstm/while_grad/body/_9/gradients/lstm_cell/"
    dz = (loop + "split_grad/concat", "ConcatV2", [loop + "Sigmoid_grad/SigmoidGrad"])
    state = (loop + "MatMul_1_grad/MatMul", "_MklMatMul", [loop + "split_grad/concat", "u:0"])
    kernel = (loop + "MatMul_1_grad/MatMul_1", "_MklMatMul", ["h:0", loop + "split_grad/concat:0"])
    bias = (loop + "BiasAdd_grad/BiasAddGrad", "BiasAddGrad", [loop + "split_grad/concat"])
    # the executor runs the last expensive consumer inline; BiasAddGrad is no matmul and does not count
    assert module.state_gradient_order(_graph(dz, kernel, state, bias)) == "first"
    assert module.state_gradient_order(_graph(dz, state, kernel, bias)) == "queued, 0 ahead"
    assert module.state_gradient_order(_graph(dz, bias, state, kernel)) == "queued, 1 ahead"
    backward = [
        (name.replace("lstm/", "backward_lstm/"), op, [i.replace("lstm/", "backward_lstm/") for i in inputs])
        for name, op, inputs in (dz, state, kernel)
    ]
    assert module.state_gradient_order(_graph(dz, kernel, state, *backward)) == "first/queued, 0 ahead"
    with pytest.raises(RuntimeError, match="names the recurrent gradient differently"):
        module.state_gradient_order(_graph(dz, bias))


def test_process_spread_graphs_show_the_same_loop_in_every_variant():
    out = run("process_spread.py", "--graphs")
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ")}
    assert rows["op"][0].strip() == "plain" and len(rows["op"]) == 5, out
    for loop_op in ("Enter", "Merge", "Switch", "NextIteration", "LoopCond"):
        assert len({cell.strip() for cell in rows[loop_op]}) == 1, out  # the lowered loops are the same
    assert rows["BroadcastTo"][0].strip() == "0" and rows["BroadcastTo"][1].strip() == "2", out

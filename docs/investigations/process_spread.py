"""How much a train-step ratio moves from one process to the next, and where a TensorFlow cost comes from.

`overhead.py` gives each ratio a bootstrap interval over the rounds of one
process. On Keras 3's TensorFlow backend the LSTM's ratios were found to move
between processes by far more than that interval (the retrofitted LSTM 1.007
in one run, 1.114 in another; zeros passed as `initial_state`, which learn
nothing, 0.905 and 1.119). This program runs the same measurement in several
fresh processes, process i seeded with i: interleaved rounds of
`train_on_batch` (`--layer LSTM`, `GRU` or `Bidirectional` (LSTM); 256 units,
batch 64, 100 steps, 32 features) of the plain layer and of four variants that
all carry the plain model's recurrent and output weights, so they differ only
in where the initial state comes from:

- the retrofitted model (`add_trainable_initial_states`);
- the same with its state layers frozen: the state stays exactly zero and gets
  no gradient, so any cost left is the graph's, not the learned values';
- zeros passed as `initial_state`, computed from the input, with no variable;
- the Dense-on-a-zero-input workaround (keras-team/keras#9797), whose state is
  read from variables too.

Per process and variant it prints the median per-round ratio to the plain
layer, for the process's CPU time and for the wall clock; then, over
processes, their median and range; and the plain layer's step time.
`--inter-op N` runs TensorFlow with N inter-op threads, to show whether a cost
comes from how TensorFlow schedules the step's ops across threads.

On TensorFlow each process also reads the graph every model's train step runs
(`TF_DUMP_GRAPH_PREFIX`) and reports, per model, the executor's order in the
backward loop (`state_gradient_order`). There the gradient with respect to the
previous hidden state (`dz @ recurrent_kernel.T`, on the loop's critical path:
the next iteration needs it) and the recurrent kernel's gradient
(`h.T @ dz`, only summed) both wait for `dz`. TensorFlow's executor runs the
last expensive op made ready on the thread that finished `dz` and queues the
others for the pool, so the graph's node order decides whether the state
gradient goes *first* or is *queued* behind the kernel's (and how many ops the
pool gets before it: `queued, N ahead`). A table groups the
ratios by the plain model's order and the variant's. `--timeline` shows what
that order does: one process's train steps under TensorFlow's profiler, with
the span of each loop and the time the backward loop's threads sit idle.

    python docs/investigations/process_spread.py [--processes 5] [--rounds 21] [--layer LSTM|GRU|Bidirectional]
    python docs/investigations/process_spread.py --inter-op 1
    python docs/investigations/process_spread.py --graphs
    python docs/investigations/process_spread.py --timeline [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# the benchmarks' shared helpers (_common.py)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))

UNITS, BATCH, STEPS, FEATURES = 256, 64, 100, 32
RETROFITTED, FROZEN, ZEROS, DENSE = (
    "retrofitted",
    "retrofitted, state frozen at zero",
    "zeros as initial_state",
    "Dense on zero input",
)
VARIANTS = [RETROFITTED, FROZEN, ZEROS, DENSE]
# `--forms`: other ways of computing a learned start (its variables: one vector per state, zeros), each a
# candidate for the executor's fast order; `zero` is the input's first step times zero, of shape (batch, 1).
FORMS = {
    "form: zero + w": lambda tf, zero, w, units: zero + w,
    "form: BiasAdd(zeros, w)": lambda tf, zero, w, units: tf.nn.bias_add(tf.repeat(zero, units, axis=1), w),
    "form: zero @ constant + w": lambda tf, zero, w, units: tf.matmul(zero, tf.zeros((1, units))) + w,
    "form: BiasAdd(zero @ w, w)": lambda tf, zero, w, units: tf.nn.bias_add(tf.matmul(zero, w[None, :]), w),
    # the workaround's graph with its kernel frozen: one more (non-trainable) variable per state
    "form: BiasAdd(zero @ frozen kernel, w)": None,
}


KINDS = {"LSTM": "LSTM", "GRU": "GRU", "Bidirectional": "Bidirectional LSTM"}  # --layer -> _common's kind


def build(layer: str, seed: int, forms: bool = False) -> dict:
    """The plain model and the four variants, all with the plain model's recurrent and output weights; with
    `forms`, also a model for each of `FORMS` (TensorFlow)."""
    import keras as K
    from _common import dense_on_zero_input, head_model, model_with_states, recurrent_layer, zeros_as_initial_state

    import rnn_state_rewriter as rsr

    kind = KINDS[layer]
    K.utils.set_random_seed(seed)

    def with_states(source):
        model = model_with_states(K, kind, UNITS, STEPS, FEATURES, source)
        for target, origin in ((model.layers[-2], plain.layers[1]), (model.layers[-1], plain.layers[2])):
            target.set_weights(origin.get_weights())  # the recurrent layer and the Dense(1) head
        return model

    plain = head_model(K, STEPS, FEATURES, lambda t: recurrent_layer(K, kind, UNITS)(t))
    frozen = rsr.add_trainable_initial_states(plain)
    state_layers = [each for each in frozen.layers if isinstance(each, rsr.TrainableInitialState)]
    if not state_layers:
        raise RuntimeError("the retrofitted model has no TrainableInitialState layer to freeze")
    for state_layer in state_layers:
        state_layer.trainable = False  # the state stays exactly zero and gets no gradient
    models = {
        "plain": plain,
        RETROFITTED: rsr.add_trainable_initial_states(plain),
        FROZEN: frozen,
        ZEROS: with_states(zeros_as_initial_state),
        DENSE: with_states(dense_on_zero_input),
    }
    for name in FORMS if forms else []:
        models[name] = with_states(lambda K, kind, units, name=name: form_states(K, kind, units, name))
    return models


def form_states(K, kind: str, units: int, name: str):
    """For `initial_state=`: the states of one of `FORMS`, from a layer holding one zero vector per state."""
    import tensorflow as tf
    from _common import STATE_COUNTS

    class Form(K.layers.Layer):
        def build(self, input_shape):
            count = STATE_COUNTS[kind]
            self.starts = [self.add_weight(shape=(units,), initializer="zeros", name=f"s{i}") for i in range(count)]
            if FORMS[name] is None:
                self.kernels = [
                    self.add_weight(shape=(1, units), initializer="zeros", trainable=False, name=f"k{i}")
                    for i in range(count)
                ]

        def call(self, x):
            zero = x[:, 0, :1] * 0.0
            if FORMS[name] is None:
                return [tf.nn.bias_add(tf.matmul(zero, k), w) for k, w in zip(self.kernels, self.starts, strict=True)]
            return [FORMS[name](tf, zero, w, units) for w in self.starts]

    return lambda inputs: Form()(inputs)


def data(seed: int) -> tuple:
    """The timed task's inputs and targets, drawn with `seed`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    return x, rng.normal(size=(BATCH, 1)).astype("float32")


def warm_up(models: dict, x, y) -> dict:
    """Compiles each model and runs three train steps; on TensorFlow with `TF_DUMP_GRAPH_PREFIX` set, returns
    the `GraphDef` each model's train step runs, as its first step dumped it (else nothing)."""
    import keras as K

    dumping = K.backend.backend() == "tensorflow" and "TF_DUMP_GRAPH_PREFIX" in os.environ
    graphs = {}
    for name, m in models.items():
        before = dumped_train_graphs() if dumping else set()
        m.compile(K.optimizers.Adam(1e-3), "mse")
        m.train_on_batch(x, y)
        if dumping:
            graphs[name] = dumped_train_graph(before)
        for _ in range(2):
            m.train_on_batch(x, y)
    return graphs


def measure(layer: str, rounds: int, seed: int, inter_op: int | None, forms: bool = False) -> dict:
    """One process: the median per-round CPU and wall time ratio of each variant to the plain layer; on
    TensorFlow with `TF_DUMP_GRAPH_PREFIX` set, each model's `state_gradient_order` too."""
    if inter_op is not None:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    import numpy as np
    from _common import interleaved_times

    x, y = data(seed)
    models = build(layer, seed, forms)
    orders = {name: state_gradient_order(graph) for name, graph in warm_up(models, x, y).items()}
    times = interleaved_times({name: lambda m=m: m.train_on_batch(x, y) for name, m in models.items()}, rounds)
    ratios = {
        clock: {
            name: float(np.median(times[name][clock] / times["plain"][clock])) for name in models if name != "plain"
        }
        for clock in ("cpu", "wall")
    }
    return {**ratios, "plain ms": float(np.median(times["plain"]["wall"]) * 1000), "order": orders}


STATE_GRADIENT = "MatMul_1_grad/MatMul"  # the gradient of `h_tm1 @ recurrent_kernel` with respect to h_tm1


def state_gradient_order(graph) -> str:
    """`first` or `queued, N ahead` for each recurrent backward loop of a train step's executed `GraphDef`,
    joined by `/`.

    Keras 3's LSTM and GRU cells compute `inputs @ kernel` and then `h_tm1 @ recurrent_kernel`, which
    TensorFlow names `MatMul` and `MatMul_1`; the gradient of the latter with respect to `h_tm1` is
    `MatMul_1_grad/MatMul` inside the backward loop (`while_grad`). Its first input, the gradient of the
    matmul's output, also feeds the recurrent kernel's gradient. When that input is computed, TensorFlow's
    executor (`ExecutorState::ScheduleReady`) runs the last expensive consumer, in the graph's edge order,
    on the same thread and hands the others to the thread pool, in that order. `first`: the state gradient
    is that last matmul consumer; `queued, N ahead`: it is not, and N consumers are handed to the pool
    before it.
    """
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for each in node.input:
            consumers.setdefault(each.split(":")[0], []).append(node.name)
    by_name = {node.name: node for node in graph.node}
    orders = []
    for source, state_gradient in state_gradients(graph):
        matmuls = [name for name in consumers[source] if by_name[name].op.endswith("MatMul")]
        ahead = consumers[source].index(state_gradient)
        orders.append("first" if matmuls[-1] == state_gradient else f"queued, {ahead} ahead")
    return "/".join(orders)


def state_gradients(graph) -> list[tuple[str, str]]:
    """For each recurrent backward loop of a train step's executed `GraphDef`: the names of the node whose
    output the state gradient takes (`dz`) and of the state gradient (see `state_gradient_order`)."""
    pairs = [
        (node.input[0].split(":")[0], node.name)
        for node in graph.node
        if "while_grad" in node.name and node.name.endswith("/" + STATE_GRADIENT) and node.op.endswith("MatMul")
    ]
    if not pairs:
        raise RuntimeError(
            f"no `{STATE_GRADIENT}` in a backward loop of the train step's graph: this TensorFlow or Keras "
            "names the recurrent gradient differently, so the executor's order cannot be read"
        )
    return pairs


def dumped_train_graph(before: set[str]):
    """The `GraphDef` of the one train step TensorFlow dumped (`TF_DUMP_GRAPH_PREFIX`) since `before` (a set of
    paths, as returned by `dumped_train_graphs()`): after Grappler and the lowering of loops, as the executor
    runs it."""
    from google.protobuf import text_format
    from tensorflow.core.framework import graph_pb2

    dumped = sorted(dumped_train_graphs() - before)
    if len(dumped) != 1:
        raise RuntimeError(f"expected one dumped train-step graph, found {len(dumped)}")
    graph = graph_pb2.GraphDef()
    with open(dumped[0]) as handle:
        text_format.Parse(handle.read(), graph)
    return graph


def graph_dump_env(directory: str) -> dict[str, str]:
    """The environment variables that make a TensorFlow child dump every graph it runs into `directory`."""
    return {"TF_DUMP_GRAPH_PREFIX": directory, "TF_DUMP_GRAPH_NAME_FILTER": "*"}


def dumped_train_graphs() -> set[str]:
    """The paths of the train-step graphs dumped so far."""
    import glob

    return set(
        glob.glob(os.path.join(os.environ["TF_DUMP_GRAPH_PREFIX"], "*one_step_on_data*after_partition_passes.pbtxt"))
    )


def executed_ops(layer: str) -> dict[str, dict[str, int]]:
    """One process, run with `TF_DUMP_GRAPH_PREFIX`: the op counts of the graph each model's train step runs.

    That is the graph TensorFlow hands its executor, after Grappler and the
    lowering of loops into `Enter`/`Merge`/`Switch`/`NextIteration`/`Exit`.
    """
    from collections import Counter

    x, y = data(0)
    graphs = warm_up(build(layer, 0), x, y)
    return {name: dict(Counter(node.op for node in graph.node)) for name, graph in graphs.items()}


def print_executed_ops(python: str, layer: str) -> None:
    """Runs `executed_ops` in a child and prints the op types whose counts differ between the models."""
    from _common import child_env, table

    with tempfile.TemporaryDirectory() as dump:
        env = {**child_env("tensorflow"), **graph_dump_env(dump)}
        command = [python, __file__, "--child", "--graphs", "--layer", layer]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the graph-dumping process failed:\n{done.stderr[-3000:]}")
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    names = list(counts)
    ops = sorted({op for each in counts.values() for op in each})
    loop = ("Enter", "Merge", "Switch", "NextIteration", "Exit", "LoopCond")
    rows = [["all ops", *(str(sum(counts[n].values())) for n in names)]]
    rows += [[op, *(str(counts[n].get(op, 0)) for n in names)] for op in loop]
    rows += [
        [op, *(str(counts[n].get(op, 0)) for n in names)]
        for op in ops
        if op not in loop and len({counts[n].get(op, 0) for n in names}) > 1
    ]
    print(
        f"Keras 3 {layer} on TensorFlow: ops of the graph each train step runs (after Grappler and loop lowering). "
        "The loop ops come first, then every other op type whose count differs between the models.\n"
    )
    print(table(["op", *names], rows))


PROFILER_BOOKKEEPING = ("ThreadpoolListener", "ExecutorState", "ExecutorDoneCallback", "Memory")


def timelines(layer: str, rounds: int) -> dict[str, dict]:
    """One process: every model's train steps under TensorFlow's profiler, `rounds` rounds of 4 steps each,
    interleaved; per model the median over steps of what the inter-op threads did.

    An op is an event on a `tf_Compute` thread (TensorFlow's inter-op pool) that is not profiler or executor
    bookkeeping. The loops are told apart by name: the backward loop's ops have `while_grad` in theirs, the
    forward loop's `/while/body`. `idle` is the time inside the backward loop's span when neither thread runs
    one of its ops, `gaps` the number of such intervals. The profiler slows every step down. Needs
    `TF_DUMP_GRAPH_PREFIX`: each model's `state_gradient_order` and its state gradient's input come from there.
    """
    import glob

    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    x, y = data(0)
    models = build(layer, 0)
    graphs = warm_up(models, x, y)
    state_gradient_of = {name: dict(state_gradients(graph)) for name, graph in graphs.items()}
    steps: dict[str, list[list[float]]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as logs:
        for r in range(rounds):
            for i, (name, m) in enumerate(models.items()):
                logdir = os.path.join(logs, f"{r}-{i}")
                tf.profiler.experimental.start(logdir)
                for _ in range(4):
                    m.train_on_batch(x, y)
                tf.profiler.experimental.stop()
                (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
                space = xplane_pb2.XSpace()
                with open(path, "rb") as handle:
                    space.ParseFromString(handle.read())
                (host,) = [plane for plane in space.planes if plane.name == "/host:CPU"]
                steps[name] += _step_timelines(host, state_gradient_of[name])
    labels = ("step ms", "forward loop ms", "backward loop ms", "backward idle ms", "backward gaps", "next %")
    medians = {name: np.median(np.array(rows), axis=0).tolist() for name, rows in steps.items()}
    return {
        name: {"order": state_gradient_order(graphs[name]), **dict(zip(labels, medians[name], strict=True))}
        for name in steps
    }


def _step_timelines(host, state_gradient_of: dict[str, str]) -> list[list[float]]:
    """Per train step on one profiled host plane: step, forward-loop span, backward-loop span, backward idle
    time (ms), the number of idle gaps, and the percentage of backward iterations in which the thread that
    computed `dz` ran the state gradient next (`state_gradient_of`: `dz`'s node name -> the state gradient's)."""
    names = host.event_metadata

    def events(line):
        for event in line.events:
            start = line.timestamp_ns * 1000 + event.offset_ps
            yield start, start + event.duration_ps, names[event.metadata_id].name

    (python,) = [line for line in host.lines if line.name == "python"]
    threads = [
        sorted(event for event in events(line) if not event[2].startswith(PROFILER_BOOKKEEPING))
        for line in host.lines
        if line.name.startswith("tf_Compute")
    ]
    ops = sorted(event for thread in threads for event in thread)
    node = lambda event: event[2].rsplit(":", 1)[0]  # noqa: E731  (profiler events are "node name:op type")

    def next_op(thread: list, i: int):
        """The first op on the thread that starts after op i ends (events nested in an op, such as a kernel's
        `ParallelFor`, start before)."""
        j = i + 1
        while j < len(thread) and thread[j][0] < thread[i][1]:
            j += 1
        return thread[j] if j < len(thread) else (0, 0, "")

    # (start of each dz, whether the same thread's next op was its state gradient)
    followed = [
        (thread[i][0], node(next_op(thread, i)) == state_gradient_of[node(thread[i])])
        for thread in threads
        for i in range(len(thread))
        if node(thread[i]) in state_gradient_of
    ]
    rows = []
    for begin, end, name in events(python):
        if name != "TFE_Py_ExecuteCancelable":  # the call of the compiled train step
            continue
        mine = [op for op in ops if begin <= op[0] < end]
        backward = [op for op in mine if "while_grad" in op[2]]
        forward = [op for op in mine if "/while/body" in op[2] and "while_grad" not in op[2]]
        if not backward or not forward:
            raise RuntimeError("a profiled train step has no forward or no backward recurrent loop")
        idle, gaps, reached = 0, 0, backward[0][1]
        for start, stop, _ in backward[1:]:
            if start > reached:
                idle, gaps = idle + start - reached, gaps + 1
            reached = max(reached, stop)
        span = lambda loop: (max(op[1] for op in loop) - loop[0][0]) / 1e9  # noqa: E731
        next_ = [was for start, was in followed if begin <= start < end]
        if not next_:
            raise RuntimeError("no profiled op of a train step has the name of the state gradient's input")
        share = 100 * sum(next_) / len(next_)
        rows.append([(end - begin) / 1e9, span(forward), span(backward), idle / 1e9, gaps, share])
    return rows


def print_timelines(python: str, layer: str, rounds: int) -> None:
    """Runs `timelines` in a child and prints its table."""
    from _common import child_env, table

    command = [python, __file__, "--child", "--timeline", "--layer", layer, "--rounds", str(rounds)]
    with tempfile.TemporaryDirectory() as dump:
        env = {**child_env("tensorflow"), **graph_dump_env(dump)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the profiled process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    labels = list(next(iter(result.values())))
    print(
        f"Keras 3 {layer} on TensorFlow, one process, {rounds} interleaved rounds of 4 profiled train steps per "
        "model: the median over steps of what TensorFlow's inter-op threads did. The loops' spans run from their "
        "first op's start to their last op's end; idle: time in the backward loop's span when no thread runs one "
        "of its ops, in that many gaps; state gradient: the executor's order read from the graph (see --help); "
        "next %: the backward iterations in which the thread that computed dz ran the state gradient next. "
        "The profiler slows every step.\n"
    )
    labels.remove("order")
    rows = [
        [
            name,
            values["order"],
            *(f"{values[label]:.1f}" if "ms" in label else f"{values[label]:.0f}" for label in labels),
        ]
        for name, values in result.items()
    ]
    print(table(["model", "state gradient", *labels], rows))


def order_table(per_process: list[dict]) -> str:
    """The wall-clock ratios of every variant in every process, grouped by (plain's order, variant's order):
    how many, and their median [lowest, highest]."""
    import numpy as np
    from _common import table

    groups: dict[tuple[str, str], list[float]] = {}
    for p in per_process:
        for name in p["wall"]:
            groups.setdefault((p["order"]["plain"], p["order"][name]), []).append(p["wall"][name])
    rows = [
        [plain, variant, str(len(ratios)), f"{np.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]"]
        for (plain, variant), ratios in sorted(groups.items())
    ]
    return table(["plain's order", "variant's order", "variants x processes", "wall ratio median [range]"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=5, help="fresh processes (default 5)")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds per process (default 21)")
    parser.add_argument(
        "--layer", choices=["LSTM", "GRU", "Bidirectional"], default="LSTM", help="Bidirectional: of LSTM"
    )
    parser.add_argument(
        "--inter-op",
        type=int,
        metavar="N",
        help="TensorFlow only: run each process with N inter-op threads (tf.config.threading)",
    )
    parser.add_argument(
        "--graphs",
        action="store_true",
        help="instead of timing: the op counts of the graph each model's train step runs, where they differ",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="instead of timing: one process's train steps under TensorFlow's profiler, loop by loop",
    )
    parser.add_argument(
        "--forms",
        action="store_true",
        help="TensorFlow only: also time other ways of computing a learned start (FORMS), each in every process",
    )
    parser.add_argument("--quick", action="store_true", help="2 processes of 2 rounds (a smoke run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    from _common import backend_arguments, backend_pythons, child_env, machine, table

    backend_arguments(parser)
    args = parser.parse_args()
    if args.forms and args.backend != ["tensorflow"]:
        parser.error("`--forms` builds its starts with TensorFlow's ops; it takes `--backend tensorflow` alone.")
    if args.inter_op is not None and args.backend != ["tensorflow"]:
        parser.error(
            "`--inter-op` sets TensorFlow's threads; it takes `--backend tensorflow` alone. "
            f"Received: --backend {' '.join(args.backend)}"
        )
    if args.quick:
        args.processes, args.rounds = 2, 2
    if args.child:
        if args.graphs:
            result = executed_ops(args.layer)
        elif args.timeline:
            result = timelines(args.layer, args.rounds)
        else:
            result = measure(args.layer, args.rounds, args.seed, args.inter_op, args.forms)
        print(json.dumps(result))
        return
    if args.timeline:
        if args.backend != ["tensorflow"]:
            parser.error("`--timeline` profiles TensorFlow's threads; it takes `--backend tensorflow` alone.")
        print_timelines(backend_pythons(args.backend, args.python)["tensorflow"], args.layer, args.rounds)
        return
    if args.graphs:
        if args.backend != ["tensorflow"]:
            parser.error("`--graphs` shows TensorFlow's graphs; it takes `--backend tensorflow` alone.")
        print_executed_ops(backend_pythons(args.backend, args.python)["tensorflow"], args.layer)
        return
    import numpy as np

    pythons = backend_pythons(args.backend, args.python)
    rows, plain_steps, orders, per_process_tf = [], [], [], []
    for backend in args.backend:
        per_process = []
        for seed in range(args.processes):
            command = [pythons[backend], __file__, "--child", "--layer", args.layer, "--rounds", str(args.rounds)]
            command += ["--seed", str(seed)] + (["--inter-op", str(args.inter_op)] if args.inter_op is not None else [])
            command += ["--forms"] if args.forms else []
            env = child_env(backend, steady_heap=True)
            with tempfile.TemporaryDirectory() as dump:
                if backend == "tensorflow":  # the child reads each model's executed graph from there
                    env.update(graph_dump_env(dump))
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"a {backend} process failed:\n{done.stderr[-3000:]}")
            per_process.append(json.loads(done.stdout.strip().splitlines()[-1]))
        for name in per_process[0]["wall"]:
            row = [backend, args.layer, name]
            for clock in ("cpu", "wall"):
                ratios = np.array([p[clock][name] for p in per_process])
                row.append(", ".join(f"{r:.3f}" for r in ratios))
                row.append(f"{np.median(ratios):.3f} [{ratios.min():.3f}, {ratios.max():.3f}]")
            rows.append(row)
        plain_steps.append(f"- {backend}: " + ", ".join(f"{p['plain ms']:.1f}" for p in per_process))
        if backend == "tensorflow" and per_process[0]["order"]:
            per_process_tf = per_process
            orders = [
                f"- process {seed}: plain {p['order']['plain']}; "
                + "; ".join(f"{name} {p['order'][name]} ({p['wall'][name]:.3f})" for name in p["wall"])
                for seed, p in enumerate(per_process)
            ]
    print(f"Machine: {machine(pythons)}")
    threads = f"; {args.inter_op} inter-op thread(s)" if args.inter_op is not None else ""
    print(
        f"{args.processes} processes of {args.rounds} interleaved rounds each (process i seeded with i{threads}); "
        "per process, the median of per-round time ratios to the plain layer, for the process's CPU time and the "
        "wall clock; then their median [lowest, highest] over processes.\n"
    )
    header = ["backend", "layer", "variant", "CPU, each process", "CPU median [range]", "wall, each process"]
    print(table([*header, "wall median [range]"], rows))
    print("\nThe plain layer's train step, median wall-clock ms per process:")
    for line in plain_steps:
        print(line)
    if orders:
        print(
            "\nTensorFlow: in each model's backward loop, does the executor run the gradient with respect to the "
            "previous state on the thread that computed its input (first), or queue it behind the recurrent "
            "kernel's gradient, with N ops handed to the pool before it (queued, N ahead)? Per process, each "
            "model's order and wall-clock ratio:"
        )
        print("\n".join(orders))
        print("\nThe wall-clock ratios grouped by the plain model's order and the variant's, over all processes:\n")
        print(order_table(per_process_tf))


if __name__ == "__main__":
    main()

"""Running one command as a process: signals that end it cleanly, TensorFlow's log lines, one-line errors.

Importing this module imports neither Keras nor TensorFlow: `main()` first
keeps TensorFlow's start-up log lines off the terminal (it sets
`TF_CPP_MIN_LOG_LEVEL=2` unless the user set it), then imports them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from rnn_state_rewriter.cli.errors import PROG, CliError
from rnn_state_rewriter.cli.parser import build_parser


class _Interrupted(BaseException):
    """A signal that ends the command (SIGTERM, SIGHUP), raised where the command is, as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While the command runs, SIGTERM and SIGHUP raise `_Interrupted`, so that cleanup runs on the way out.

    (Their default would end the process at once: a temporary file left beside
    the output, and no chance to stop the file reader.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise _Interrupted(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:  # `nohup` ignores SIGHUP: kept
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, 1 on failure, 2 on usage errors).

    Interrupted by Ctrl-C, SIGTERM or SIGHUP, it stops its file reader, removes
    what it was writing, says so in one line and returns 128 plus the signal's
    number (130 for Ctrl-C).

    Keeps TensorFlow's start-up log lines off the terminal unless the user set
    `TF_CPP_MIN_LOG_LEVEL`: this is the only place the package sets an
    environment variable, before anything imports TensorFlow.
    """
    capture = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    source, output = getattr(args, "input", getattr(args, "model", "")), getattr(args, "output", None)
    if output is not None and os.path.realpath(source) == os.path.realpath(output):
        parser.error("OUTPUT must differ from INPUT: the input file is never overwritten")
    logs: list[str] = []
    try:
        with _signals_interrupt(), _native_logs_captured(capture, logs):
            return int(args.run(args))
    except (KeyboardInterrupt, _Interrupted) as error:
        signum = error.signum if isinstance(error, _Interrupted) else signal.SIGINT
        print(f"{PROG}: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + int(signum)
    except CliError as error:
        _report(str(error), error, args.debug, logs)
    except Exception as error:  # a failure nobody foresaw still ends in one line
        text = (str(error).strip().splitlines() or [""])[0]
        message = f"unexpected {type(error).__name__}: {text} (rerun with --debug for the traceback)"
        _report(message, error, args.debug, logs)
    return 1


@contextlib.contextmanager
def _native_logs_captured(enabled: bool, logs: list[str]) -> Iterator[None]:
    """Sends what native code writes to stderr (TensorFlow's log lines) to `logs`; ours still shows.

    TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA, CPU features)
    and converter lines through absl before reading `TF_CPP_MIN_LOG_LEVEL`,
    so the variable alone does not silence them: file descriptor 2 is
    pointed at a temporary file while the command runs, and `sys.stderr` at
    the terminal.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    previous = sys.stderr
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        encoding = getattr(previous, "encoding", None) or "utf-8"
        sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding=encoding, errors="backslashreplace")
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = previous
            os.dup2(terminal, 2)
            os.close(terminal)
            log.seek(0)
            logs.append(log.read().decode(errors="replace"))


def _report(message: str, error: Exception, debug: bool, logs: list[str]) -> None:
    if debug:
        print("".join(logs).rstrip(), file=sys.stderr)
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        details = getattr(error, "details", "")
        if details:
            print(details.rstrip(), file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)

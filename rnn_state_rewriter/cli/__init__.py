"""The command line: `rnn-state-rewriter add | convert | inspect | export | demo`.

Model files are untrusted input: every failure ends in one line on stderr and
exit status 1 (`--debug` adds the traceback); nothing is written and the input
is never changed. Importing the command line imports neither Keras nor
TensorFlow. Its modules, in the order a command runs through them:

- `process.py`: `main`, signals, TensorFlow's log lines, one-line errors.
- `parser.py`: the commands and their options.
- `commands.py`: what each command does.
- `files.py`: loading model files safely, custom objects, atomic outputs.
- `errors.py`: `CliError` and the program's name.
"""

from __future__ import annotations

from rnn_state_rewriter.cli.errors import PROG, CliError
from rnn_state_rewriter.cli.parser import build_parser
from rnn_state_rewriter.cli.process import main

__all__ = ["PROG", "CliError", "build_parser", "main"]

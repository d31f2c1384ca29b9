"""The command line's one error: a failure explained in one line, exit status 1; and its name."""

from __future__ import annotations

PROG = "rnn-state-rewriter"


class CliError(Exception):
    """A failure explained in one line; exit status 1. `details`: more for `--debug`."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details

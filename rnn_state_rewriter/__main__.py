"""`python -m rnn_state_rewriter`: the command line."""

from rnn_state_rewriter.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

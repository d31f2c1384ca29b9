"""The command line interrupted while it reads a file, and on a file that makes HDF5 hang.

The file of these tests makes HDF5 hang forever while the command's reader
child reads it: the command is interrupted (or killed) while it waits for
that child, and must leave no child behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BACKEND, backend_env

HANGS = Path(__file__).parent / "data" / "hang_tf_keras_bit_flips.h5"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")


def start(tmp_path: Path, *args: str, ignoring: tuple[signal.Signals, ...] = ()) -> subprocess.Popen:
    """The command, started as a terminal starts it, or with the signals `ignoring` ignored (as `nohup` does)."""
    command = [sys.executable, "-m", "rnn_state_rewriter", *args]
    return subprocess.Popen(
        command,
        cwd=tmp_path,
        env=backend_env(BACKEND),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _as_in_a_terminal(ignoring),
    )


def _as_in_a_terminal(ignoring: tuple[signal.Signals, ...] = ()) -> None:
    """The signals' default actions, as a command run in a terminal has them (a shell's background job,
    such as a CI script started with `&`, ignores SIGINT, and `nohup` SIGHUP: the command keeps that)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN if signum in ignoring else signal.SIG_DFL)


def reader_of(process: subprocess.Popen, within: float = 60.0) -> int:
    """The pid of the command's reader child, once it runs."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        if children:
            time.sleep(0.5)  # the child is reading: HDF5 hangs within a fraction of a second
            return int(children[0])
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no reader child within {within} s")


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process ended (or is a zombie nobody has reaped yet) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_ends_the_command_in_one_line_and_leaves_no_reader(tmp_path, signum):
    output = tmp_path / "out.keras"
    process = start(tmp_path, "add", str(HANGS), str(output), "--read-timeout", "300")
    reader = reader_of(process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert stderr.strip().splitlines() == [f"rnn-state-rewriter: interrupted by {signum.name}"]
    assert gone(reader), f"the reader {reader} still runs after {signum.name}"
    assert list(tmp_path.iterdir()) == [], "something was written"


def test_a_signal_the_command_was_started_ignoring_stays_ignored(tmp_path):
    """`nohup rnn-state-rewriter ...` keeps running when the terminal hangs up."""
    process = start(tmp_path, "inspect", str(HANGS), "--read-timeout", "300", ignoring=(signal.SIGHUP,))
    reader = reader_of(process)
    process.send_signal(signal.SIGHUP)
    time.sleep(2)
    assert process.poll() is None and not gone(reader, within=0), "SIGHUP ended a command started ignoring it"
    process.kill()
    process.communicate(timeout=60)


def test_the_reader_dies_with_a_command_that_is_killed(tmp_path):
    process = start(tmp_path, "inspect", str(HANGS), "--read-timeout", "300")
    reader = reader_of(process)
    process.kill()  # SIGKILL: the command cannot clean up; the kernel ends its child
    process.communicate(timeout=60)
    try:
        assert gone(reader), f"the reader {reader} outlived its killed parent"
    finally:
        if not gone(reader, within=0):
            os.kill(reader, signal.SIGKILL)


def test_a_small_file_that_hangs_is_refused_within_seconds_without_a_read_timeout(tmp_path):
    started = time.monotonic()
    process = start(tmp_path, "inspect", str(HANGS))
    _, stderr = process.communicate(timeout=120)
    elapsed = time.monotonic() - started
    assert process.returncode == 1
    assert "did not finish within 10 s (the limit for a file of 0.0165 MB;" in stderr, stderr
    assert elapsed < 40, f"refused after {elapsed:.0f} s"


def test_the_read_limit_follows_the_size_of_the_file(tmp_path):
    from rnn_state_rewriter._probe import read_limit

    small, large = tmp_path / "small.h5", tmp_path / "large.h5"
    small.write_bytes(b"\0" * 100_000)
    with open(large, "wb") as handle:
        handle.truncate(3 * 10**9)  # sparse: 3 GB without writing them
    assert read_limit(str(small)) == pytest.approx(10.01)
    assert read_limit(str(large)) == pytest.approx(310.0)

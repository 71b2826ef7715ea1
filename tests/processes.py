"""Standard-library helpers for tests that start servers (the loopback sshd, the emulated board): usable before the
test extras are installed (tests/emulated_arm64/board.py runs from .ci/run on its own)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket


def die_with_parent() -> None:
    """preexec_fn: the started program dies with the test process even when that is killed before its teardown
    runs (Linux PR_SET_PDEATHSIG; it survives exec)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago (a server may still lose it to another process: retry)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""SIGINT and SIGTERM while training: a flag the loop checks after each step, and the error
a run stopped by them ends with."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import UserError


class Interrupted(UserError):
    """Training stopped by a signal after saving a resumable checkpoint."""

    label = "interrupted"
    exit_code = 130


@contextmanager
def catch_signals() -> Iterator[list[int]]:
    """While active, SIGINT and SIGTERM only set a flag that the loop checks after each step."""
    caught: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda number, frame: caught.append(number))
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Ctrl+C for the commands that run something (run, run --server, sweep): the first asks the
run to stop at its next step, so nothing is killed mid-write; a second one falls through
to Python's default and ends the process."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def first_ctrl_c(stop: Callable[[], None]) -> Iterator[None]:
    """While inside, the first SIGINT calls ``stop`` instead of raising KeyboardInterrupt
    (only in the main thread: signals cannot be handled elsewhere)."""
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        stop()
        signal.signal(signal.SIGINT, previous)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)

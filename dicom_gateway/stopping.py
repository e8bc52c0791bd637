"""How a gateway process learns it must stop, and how long it may take.

A signal handler must not take a lock: Python runs it in the main thread between two
bytecodes, wherever that thread is. ``threading.Event.set()`` takes the event's lock, and the
main thread holds that same lock inside ``Event.wait()``: a SIGTERM that lands there
deadlocks the process for good (a receiver whose gateway was killed then went on listening).
Here the handlers do nothing; CPython's C-level handler writes the signal's number to a pipe
(``signal.set_wakeup_fd``) and the main loop waits on that pipe with ``poll``: no lock
anywhere.

``exit_if_not_done_in`` bounds a clean shutdown that might not end (an association that goes
on, a thread that cannot be joined at interpreter exit): the kernel ends the process when a
timer runs out (SIGALRM, default action), whatever its threads are doing.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterable
from types import FrameType
from typing import Protocol


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


Waitable = int | _HasFileno


def _noted(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing (the wakeup pipe has the signal already)."""


class StopSignals:
    """``signals`` caught from now on (main thread only) and waited for without a lock."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._signals = frozenset(int(s) for s in signals)
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.received: int | None = None
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, _noted) for s in self._signals}

    def wait(self, timeout: float | None, *also: Waitable) -> bool:
        """True as soon as one of the signals came (``received`` says which; it stays true)
        or one of ``also`` is readable; False after ``timeout`` seconds (None: no limit)."""
        if self.received is not None:
            return True
        poller = select.poll()  # not select(): a descriptor may be above FD_SETSIZE
        poller.register(self._read, select.POLLIN)
        watched = {item if isinstance(item, int) else item.fileno() for item in also}
        for fd in watched:
            poller.register(fd, select.POLLIN)  # EOF (POLLHUP) is reported as well
        ready = {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
        if self._read in ready:
            self._drain()
        return self.received is not None or bool(ready & watched)

    def _drain(self) -> None:
        try:
            while data := os.read(self._read, 512):
                for signum in data:
                    if signum in self._signals and self.received is None:
                        self.received = signum
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Give back the previous handlers and wakeup fd (tests)."""
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)


def exit_if_not_done_in(seconds: float) -> None:
    """End this process ``seconds`` from now unless it has exited by then (main thread)."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, seconds)

"""A job's time limit, applied where its model runs: the worker's settings decide.

The limit (``worker.core.timelimits.resolve_time_limit``) is read from the worker's own
settings when the job starts, so ``MEDSEG_MODEL_TIME_LIMITS`` set on the worker alone applies.
An interval timer (``SIGALRM``) raises ``TimeLimitExceededError`` inside the model at the
limit; the error names the limit, the setting it came from and the worker. The timer needs the
process's main thread (prefork and solo pools: a task runs there); elsewhere only Celery's
backstop limits apply, and a warning says so.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from worker.core.errors import RetryableError
from worker.core.timelimits import TimeLimit

logger = logging.getLogger(__name__)


class TimeLimitExceededError(RetryableError):
    """The model ran past its time limit: retried with backoff, quarantined after its
    attempts (a huge series or a slow device may pass on another try or another worker)."""

    def __init__(self, limit: TimeLimit, worker: str | None) -> None:
        where = f"on worker {worker}" if worker else "on the worker"
        super().__init__(
            f"time limit exceeded: the model ran past its limit of {limit.seconds} s "
            f"({limit.source}, read {where})"
        )
        self.limit = limit


@contextlib.contextmanager
def deadline(limit: TimeLimit | None, worker: str | None = None) -> Iterator[None]:
    """Raise ``TimeLimitExceededError`` in this thread when the body runs past ``limit``."""
    if limit is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        logger.warning(
            "time limit of %d s not applied by the worker (not the main thread): only "
            "Celery's backstop limits apply",
            limit.seconds,
        )
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeLimitExceededError(limit, worker)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(limit.seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

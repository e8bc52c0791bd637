"""Waiting out a database that went away (restart, failover) instead of losing work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Connection lost, server restarting, database locked: worth trying again."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def with_db_retry(
    fn: Callable[[], T],
    *,
    what: str,
    total_s: float = 300.0,
    first_wait_s: float = 0.5,
    max_wait_s: float = 15.0,
) -> T:
    """``fn()``, called again with backoff while it fails with a transient database error,
    for up to ``total_s``; then the last error is raised. ``fn`` must be safe to repeat
    (one transaction that either committed or did not)."""
    deadline = time.monotonic() + total_s
    wait = first_wait_s
    while True:
        try:
            return fn()
        except DBAPIError as exc:
            if not is_transient(exc) or time.monotonic() + wait > deadline:
                raise
            logger.warning(
                "database unavailable while %s (%s); trying again in %.1f s",
                what,
                type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__,
                wait,
            )
            time.sleep(wait)
            wait = min(max_wait_s, wait * 2)

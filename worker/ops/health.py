"""Is the service able to work: the database and the broker answer, and every queue that has
work has a worker consuming it. The dashboard's banner and ``/readyz`` ask here."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from worker.ops.operations import Status

logger = logging.getLogger(__name__)


def database_error(session_factory: sessionmaker[Session]) -> str | None:
    """None when the database answers ``SELECT 1``; else the error's class name."""
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # every driver error means the same here: not ready
        logger.warning("health: database unreachable: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def broker_error(redis_client: Any) -> str | None:
    """None when the broker answers PING; else the error's class name."""
    if redis_client is None:
        return "no broker client"
    try:
        redis_client.ping()
    except Exception as exc:  # the redis client raises many kinds; all mean "not ready"
        logger.warning("health: broker unreachable: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def problems(status: Status | None, database: str | None) -> list[str]:
    """What stops work, one line each, for the banner; empty when all is well.

    ``status`` is None when the database could not be read. A queue with messages and no
    worker consuming it is named only when the workers answered (``status.consumers``).
    """
    found: list[str] = []
    if database is not None:
        found.append(
            f"database unreachable ({database}): nothing is recorded; senders get A700 and resend"
        )
    if status is None:
        return found
    if any(depth is None for depth in status.queue_depth.values()):
        found.append("broker unreachable: jobs wait in the outbox, workers get nothing")
    for queue, depth in status.queue_depth.items():
        if depth and status.consumers is not None and not status.consumers.get(queue):
            found.append(
                f"{depth} message(s) waiting in queue {queue} and no worker consumes it: "
                f"start a worker with --queues {queue}"
            )
    return found

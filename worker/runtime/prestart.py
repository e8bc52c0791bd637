"""Before a role starts in a container: wait for the database and the broker, then migrate."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import text

from worker.core.settings import Settings

logger = logging.getLogger(__name__)


class ServiceUnavailableError(RuntimeError):
    """A service did not answer before the deadline."""


def database_ready(url: str) -> None:
    """Raise unless ``SELECT 1`` succeeds on ``url``."""
    from db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def broker_ready(url: str) -> None:
    """Raise unless the Redis broker at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def wait_for(name: str, check: Callable[[], None], timeout: float, interval: float = 1.0) -> None:
    """Call ``check`` until it returns without raising, or raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            check()
        except Exception as exc:  # driver errors differ per backend: any means not up yet
            if time.monotonic() + interval > deadline:
                raise ServiceUnavailableError(
                    f"{name} not reachable after {timeout:g} s: {type(exc).__name__}: {exc}"
                ) from exc
            logger.info("waiting for %s (attempt %d): %s", name, attempt, type(exc).__name__)
            time.sleep(interval)
        else:
            logger.info("%s is up", name)
            return


def prestart(settings: Settings, timeout: float, migrate: bool = True) -> None:
    """Wait for the database and the broker, then bring the schema to head."""
    wait_for("database", lambda: database_ready(settings.database_url), timeout)
    wait_for("broker", lambda: broker_ready(settings.broker_url), timeout)
    if migrate:
        from db.migrate import upgrade

        upgrade(settings.database_url)
        logger.info("database migrated to head")

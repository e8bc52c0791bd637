"""What the operator reads when a command meets a broken environment: one line that says what
is wrong and what to do, not a traceback. Errors not listed here are bugs: they keep theirs."""

from __future__ import annotations


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def one_line(exc: BaseException) -> str | None:
    """The message for ``exc``; None when it is not an environment error."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid settings (MEDSEG_* variables or .env): {problems}"
    if isinstance(exc, OperationalError) and "no such table" in str(exc.orig):
        return "the database is not migrated: run `medseg db upgrade`"
    if isinstance(exc, DBAPIError):
        return (
            f"database unreachable ({_first_line(exc.orig)}): check MEDSEG_DATABASE_URL "
            "and that the database is up"
        )
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # the gateway-only install has no redis client
        pass
    else:
        if isinstance(exc, RedisConnectionError):
            return f"broker unreachable ({_first_line(exc)}): check MEDSEG_BROKER_URL"
    if isinstance(exc, OSError):
        return _first_line(exc)
    from worker.core.errors import DataLayoutError

    if isinstance(exc, DataLayoutError):
        return _first_line(exc)
    return None

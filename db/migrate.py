"""Alembic migrations driven from code (``medseg db upgrade``), no alembic.ini to find."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may contain it (escaped passwords).
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating it from nothing if empty)."""
    from db.session import make_engine

    make_engine(url).dispose()  # creates the SQLite parent directory when needed
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


class SchemaNotCurrentError(RuntimeError):
    """The database was never migrated, or not to this release's schema."""


def head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_current(url: str, strict: bool = False) -> None:
    """Raise ``SchemaNotCurrentError``, saying what to run, unless ``url`` is at head. A
    database that cannot be reached is not judged (unless ``strict``: the error is raised):
    the gateway still starts, keeps what it receives and records it when the database is
    back."""
    from sqlalchemy.exc import OperationalError

    try:
        found = current(url)
    except OperationalError as exc:
        if strict:
            raise
        logger.warning("database unreachable at start, schema not checked: %s", exc.orig)
        return
    expected = head()
    if found != expected:
        raise SchemaNotCurrentError(
            f"the database is at schema revision {found or 'none (never migrated)'}, "
            f"this release needs {expected}: run `medseg db upgrade`"
        )

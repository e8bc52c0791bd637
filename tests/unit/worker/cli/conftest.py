"""The command line run in this process (``main([...])``) on the test's database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from worker.core.settings import get_settings


@pytest.fixture
def cli(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> Iterator[sessionmaker[Session]]:
    """``main()`` in this process on the test database, as no operator in particular: the
    commands' session factory is the test's, and the process's settings (``get_settings``,
    cached) are read again from the environment, before and after."""
    monkeypatch.setattr("worker.cli.ops._session_factory", lambda: session_factory)
    monkeypatch.delenv("MEDSEG_OPERATOR", raising=False)
    get_settings.cache_clear()
    yield session_factory
    get_settings.cache_clear()

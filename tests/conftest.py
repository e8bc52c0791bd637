"""Shared fixtures: settings in a temp dir, migrated databases, real-service gates."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from tests.support.tools import need
from worker.core.settings import Settings
from worker.devtools.localstack import free_port, scratch_postgres_database
from worker.runtime.threads import core_share


def _share_the_cores() -> None:
    """Each pytest-xdist process gets its share of the cores for OpenMP (torch's intra-op
    threads) and the BLAS libraries, before torch is imported; the services and subprocesses a
    test starts inherit it. By default each process took every core: two processes on two
    cores ran four busy threads, and on an AMD EPYC (Zen 4) one served fetal brain test took
    77 s instead of 19 s, the suite 21:53, and a gateway starved of CPU missed a 5 s
    association timeout. An OMP_NUM_THREADS given from outside wins."""
    share = str(core_share(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, share)
    if "torch" in sys.modules:  # imported before this file (a plugin): set it there too
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores()

# The fetal brain model is phantom-only, so off by default (registry.off_reason). The suite
# runs it on phantoms, in-process and in the services it starts (they inherit this), as a
# research site would; tests/unit/worker/core/test_research_models.py and
# tests/integration/test_research_models.py clear it to test the default.
os.environ.setdefault("MEDSEG_RESEARCH_MODELS", '["fetal-brain-unet"]')

REDIS_URL = os.environ.get("MEDSEG_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTGRES_ADMIN_URL = os.environ.get(
    "MEDSEG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        port=free_port(),
        series_quiet_seconds=0.5,
        completion_poll_seconds=0.1,
        min_free_bytes=0,
        broker_url="redis://127.0.0.1:1/0",
    )


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at head, made once per test process: the migrations take 0.25-0.3 s
    of CPU, and some 300 tests want a fresh database (about 85 s of CPU over the suite)."""
    path = tmp_path_factory.mktemp("template") / "medseg.db"
    upgrade(f"sqlite:///{path}")
    assert not path.with_name("medseg.db-wal").exists()  # the whole database is the one file
    return path


def migrate_like(url: str, template: Path) -> None:
    """Bring the database at ``url`` to head: a new SQLite file is a copy of ``template``
    (made by the same migrations), anything else is migrated."""
    parsed = make_url(url)
    database = Path(parsed.database or ":memory:")
    if parsed.get_backend_name() != "sqlite" or str(database) == ":memory:" or database.exists():
        upgrade(url)
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, database)


@pytest.fixture
def session_factory(settings: Settings, migrated_sqlite: Path) -> Iterator[sessionmaker[Session]]:
    migrate_like(settings.database_url, migrated_sqlite)
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    need("Redis at 127.0.0.1:6379", _port_open("127.0.0.1", 6379))
    return REDIS_URL  # each stack uses its own key prefix: nothing to flush, nothing shared


@contextlib.contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database named ``prefix`` + a random suffix; dropped after."""
    with scratch_postgres_database(POSTGRES_ADMIN_URL, prefix, migrate=True) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for each test module (0.4 s), dropped afterwards.

    Per module, not per session: every gateway's outbox publishes whatever the database holds
    as pending (its jobs, deliveries, corrections), so a row one module's stack left pending
    when it stopped would be published by the next module's stack and sent to that module's
    peer (seen once: a corrected SR of test_corrections arriving at test_shadow_stack's)."""
    need("PostgreSQL at 127.0.0.1:5432", _port_open("127.0.0.1", 5432))
    with fresh_postgres_database("medseg_test") as url:
        yield url


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    import kombu.transport.redis as transport

    client = fakeredis.FakeRedis()
    monkeypatch.setattr(
        transport.Channel, "_create_client", lambda self, asynchronous=False: client
    )
    return client

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from db.migrate import alembic_config, current, upgrade
from db.models import Base
from db.session import make_engine


def test_upgrade_from_nothing_and_models_match_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'medseg.db'}"
    upgrade(url)
    assert current(url) is not None
    upgrade(url)  # idempotent
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ; add a revision: {diff}"


def test_cli_db_upgrade(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MEDSEG_DATA_DIR": str(tmp_path / "d")}
    env.pop("MEDSEG_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"database at revision {head}" in done.stdout
    assert (tmp_path / "d" / "medseg.db").exists()

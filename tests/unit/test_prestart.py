"""medseg prestart: waits for the database and broker (clear error if one stays down), migrates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from db.migrate import current
from worker.localstack import free_port


def _prestart(tmp_path: Path, broker_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MEDSEG_DATA_DIR": str(tmp_path / "data"),
        "MEDSEG_BROKER_URL": broker_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "prestart", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_prestart_fails_clearly_when_the_broker_stays_down(tmp_path: Path) -> None:
    start = time.monotonic()
    done = _prestart(tmp_path, f"redis://127.0.0.1:{free_port()}/0", "--timeout", "2")
    assert done.returncode == 1
    assert "broker not reachable after 2 s" in done.stderr
    assert time.monotonic() - start < 60
    # Nothing migrated: the schema is only touched once every service answered.
    assert current(f"sqlite:///{tmp_path / 'data' / 'medseg.db'}") is None


def test_prestart_waits_then_migrates(tmp_path: Path, redis_url: str) -> None:
    done = _prestart(tmp_path, redis_url, "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert current(f"sqlite:///{(tmp_path / 'data' / 'medseg.db').resolve()}") is not None

"""Issue 18 item 11: the gateway on a database never migrated says what to run (CLI as a
subprocess), instead of dying with a raw ``no such table`` traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from worker.devtools.localstack import free_port


def test_gateway_on_an_unmigrated_database_says_run_medseg_db_upgrade(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MEDSEG_DATA_DIR": str(tmp_path / "data"),
        "MEDSEG_PORT": str(free_port()),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_BROKER_URL": "redis://127.0.0.1:1/0",
        "MEDSEG_AUTO_MIGRATE": "never",  # the default migrates an embedded SQLite database
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "gateway"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert "run `medseg db upgrade`" in done.stderr
    assert "Traceback" not in done.stderr
    assert "no such table" not in done.stderr

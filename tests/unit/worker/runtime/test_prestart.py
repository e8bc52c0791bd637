"""Container checks: medseg prestart (wait for services, migrate) and medseg echo (C-ECHO)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from db.migrate import current
from worker.devtools.localstack import free_port


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


def test_echo_answers_for_a_running_gateway_and_fails_without_one(tmp_path: Path) -> None:
    from worker.devtools.localstack import start_medseg, stop, wait_for_port

    port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(tmp_path / "data"),
        "MEDSEG_PORT": str(port),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    echo = [sys.executable, "-m", "worker.cli", "echo", "--timeout", "5"]
    down = subprocess.run(
        echo, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    assert down.returncode == 1
    assert f"no association with MEDSEG@127.0.0.1:{port}" in down.stderr
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log")
    try:
        wait_for_port(port, process=gateway)
        up = subprocess.run(
            echo, env={**os.environ, **env}, capture_output=True, text=True, check=False
        )
    finally:
        stop(gateway)
    assert up.returncode == 0, up.stderr
    assert "status 0x0000" in up.stdout

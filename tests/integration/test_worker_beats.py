"""A real ``medseg worker`` on real Redis leaves its heartbeat (``worker.runtime.beats``):
``medseg status``, a subprocess, lists it without asking the workers, and once the worker is
killed (SIGKILL: no shutdown signal) calls it gone within ``BEAT_MAX_AGE_S`` and a beat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from worker.core.settings import Settings
from worker.core.worker_beats import BEAT_MAX_AGE_S
from worker.devtools.localstack import start_medseg, stop

NODE = "medseg-beats@test"


def _status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "status"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _until(env: dict[str, str], text: str, timeout_s: float, log: Path) -> float:
    """Seconds until ``medseg status`` prints ``text``."""
    started = time.monotonic()
    while True:
        done = _status(env)
        if text in done.stdout:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, (
            done.stdout + done.stderr + log.read_text(errors="replace")[-2000:]
        )
        time.sleep(0.5)


def test_status_sees_a_live_worker_by_its_heartbeat_and_a_killed_one_gone(
    settings: Settings,
    session_factory: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = {
        "MEDSEG_DATA_DIR": str(settings.data_dir),
        "MEDSEG_DATABASE_URL": settings.database_url,
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-beats-{uuid.uuid4().hex[:8]}:",
        "MEDSEG_DEVICE": "cpu",
    }
    log = tmp_path / "worker.log"
    args = ["worker", "--queues", "cpu,gpu", "--concurrency", "1", "--name", NODE]
    worker = start_medseg(args, env, log, new_session=True)
    try:
        _until(env, f"workers: {NODE}", 120, log)
        listed = _status(env)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
        gone_after = _until(env, "workers: none alive", BEAT_MAX_AGE_S + 10, log)
        assert gone_after <= BEAT_MAX_AGE_S + 10
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        stop(worker)

"""``medseg dashboard`` refuses to start without a password hash; ``hash-password`` makes one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from worker.dashboard.auth import check_hash_format, verify_password


def _medseg(
    args: list[str], tmp_path: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEG_DASHBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        input=stdin,
        env={**clean, "MEDSEG_DATA_DIR": str(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_hash_password_from_stdin_then_dashboard_refuses_a_bad_hash(tmp_path: Path) -> None:
    made = _medseg(["dashboard", "hash-password"], tmp_path, stdin="s3cret-enough\n")
    assert made.returncode == 0, made.stderr
    encoded = made.stdout.strip()
    check_hash_format(encoded)
    assert verify_password("s3cret-enough", encoded)
    assert not verify_password("s3cret-enougH", encoded)

    short = _medseg(["dashboard", "hash-password"], tmp_path, stdin="short\n")
    assert short.returncode == 1 and "8 characters" in short.stderr


def test_dashboard_does_not_start_without_a_password_hash(tmp_path: Path) -> None:
    done = _medseg(["dashboard", "--port", "1"], tmp_path)
    assert done.returncode == 2
    assert "MEDSEG_DASHBOARD_PASSWORD_HASH is not set" in done.stderr
    done = _medseg(
        ["dashboard", "--port", "1"], tmp_path, MEDSEG_DASHBOARD_PASSWORD_HASH="plain-text"
    )
    assert done.returncode == 2 and "hash-password" in done.stderr


def test_the_dashboard_runs_without_the_worker_extra(tmp_path: Path) -> None:
    """The dashboard image has no torch, highdicom or pynetdicom: pages must not import them."""
    script = f"""
import sys
for name in ("torch", "torchvision", "highdicom", "pynetdicom", "nibabel"):
    sys.modules[name] = None  # importing it now raises ImportError
from fastapi.testclient import TestClient
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from worker.runtime.celery_app import app as celery_app
from worker.dashboard import serve  # noqa: F401 - what `medseg dashboard` imports
from worker.dashboard.app import create_app
from worker.dashboard.auth import hash_password
from worker.core.settings import Settings

password = hash_password("pw-12345678")
settings = Settings(data_dir={str(tmp_path)!r}, dashboard_password_hash=password)
upgrade(settings.database_url)
client = TestClient(create_app(settings, make_session_factory(make_engine(settings.database_url))))
token = client.get("/login").text.split('name="csrf" value="')[1].split('"')[0]
client.post("/login", data={{"username": "admin", "password": "pw-12345678", "csrf": token}})
for path in ("/", "/jobs", "/failures"):
    assert client.get(path).status_code == 200, path
print("pages ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pages ok" in done.stdout

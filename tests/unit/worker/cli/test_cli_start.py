"""Issue 21 item 9: the CLI starts fast. The libraries a command does not need are imported
inside the commands that need them, never at start (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from worker.core.settings import Settings

#: Heavy and never needed by --help, jobs or status.
NEVER = ("torch", "pydicom", "numpy", "scipy", "cv2", "pynetdicom", "fastapi", "uvicorn")
#: Needed by commands that ask the workers (status without heartbeats), not by the others.
BROKER = ("celery", "kombu")
#: What ``status`` needs no more with the workers' heartbeats in Redis (issue 32 item 9):
#: the broadcast's libraries, and the models' and DICOM's.
STATUS_NEVER = (*BROKER, *NEVER, "billiard", "amqp", "highdicom", "PIL", "rich.traceback")

_PROBE = """
import contextlib, io, json, sys
from worker.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _report(
    settings: Settings, *args: str, code: int = 0, env: dict[str, str] | None = None
) -> dict[str, object]:
    """The probe's exit code, stdout and the modules it loaded (every name)."""
    env = {
        **os.environ,
        "MEDSEG_DATA_DIR": str(settings.data_dir),
        "MEDSEG_BROKER_URL": settings.broker_url,  # nothing listens: no broadcast
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] in (code, None if code == 0 else code), done.stderr[-2000:]
    return dict(report)


def _loaded(settings: Settings, *args: str, code: int = 0) -> set[str]:
    """The top-level packages the command loaded."""
    modules = _report(settings, *args, code=code)["modules"]
    assert isinstance(modules, list)
    return {str(m).split(".")[0] for m in modules}


@pytest.mark.parametrize("args", [("--help",), ("jobs",), ("jobs", "--state", "failed")])
def test_commands_without_the_broker_load_neither_celery_nor_models(
    settings: Settings, session_factory: object, args: tuple[str, ...]
) -> None:
    loaded = _loaded(settings, *args)
    assert not loaded & {*NEVER, *BROKER}, sorted(loaded & {*NEVER, *BROKER})


def test_status_loads_the_broker_client_and_nothing_of_the_models(
    settings: Settings, session_factory: object
) -> None:
    loaded = _loaded(settings, "status", code=1)  # 1: PROBLEM, the broker is unreachable
    assert not loaded & set(NEVER), sorted(loaded & set(NEVER))


def test_status_with_the_workers_heartbeats_imports_no_celery(
    settings: Settings, session_factory: object, redis_url: str
) -> None:
    """The workers' heartbeats in (real) Redis say who is alive: status builds no Celery app,
    asks no worker, and imports none of the broadcast's or the models' libraries."""
    import redis

    from worker.core.worker_beats import write_beat

    prefix = f"medseg-start-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(redis_url)
    write_beat(client, prefix, "medseg@beating", ["cpu", "gpu"])
    try:
        env = {"MEDSEG_BROKER_URL": redis_url, "MEDSEG_BROKER_KEY_PREFIX": prefix}
        report = _report(settings, "status", env=env)
    finally:
        client.delete(prefix + "medseg:worker-beats")
    assert "workers: medseg@beating" in str(report["out"])
    modules = report["modules"]
    assert isinstance(modules, list)
    loaded = {str(m) for m in modules} | {str(m).split(".")[0] for m in modules}
    assert not loaded & set(STATUS_NEVER), sorted(loaded & set(STATUS_NEVER))
    assert "redis" in loaded and "sqlalchemy" in loaded  # it did ask Redis and the database

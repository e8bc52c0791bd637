"""Issue 21 item 9: the CLI starts fast. The libraries a command does not need are imported
inside the commands that need them, never at start (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worker.core.settings import Settings

#: Heavy and never needed by --help, jobs or status.
NEVER = ("torch", "pydicom", "numpy", "scipy", "cv2", "pynetdicom", "fastapi", "uvicorn")
#: Needed by commands that talk to the broker (status), not by the others.
BROKER = ("celery", "kombu")

_PROBE = """
import contextlib, io, json, sys
from worker.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _loaded(settings: Settings, *args: str, code: int = 0) -> set[str]:
    env = {
        **os.environ,
        "MEDSEG_DATA_DIR": str(settings.data_dir),
        "MEDSEG_BROKER_URL": settings.broker_url,  # nothing listens: no broadcast
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
    return set(report["modules"])


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

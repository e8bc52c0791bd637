"""Start local processes for the demo, the integration tests and the benchmarks: Redis,
gateway, worker, Orthanc."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def start_redis(workdir: Path, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """A private, disk-less redis-server on ``port`` (default: a free one); returns
    (broker URL, process)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no broker configured and redis-server is not installed: "
            "set MEDSEG_BROKER_URL or install redis-server (apt-get install -y redis-server)"
        )
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "redis.log", "ab")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process=process)
    return f"redis://127.0.0.1:{port}/0", process


def start_medseg(
    args: list[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    append: bool = False,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Run ``medseg ARGS`` as a child process with ``env`` added, logging to ``log_path``
    (appended to when ``append``); ``new_session`` puts it in a process group of its own."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab" if append else "wb")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def start_orthanc(
    root: Path, binary: str, settings: Mapping[str, object]
) -> tuple[int, int, subprocess.Popen[bytes]]:
    """Debian's Orthanc with its defaults plus ``settings``, on free loopback ports, its
    storage and index under ``root``; returns (DICOM port, HTTP port, process) once both
    ports listen. The log is ``root/orthanc.log``."""
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "medseg-local",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        **settings,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "wb")  # noqa: SIM115 - owned by the child process
    # Orthanc's DICOM network layer is DCMTK's: without TCP_NODELAY it stalls ~40 ms per
    # instance on Nagle's algorithm, as DCMTK's own tools do.
    process = subprocess.Popen(
        [binary, str(root / "orthanc.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dcmtk_env(),
    )
    try:
        wait_for_port(http_port, process=process)
        wait_for_port(dicom_port, process=process)
    except BaseException:
        stop(process)
        raise
    return dicom_port, http_port, process


@contextlib.contextmanager
def scratch_postgres_database(admin_url: str, prefix: str, *, migrate: bool) -> Iterator[str]:
    """A new PostgreSQL database named ``prefix`` + a random suffix, next to the one
    ``admin_url`` names (a role that may create databases); migrated to our schema when
    ``migrate``; dropped afterwards, connections and all. Yields its URL."""
    from sqlalchemy import create_engine, text

    from db.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def find_dcmtk_tool(name: str) -> str | None:
    """DCMTK's ``name`` (storescu, echoscu, storescp...) from PATH, or None.

    pynetdicom installs Python console scripts with the same names and other options into
    the virtual environment; with the venv activated they come first on PATH. DCMTK's tools
    are compiled programs, so a candidate that is a script (``#!``) is passed over.
    """
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = shutil.which(name, path=folder or os.curdir)
        if candidate is None:
            continue
        try:
            with open(candidate, "rb") as handle:
                if handle.read(2) == b"#!":
                    continue
        except OSError:
            continue
        return candidate
    return None


def dcmtk_tool(name: str) -> str:
    """DCMTK's ``name``; a clear error when DCMTK is not installed."""
    path = find_dcmtk_tool(name)
    if path is None:
        raise RuntimeError(
            f"DCMTK's {name} is not installed (apt-get install -y dcmtk; the {name} of "
            "pynetdicom in a virtual environment is a different program)"
        )
    return path


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK tools: Debian's build stalls ~47 ms per PDU without it."""
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(
    folder: Path, port: int, called_ae: str, calling_ae: str = "STORESCU"
) -> subprocess.CompletedProcess[str]:
    """Send every file under ``folder`` with DCMTK's storescu (recursive, scanning)."""
    return subprocess.run(
        [
            dcmtk_tool("storescu"),
            "-aet",
            calling_ae,
            "-aec",
            called_ae,
            "+sd",
            "+r",
            "-nh",
            "127.0.0.1",
            str(port),
            str(folder),
        ],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def echoscu(port: int, called_ae: str = "MEDSEG") -> subprocess.CompletedProcess[str]:
    """DCMTK's echoscu against 127.0.0.1:``port``."""
    return subprocess.run(
        [dcmtk_tool("echoscu"), "-aec", called_ae, "127.0.0.1", str(port)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

"""MEDSEG_RECEIVERS: several gateway processes on one port (SO_REUSEPORT), parallel senders,
every instance stored and recorded; receivers go away with the gateway, even a killed one."""

from __future__ import annotations

import os
import signal
import subprocess
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.migrate import upgrade
from db.models import Instance, Series
from db.session import make_engine, make_session_factory
from tests.support.factories import chest_series
from tests.support.tools import need_tool, wait_until
from worker.devtools.localstack import (
    dcmtk_env,
    dcmtk_tool,
    free_port,
    start_medseg,
    stop,
    wait_for_port,
)


def _peer(port: int, folder: Path) -> tuple[str, str, str]:
    return "127.0.0.1", str(port), str(folder)


def _listeners(port: int) -> int:
    """Sockets listening on ``port`` (IPv4), from /proc: one per receiver process."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            count += 1
    return count


_wait = partial(wait_until, timeout=30.0)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc")
    need_tool("storescu")
    data = tmp_path / "data"
    upgrade(f"sqlite:///{data / 'medseg.db'}")
    return {
        "MEDSEG_DATA_DIR": str(data),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(free_port()),
        "MEDSEG_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_SERIES_QUIET_SECONDS": "3600",
        "MEDSEG_RECEIVERS": "3",
    }


def test_parallel_senders_over_three_receivers_lose_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = int(env["MEDSEG_PORT"])
    folders = []
    for i in range(4):
        chest_series(tmp_path / f"src{i}", i, slices=6)
        folders.append(tmp_path / f"src{i}")
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log")
    try:
        wait_for_port(port, process=gateway)
        _wait(lambda: _listeners(port) == 3)
        senders = [
            subprocess.Popen(
                [
                    dcmtk_tool("storescu"),
                    "-aet",
                    f"CT{i}",
                    "-aec",
                    "MEDSEG",
                    "+sd",
                    "-nh",
                    *_peer(port, folder),
                ],
                env=dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for i, folder in enumerate(folders)
        ]
        for sender in senders:
            _, err = sender.communicate(timeout=120)
            assert sender.returncode == 0, err
    finally:
        stop(gateway)
    assert _listeners(port) == 0  # the extra receivers stopped with the gateway
    engine = make_engine(f"sqlite:///{Path(env['MEDSEG_DATA_DIR']) / 'medseg.db'}")
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 24
        aes = set(session.scalars(select(Series.calling_ae)))
    engine.dispose()
    assert aes == {"CT0", "CT1", "CT2", "CT3"}
    assert len(list(Path(env["MEDSEG_DATA_DIR"]).rglob("*.dcm"))) == 24


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead (its new parent may never reap it)


def _children(pid: int) -> list[int]:
    """The receiver processes of gateway ``pid`` (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [
        int(child)
        for child in found.stdout.split()
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_receivers_exit_when_the_gateway_is_killed(env: dict[str, str], tmp_path: Path) -> None:
    """The orphans close the port and end, whatever they were doing when the signal came (a
    SIGTERM landing inside ``Event.wait()`` once deadlocked one for good)."""
    port = int(env["MEDSEG_PORT"])
    log = tmp_path / "gateway.log"
    gateway = start_medseg(["gateway"], env, log)
    receivers: list[int] = []
    try:
        wait_for_port(port, process=gateway)
        _wait(lambda: _listeners(port) == 3)
        receivers = _children(gateway.pid)
        assert len(receivers) == 2
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait(10)
        try:
            _wait(lambda: _listeners(port) == 0, timeout=20)  # orphans notice and leave
            _wait(lambda: not any(map(_alive, receivers)), timeout=20)
        except AssertionError:
            alive = [pid for pid in receivers if _alive(pid)]
            raise AssertionError(
                f"{_listeners(port)} listening, receivers {alive} alive; log:\n"
                + log.read_text()[-4000:]
            ) from None
        stopping = [f"receiver {pid}: " for pid in receivers]
        assert all(line in log.read_text() for line in stopping)  # they said why
    finally:
        stop(gateway)
        for pid in receivers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_dead_receiver_is_replaced_and_its_acknowledged_rows_recovered(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Batch index (the default): a receiver SIGKILLed with rows still queued in its memory.
    The gateway records its files at once (not at its own next start: the series would
    complete without them) and starts another receiver in its place."""
    port = int(env["MEDSEG_PORT"])
    # Nobody flushes rows on their own in this test: only the recovery can record them.
    env = {**env, "MEDSEG_RECEIVERS": "2", "MEDSEG_COMPLETION_POLL_SECONDS": "3600"}
    chest_series(tmp_path / "src", 0, slices=6)
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log")
    database = f"sqlite:///{Path(env['MEDSEG_DATA_DIR']) / 'medseg.db'}"
    engine = make_engine(database)
    factory = make_session_factory(engine)

    def recorded() -> int:
        with factory() as session:
            return int(session.scalar(select(func.count()).select_from(Instance)) or 0)

    try:
        wait_for_port(port, process=gateway)
        _wait(lambda: _listeners(port) == 2)
        (receiver,) = _children(gateway.pid)
        sent = subprocess.run(
            [
                dcmtk_tool("storescu"),
                "-aec",
                "MEDSEG",
                "+sd",
                "-nh",
                *_peer(port, tmp_path / "src"),
            ],
            env=dcmtk_env(),
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        assert len(list(Path(env["MEDSEG_DATA_DIR"]).rglob("*.dcm"))) == 6
        assert recorded() == 0  # acknowledged, on disk, rows queued
        os.kill(receiver, signal.SIGKILL)
        _wait(lambda: recorded() == 6)
        _wait(lambda: _listeners(port) == 2 and receiver not in _children(gateway.pid))
    finally:
        stop(gateway)
        engine.dispose()
    log = (tmp_path / "gateway.log").read_text()
    assert f"receiver {receiver} exited (code -9); starting another" in log


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _direct_children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _starting_receivers(pid: int) -> list[int]:
    """The children of ``pid`` that are spawned receivers (past their exec, so importing)."""
    return [c for c in _direct_children(pid) if b"spawn_main" in _cmdline(c)]


def test_receivers_die_with_a_gateway_killed_while_they_start(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 30 item 4: a receiver read its parent's PID only after its slow imports; a
    gateway SIGKILLed in that window left it parented to PID 1, answering C-STOREs with no
    one recording their rows. Killed the moment its receivers exist, the gateway takes them
    along, and the gateway started again does not share the port with strays."""
    port = int(env["MEDSEG_PORT"])
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log")
    strays: list[int] = []
    restarted = None
    try:
        wait_for_port(port, process=gateway)
        _wait(lambda: len(_starting_receivers(gateway.pid)) >= 2, interval=0.002)
        # Read before the kill: a killed gateway's children are PID 1's a moment later, and
        # those that die with it at once have no command line left to read.
        strays = _starting_receivers(gateway.pid)
        os.kill(gateway.pid, signal.SIGKILL)  # the receivers are still importing
        gateway.wait(10)
        assert strays
        restarted = start_medseg(["gateway"], env, tmp_path / "gateway2.log")
        wait_for_port(port, process=restarted, timeout=60)
        assert not [pid for pid in strays if _alive(pid)], "strays share the port"
        _wait(lambda: _listeners(port) == 3)
    finally:
        stop(gateway)
        if restarted is not None:
            stop(restarted)
        for pid in strays:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

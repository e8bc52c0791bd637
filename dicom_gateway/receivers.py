"""Several receiver processes behind one port (``MEDSEG_RECEIVERS``), for parallel senders.

Every receiver binds the port with SO_REUSEPORT and the kernel spreads new connections over
them; each one is a whole C-STORE path (validate, fsync'd write, record) in its own process,
so parallel associations are not serialised by one interpreter. Only the main gateway process
runs the completion monitor, the outbox, the sweeper and the metrics endpoint (its counters
cover its own associations only). The parent replaces a receiver that dies, after recording
what it had stored (``replace_dead``).

An extra receiver dies with its gateway: it is given the gateway's PID (not read after its
slow imports, when a gateway killed meanwhile would already be PID 1's), asks the kernel
for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and exits at once if the parent is
gone already. A gateway starting waits until no stray process listens on its port
(``wait_for_free_port``): it never shares the port with receivers no one records for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from dicom_gateway.access import GatewayServer
from dicom_gateway.metrics import RECEIVERS_REPLACED
from worker.core.settings import Settings

logger = logging.getLogger(__name__)

_PARENT_POLL_SECONDS = 1.0


class ReusePortServer(GatewayServer):
    """The gateway's server, bound with SO_REUSEPORT so several processes share the port."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _flush_forever(index: Any, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            index.flush()
        except SQLAlchemyError as exc:
            logger.error("receiver %d: database unavailable: %s", os.getpid(), type(exc).__name__)
    try:
        index.flush()
    except SQLAlchemyError as exc:
        # The files are on disk: the main gateway's next start records them (reconcile).
        logger.error("receiver %d: rows left unrecorded: %s", os.getpid(), type(exc).__name__)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> bool:
    """Have the kernel send SIGTERM when this process's parent dies (Linux); False when the
    parent is not ``parent`` any more (it died before this could be asked)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    return os.getppid() == parent


def wait_for_free_port(host: str, port: int, timeout: float) -> bool:
    """Wait until no socket listens on ``host:port`` (the receivers of a gateway killed a
    moment ago are on their way out); False when one still does after ``timeout``."""
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return True
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return True  # not ours to judge: the server's own bind reports it
        finally:
            probe.close()
        if time.monotonic() >= deadline:
            return False
        if not warned:
            logger.warning(
                "port %d is in use (receivers of a gateway that was killed?); waiting", port
            )
            warned = True
        time.sleep(0.1)


def _receiver_main(settings_json: str, log_level: int, parent: int) -> None:
    """Entry point of an extra receiver process (spawned: nothing inherited but arguments);
    ``parent`` is the gateway's PID."""
    if not die_with_parent(parent):
        return  # the gateway was killed while this process started: no one would record
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    from dicom_gateway.server import start_receiver

    settings = Settings.model_validate_json(settings_json)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides
    server, index = start_receiver(settings)
    flusher = None
    if index is not None:
        flusher = threading.Thread(
            target=_flush_forever,
            args=(index, settings.completion_poll_seconds, stop),
            name="medseg-index",
            daemon=True,
        )
        flusher.start()
    logger.info("receiver %d listening on port %d", os.getpid(), settings.port)
    while not stop.wait(_PARENT_POLL_SECONDS):
        if os.getppid() != parent:
            logger.warning("receiver %d: gateway process gone; stopping", os.getpid())
            break
    stop.set()
    server.shutdown()
    if flusher is not None:
        flusher.join(30)


def _start_one(settings: Settings) -> BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=_receiver_main,
        args=(settings.model_dump_json(), logging.getLogger().getEffectiveLevel(), os.getpid()),
        name="medseg-receiver",
    )
    process.start()
    return process


def start_extra_receivers(settings: Settings) -> list[BaseProcess]:
    """``settings.receivers - 1`` receiver processes on the gateway's port."""
    return [_start_one(settings) for _ in range(settings.receivers - 1)]


def replace_dead(
    processes: list[BaseProcess], settings: Settings, on_loss: Callable[[], object]
) -> int:
    """Start a new receiver in place of each one that has exited (crashed, killed, out of
    memory); returns how many. ``on_loss`` runs first, once: a dead receiver may have
    acknowledged instances whose rows were still queued in its memory (batch index), and the
    main gateway records them from their files before the series can complete without them.
    """
    dead = [i for i, process in enumerate(processes) if not process.is_alive()]
    if not dead:
        return 0
    for i in dead:
        logger.error(
            "receiver %s exited (code %s); starting another",
            processes[i].pid,
            processes[i].exitcode,
        )
        RECEIVERS_REPLACED.inc()
    on_loss()
    for i in dead:
        processes[i] = _start_one(settings)
    return len(dead)


def stop_receivers(processes: list[BaseProcess], timeout: float = 30.0) -> None:
    for process in processes:
        process.terminate()  # SIGTERM: finish the associations in progress, write rows
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            logger.error("receiver %s did not stop; killing it", process.pid)
            process.kill()
            process.join()

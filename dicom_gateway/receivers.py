"""Several receiver processes behind one port (``MEDSEG_RECEIVERS``), for parallel senders.

Every receiver binds the port with SO_REUSEPORT and the kernel spreads new connections over
them; each one is a whole C-STORE path (validate, fsync'd write, record) in its own process,
so parallel associations are not serialised by one interpreter. Only the main gateway process
runs the completion monitor, the outbox, the sweeper and the metrics endpoint (its counters
cover its own associations only). The parent replaces a receiver that dies, after recording
what it had stored (``replace_dead``).

An extra receiver dies with its gateway, however the gateway ends:

* it is given the gateway's PID (not read after its slow imports, when a gateway killed
  meanwhile would already be PID 1's), asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``), and exits at once if the parent is gone already;
* it holds the read end of a pipe whose write end only the gateway holds (``Receiver.lifeline``):
  when the gateway dies, the kernel closes that end and the receiver's wait wakes (EOF); it
  also checks its parent's PID every second;
* it waits for SIGTERM without a lock (``stopping.StopSignals``): a handler calling
  ``Event.set()`` deadlocked a receiver whose signal landed inside ``Event.wait()``;
* once told to stop it closes its port at once, and the kernel ends it if finishing the
  associations in progress and writing their rows takes more than ``SHUTDOWN_GRACE_SECONDS``.

A gateway starting waits until no stray process listens on its port (``wait_for_free_port``):
it never shares the port with receivers no one records for.
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
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NamedTuple

from sqlalchemy.exc import SQLAlchemyError

from dicom_gateway.access import GatewayServer
from dicom_gateway.metrics import RECEIVERS_REPLACED
from dicom_gateway.stopping import StopSignals, exit_if_not_done_in
from worker.core.settings import Settings

logger = logging.getLogger(__name__)

_PARENT_POLL_SECONDS = 1.0
#: Longest a receiver told to stop takes to finish its associations and write their rows;
#: below ``stop_receivers``' wait, so it ends on its own before the gateway kills it.
SHUTDOWN_GRACE_SECONDS = 25.0


class Receiver(NamedTuple):
    """An extra receiver process, and the write end of its lifeline (see the module's
    docstring): held by the gateway for as long as the receiver should live."""

    process: BaseProcess
    lifeline: Connection


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
    parent is not ``parent`` any more (it died before this could be asked: checked after).

    The kernel's "parent" is the thread that started this process: receivers are started by
    the gateway's main thread (``serve``), which lives as long as the gateway."""
    # The symbols of the running process include libc's (find_library may find no file).
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
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


def _until_told_to_stop(stops: StopSignals, lifeline: Connection, parent: int) -> str:
    """Wait for SIGTERM or the gateway's end; returns which."""
    while not stops.wait(_PARENT_POLL_SECONDS, lifeline):
        if os.getppid() != parent:
            return "gateway process gone"
    if stops.received is not None:
        return f"signal {stops.received}"
    return "gateway process gone (lifeline closed)"


def _receiver_main(settings_json: str, log_level: int, parent: int, lifeline: Connection) -> None:
    """Entry point of an extra receiver process (spawned: nothing inherited but arguments);
    ``parent`` is the gateway's PID, ``lifeline`` the read end of the pipe it holds open."""
    if not die_with_parent(parent):
        return  # the gateway was killed while this process started: no one would record
    # From here a SIGTERM is kept, not acted on half-way, even during the slow start below.
    stops = StopSignals([signal.SIGTERM])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    from dicom_gateway.server import start_receiver

    settings = Settings.model_validate_json(settings_json)
    stop = threading.Event()  # set by this (main) thread only, never by a signal handler
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
    reason = _until_told_to_stop(stops, lifeline, parent)
    level = logging.INFO if stops.received is not None else logging.WARNING
    logger.log(level, "receiver %d: %s; stopping", os.getpid(), reason)
    # Bounds all that follows, interpreter exit included (it joins association threads).
    exit_if_not_done_in(SHUTDOWN_GRACE_SECONDS)
    stop.set()
    server.shutdown()  # closes the port first, then waits for the associations in progress
    if flusher is not None:
        flusher.join()


def _start_one(settings: Settings) -> Receiver:
    context = multiprocessing.get_context("spawn")
    watched, lifeline = context.Pipe(duplex=False)
    process = context.Process(
        target=_receiver_main,
        args=(
            settings.model_dump_json(),
            logging.getLogger().getEffectiveLevel(),
            os.getpid(),
            watched,
        ),
        name="medseg-receiver",
    )
    process.start()
    watched.close()  # the receiver has its own copy: the lifeline's only reader
    return Receiver(process, lifeline)


def start_extra_receivers(settings: Settings) -> list[Receiver]:
    """``settings.receivers - 1`` receiver processes on the gateway's port."""
    return [_start_one(settings) for _ in range(settings.receivers - 1)]


def replace_dead(
    receivers: list[Receiver], settings: Settings, on_loss: Callable[[], object]
) -> int:
    """Start a new receiver in place of each one that has exited (crashed, killed, out of
    memory); returns how many. ``on_loss`` runs first, once: a dead receiver may have
    acknowledged instances whose rows were still queued in its memory (batch index), and the
    main gateway records them from their files before the series can complete without them.
    """
    dead = [i for i, receiver in enumerate(receivers) if not receiver.process.is_alive()]
    if not dead:
        return 0
    for i in dead:
        process = receivers[i].process
        logger.error(
            "receiver %s exited (code %s); starting another", process.pid, process.exitcode
        )
        RECEIVERS_REPLACED.inc()
        receivers[i].lifeline.close()
    on_loss()
    for i in dead:
        receivers[i] = _start_one(settings)
    return len(dead)


def stop_receivers(receivers: list[Receiver], timeout: float = SHUTDOWN_GRACE_SECONDS + 5) -> None:
    for receiver in receivers:
        receiver.process.terminate()  # SIGTERM: finish the associations in progress, write rows
    for receiver in receivers:
        process = receiver.process
        process.join(timeout)
        if process.is_alive():
            logger.error("receiver %s did not stop; killing it", process.pid)
            process.kill()
            process.join()
        receiver.lifeline.close()

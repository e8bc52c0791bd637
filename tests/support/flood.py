"""Hostile peers on loopback: half-sent A-ASSOCIATE-RQs from several source addresses
(127.0.0.2, 127.0.0.3, ...), each kept at a number of open connections and reopened when the
gateway drops one, bounded in count and time. Loopback only: never another address."""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import struct
import threading
from collections.abc import Iterator

_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
#: 16 bytes of an A-ASSOCIATE-RQ announcing 200: header, version, reserved, 6 of the AE title.
HALF_SENT_REQUEST = struct.pack(">BBLHH", 0x01, 0, 200, 1, 0) + b"MEDSEG"


def half_open(source: str, port: int) -> socket.socket:
    """A connection from ``source`` (a loopback address) that sends 16 bytes of an
    A-ASSOCIATE-RQ and nothing more."""
    if not ipaddress.ip_address(source).is_loopback:
        raise ValueError(f"{source} is not a loopback address")
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The port is chosen at connect(), not at bind(): bind() alone may pick one whose last
    # connection the gateway closed and still holds in TIME_WAIT (connect() then stalls).
    conn.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
    conn.bind((source, 0))
    conn.settimeout(5.0)
    conn.connect(("127.0.0.1", port))
    conn.sendall(HALF_SENT_REQUEST)
    return conn


class HalfOpenFlood:
    """Each source keeps ``per_source`` half-sent requests open, reopening those the gateway
    closes (refused or dropped), until stopped; at most ``max_connections`` opened in all."""

    def __init__(
        self, port: int, sources: list[str], per_source: int = 16, max_connections: int = 5000
    ) -> None:
        self.port = port
        self.sources = sources
        self.per_source = per_source
        self.max_connections = max_connections
        self.opened = 0
        self.closed_by_gateway = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="half-open-flood", daemon=True)
        self._open: dict[str, list[socket.socket]] = {s: [] for s in sources}

    def _top_up(self) -> None:
        for source, conns in self._open.items():
            while len(conns) < self.per_source and self.opened < self.max_connections:
                try:
                    conns.append(half_open(source, self.port))
                except OSError:
                    break
                self.opened += 1

    def _reap(self) -> None:
        everyone = [c for conns in self._open.values() for c in conns]
        if not everyone:
            return
        readable, _, _ = select.select(everyone, [], [], 0.05)
        for conn in readable:  # an A-ASSOCIATE-RJ, an A-ABORT or the end of the connection
            try:
                data = conn.recv(4096, socket.MSG_DONTWAIT)
            except OSError:
                data = b""
            if data and data[0] not in (0x03, 0x07):
                continue
            self.closed_by_gateway += 1
            conn.close()
            for conns in self._open.values():
                if conn in conns:
                    conns.remove(conn)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._top_up()
            self._reap()

    def held(self) -> int:
        return sum(len(conns) for conns in self._open.values())

    def start(self) -> HalfOpenFlood:
        self._top_up()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for conns in self._open.values():
            for conn in conns:
                conn.close()


@contextlib.contextmanager
def half_open_flood(
    port: int, sources: list[str], per_source: int = 16, seconds: float = 120.0
) -> Iterator[HalfOpenFlood]:
    """A running ``HalfOpenFlood`` for the ``with`` block, stopped after ``seconds`` at most."""
    flood = HalfOpenFlood(port, sources, per_source).start()
    timer = threading.Timer(seconds, flood.stop)
    timer.start()
    try:
        yield flood
    finally:
        timer.cancel()
        flood.stop()

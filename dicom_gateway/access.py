"""Who may connect, and how much of the gateway one source may hold.

The calling-AE allowlist is pynetdicom's (``require_calling_aet``); AE titles are
self-declared, so sites also restrict the source address. A connection from an address
outside the allowlist never reaches pynetdicom: it gets an A-ASSOCIATE-RJ (rejected-permanent,
DICOM UL service-user, no reason given; PS3.8 9.3.4) and is closed, and the refusal is logged.

Admission (``GatewayServer.finish_request``), so that a few hostile sources cannot lock the
others out (issue 30 item 2): a connection is refused at once (A-ASSOCIATE-RJ, transient,
local limit exceeded) when its source already holds ``max_pending_per_host`` connections
whose A-ASSOCIATE-RQ is not complete, or ``max_per_host`` in all, or when the gateway holds
``max_associations``; sources not known (``KnownSenders``: the configured addresses, and
those that completed an association) hold at most ``max_associations - reserved`` together,
so known senders always find room. A connection whose request is not complete
``request_timeout`` after it was accepted is dropped (``reap_slow_requests``).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway import metrics
from dicom_gateway.limits import BoundedSocket, ReceiveBudget

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A-ASSOCIATE-RJ PDU: type 0x03, reserved, length 4, reserved, result 1 (rejected-permanent),
# source 1 (DICOM UL service-user), reason 1 (no-reason-given).
ASSOCIATE_RJ_NO_REASON = bytes([0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x01, 0x01, 0x01])
# ... result 2 (rejected-transient), source 3 (service-provider, presentation related),
# reason 2 (local-limit-exceeded): the sender may try again later.
ASSOCIATE_RJ_LOCAL_LIMIT = bytes([0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x02, 0x03, 0x02])
_READ_REQUEST_TIMEOUT_S = 5.0
_MAX_DISCARD_BYTES = 64 * 1024


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``["10.1.2.3", "192.168.0.0/24", "::1"]`` -> networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


class HostAllowlist:
    """Source addresses allowed to associate; empty allows every address."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def refuse(
    connection: socket.socket,
    host: str,
    rejection: bytes = ASSOCIATE_RJ_NO_REASON,
    read_timeout: float = _READ_REQUEST_TIMEOUT_S,
) -> None:
    """Read what the peer sent (its A-ASSOCIATE-RQ) for up to ``read_timeout``, answer
    ``rejection`` and close."""
    try:
        connection.settimeout(read_timeout)
        received = 0
        header = connection.recv(6)
        if len(header) == 6:
            length = int.from_bytes(header[2:6], "big")
            while received < min(length, _MAX_DISCARD_BYTES):
                chunk = connection.recv(min(65536, length - received))
                if not chunk:
                    break
                received += len(chunk)
        connection.sendall(rejection)
        connection.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        logger.debug("refusing %s: %s", host, exc)
    finally:
        connection.close()


class KnownSenders:
    """Source addresses that may use the reserved associations: those configured
    (``MEDSEG_ALLOWED_CALLING_HOSTS``) and those that completed an association (remembered,
    the ``limit`` most recent)."""

    def __init__(self, networks: Iterable[Network] = (), limit: int = 4096) -> None:
        self.configured = HostAllowlist(networks)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def remember(self, host: str) -> None:
        with self._lock:
            self._seen[host] = None
            self._seen.move_to_end(host)
            if len(self._seen) > self._limit:
                self._seen.popitem(last=False)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        with self._lock:
            if host in self._seen:
                return True
        return bool(self.configured.networks) and self.configured.allows(host)


def _host(assoc: Any) -> str:
    return str(assoc.requestor.address)


def _pending(assoc: Any) -> bool:
    """Accepted, but its A-ASSOCIATE-RQ not yet complete (nor the association over)."""
    return not (assoc.is_established or assoc.is_released or assoc.is_aborted or assoc.is_rejected)


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a source-address allowlist and fair admission (see
    the module's docstring).

    The checks run in the connection's own thread, so a slow peer that is refused does not
    hold up the accept loop. The server also carries what ``limits.bounded_handler`` gives
    each association it creates: the receive budget and the PDU read timeout.
    """

    #: listen() backlog: socketserver's 5 drops connections (the SYN is retried after 1 s,
    #: 3 s, ...) whenever a burst arrives faster than the accept loop takes them.
    request_queue_size = 128
    allowlist = HostAllowlist(())
    known = KnownSenders()
    max_associations = 0  # 0: pynetdicom's limit only
    max_per_host = 0  # 0: no per-source limit
    max_pending_per_host = 0  # 0: no limit on requests in progress
    reserved = 0
    request_timeout: float | None = None
    receive_budget: ReceiveBudget | None = None
    pdu_read_timeout: float | None = None
    _admission = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0]) if isinstance(client_address, tuple) else ""
        if not self.allowlist.allows(host):
            metrics.ASSOCIATIONS.labels(outcome="refused_host").inc()
            logger.warning("association refused: source address %s is not allowed", host)
            refuse(request, host)
            return
        # One at a time, so the association started below is counted by the next check.
        with self._admission:
            refusal = self._refusal(host)
            if refusal is None:
                super().finish_request(request, client_address)
        if refusal is not None:
            metrics.ASSOCIATIONS.labels(outcome="refused_busy").inc()
            logger.warning("association refused: %s", refusal)
            # A flood's requests are half-sent: do not wait long for the rest (one thread each).
            refuse(request, host, ASSOCIATE_RJ_LOCAL_LIMIT, read_timeout=1.0)

    def _refusal(self, host: str) -> str | None:
        """Why a new connection from ``host`` is refused now, or None to admit it."""
        held = self._held()
        mine = [a for a in held if _host(a) == host]
        if self.max_pending_per_host and sum(map(_pending, mine)) >= self.max_pending_per_host:
            return (
                f"{host} already has {self.max_pending_per_host} association requests in progress"
            )
        if self.max_per_host and len(mine) >= self.max_per_host:
            return f"{host} already holds {self.max_per_host} associations"
        if self.max_associations and len(held) >= self.max_associations:
            return f"the gateway holds {self.max_associations} associations"
        if self.max_associations and host not in self.known:
            strangers = sum(1 for a in held if _host(a) not in self.known)
            if strangers >= self.max_associations - self.reserved:
                return (
                    f"{host} is not a known sender and the {self.max_associations - self.reserved}"
                    " associations open to unknown senders are taken"
                )
        return None

    def reap_slow_requests(self, stop: threading.Event, every: float = 0.2) -> None:
        """Until ``stop``: drop each connection whose A-ASSOCIATE-RQ is not complete
        ``request_timeout`` after it was accepted (sent slowly, in part, or not at all)."""
        while not stop.wait(every):
            if self.request_timeout is None:
                continue
            now = time.monotonic()
            for assoc in self._held():
                sock = assoc.dul.socket
                opened = getattr(sock, "opened", None)
                if (
                    isinstance(sock, BoundedSocket)
                    and opened is not None
                    and now - opened > self.request_timeout
                    and _pending(assoc)
                ):
                    metrics.ASSOCIATIONS.labels(outcome="aborted_slow_request").inc()
                    logger.warning(
                        "dropping %s: no complete A-ASSOCIATE-RQ within %.0f s",
                        _host(assoc),
                        self.request_timeout,
                    )
                    sock.drop(b"")

    def shutdown_request(self, request: Any) -> None:
        """pynetdicom's acceptor ends here (not in ``AssociationSocket.close``): what its
        association still held of the receive budget is released."""
        for assoc in self.active_associations:
            sock = assoc.dul.socket
            if isinstance(sock, BoundedSocket) and sock.socket is request:
                sock.settle()
        super().shutdown_request(request)

    @property
    def stopped(self) -> threading.Event:
        """Set when the server shuts down (ends ``reap_slow_requests``)."""
        if "_stopped" not in self.__dict__:
            self._stopped = threading.Event()
        return self._stopped

    def shutdown(self) -> None:
        self.stopped.set()
        super().shutdown()

    def _held(self) -> list[Any]:
        """The connections this server holds (acceptor threads), less those being dropped."""
        return [
            assoc
            for assoc in self.active_associations
            if assoc.is_acceptor and not getattr(assoc.dul.socket, "dropped", False)
        ]


def remember_sender(event: Any) -> None:
    """EVT_ACCEPTED: the source completed an association (its AE titles passed): known."""
    server = getattr(event.assoc, "_server", None)
    if isinstance(server, GatewayServer):
        server.known.remember(_host(event.assoc))

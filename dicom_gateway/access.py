"""Who may connect: a source-address allowlist in front of the association server.

The calling-AE allowlist is pynetdicom's (``require_calling_aet``); AE titles are
self-declared, so sites also restrict the source address. A connection from an address
outside the allowlist never reaches pynetdicom: it gets an A-ASSOCIATE-RJ (rejected-permanent,
DICOM UL service-user, no reason given; PS3.8 9.3.4) and is closed, and the refusal is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
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


def refuse(connection: socket.socket, host: str, rejection: bytes = ASSOCIATE_RJ_NO_REASON) -> None:
    """Read what the peer sent (its A-ASSOCIATE-RQ), answer ``rejection`` and close."""
    try:
        connection.settimeout(_READ_REQUEST_TIMEOUT_S)
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


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a source-address allowlist and a limit on the
    associations one source address may hold at once.

    The checks run in the connection's own thread, so a slow peer that is refused does not
    hold up the accept loop. The server also carries what ``limits.bounded_handler`` gives
    each association it creates: the receive budget and the PDU read timeout.
    """

    allowlist = HostAllowlist(())
    max_per_host = 0  # 0: no per-source limit
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
            if self.max_per_host and self._held_by(host) >= self.max_per_host:
                admitted = False
            else:
                admitted = True
                super().finish_request(request, client_address)
        if not admitted:
            metrics.ASSOCIATIONS.labels(outcome="refused_busy").inc()
            logger.warning(
                "association refused: %s already holds %d associations", host, self.max_per_host
            )
            refuse(request, host, ASSOCIATE_RJ_LOCAL_LIMIT)

    def shutdown_request(self, request: Any) -> None:
        """pynetdicom's acceptor ends here (not in ``AssociationSocket.close``): what its
        association still held of the receive budget is released."""
        for assoc in self.active_associations:
            sock = assoc.dul.socket
            if isinstance(sock, BoundedSocket) and sock.socket is request:
                sock.settle()
        super().shutdown_request(request)

    def _held_by(self, host: str) -> int:
        return sum(
            1
            for assoc in self.active_associations
            if assoc.is_acceptor
            and str(assoc.requestor.address) == host
            and not getattr(assoc.dul.socket, "dropped", False)
        )

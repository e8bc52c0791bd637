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
from collections.abc import Iterable
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway import metrics

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A-ASSOCIATE-RJ PDU: type 0x03, reserved, length 4, reserved, result 1 (rejected-permanent),
# source 1 (DICOM UL service-user), reason 1 (no-reason-given).
ASSOCIATE_RJ_NO_REASON = bytes([0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x01, 0x01, 0x01])
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


def refuse(connection: socket.socket, host: str) -> None:
    """Read what the peer sent (its A-ASSOCIATE-RQ), answer A-ASSOCIATE-RJ and close."""
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
        connection.sendall(ASSOCIATE_RJ_NO_REASON)
        connection.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        logger.debug("refusing %s: %s", host, exc)
    finally:
        connection.close()


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a source-address allowlist.

    The check runs in the connection's own thread, so a slow peer outside the allowlist
    does not hold up the accept loop.
    """

    allowlist = HostAllowlist(())

    def finish_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0]) if isinstance(client_address, tuple) else ""
        if self.allowlist.allows(host):
            super().finish_request(request, client_address)
            return
        metrics.ASSOCIATIONS.labels(outcome="refused_host").inc()
        logger.warning("association refused: source address %s is not allowed", host)
        refuse(request, host)

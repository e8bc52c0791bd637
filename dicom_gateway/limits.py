"""Bounds on what a peer can hold of the gateway: time inside a PDU, memory, connections.

* A peer that stops in the middle of a PDU (a half-sent A-ASSOCIATE-RQ) would block the
  association's reader forever: every accepted socket gets a timeout
  (``MEDSEG_PDU_READ_TIMEOUT_SECONDS``). Reads happen only once ``select()`` saw data, so the
  timeout never cuts an idle association between PDUs (pynetdicom's timers govern those).
* Bytes received towards a message not yet handled are reserved before they are read, per
  association (``MEDSEG_MAX_MESSAGE_BYTES``) and over all associations of the process
  (``MEDSEG_MAX_RECEIVE_BYTES``); a PDU that would pass either bound is not read: the
  association is aborted (A-ABORT, service provider) and its connection dropped. The
  reservation is released when the message reaches its handler, or the connection closes.

The per-source connection limit sits with the source allowlist (``access.GatewayServer``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any, cast

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_gateway import metrics

logger = logging.getLogger(__name__)

# A-ABORT PDU: type 0x07, length 4, source 2 (DICOM UL service-provider), reason 0.
A_ABORT_PROVIDER = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x00])


class ReceiveLimitError(OSError):
    """A PDU would take an association, or the process, past its receive bound."""


class ReceiveBudget:
    """Bytes reserved by all associations of a process for messages being received."""

    def __init__(self, per_association: int, total: int) -> None:
        self.per_association = per_association
        self.total = total
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def reserve(self, held: int, amount: int) -> None:
        """Reserve ``amount`` more for an association already holding ``held``, or raise."""
        if held + amount > self.per_association:
            raise ReceiveLimitError(
                f"message over {self.per_association} bytes (MEDSEG_MAX_MESSAGE_BYTES)"
            )
        with self._lock:
            if self._in_use + amount > self.total:
                raise ReceiveLimitError(
                    f"all associations over {self.total} bytes (MEDSEG_MAX_RECEIVE_BYTES)"
                )
            self._in_use += amount

    def release(self, amount: int) -> None:
        with self._lock:
            self._in_use -= amount


class BoundedSocket(AssociationSocket):
    """An acceptor's socket that reserves every read in the server's ``ReceiveBudget``."""

    budget: ReceiveBudget
    held: int
    #: The connection was dropped by a bound; the association is ending.
    dropped: bool
    #: When the connection was accepted (``time.monotonic()``).
    opened: float

    def recv(self, nr_bytes: int) -> bytearray:
        try:
            self.budget.reserve(self.held, nr_bytes)
        except ReceiveLimitError as exc:
            metrics.ASSOCIATIONS.labels(outcome="aborted_memory").inc()
            logger.error("aborting association with %s: %s", self._peer(), exc)
            self.drop(A_ABORT_PROVIDER)
            raise
        self.held += nr_bytes
        try:
            return super().recv(nr_bytes)
        except TimeoutError:
            metrics.ASSOCIATIONS.labels(outcome="aborted_stalled").inc()
            logger.warning("dropping %s: stalled inside a PDU", self._peer())
            self.drop(A_ABORT_PROVIDER if self.assoc.is_established else b"")
            raise

    def settle(self) -> None:
        """The message received so far has been handed on: its bytes no longer count."""
        held, self.held = self.held, 0
        if held:
            self.budget.release(held)

    def close(self) -> None:
        self.settle()
        super().close()

    def _peer(self) -> str:
        return str(self.assoc.requestor.address)

    def drop(self, last_words: bytes) -> None:
        """Send ``last_words`` (an A-ABORT, or nothing), shut the connection down and, before
        the association is established, wake its thread (which would otherwise wait for an
        A-ASSOCIATE-RQ until the ACSE timeout, counted against the association limit)."""
        self.dropped = True
        raw = self.socket
        if raw is not None:
            with contextlib.suppress(OSError):
                if last_words:
                    raw.sendall(last_words)
                raw.shutdown(socket.SHUT_RDWR)
        if not self.assoc.is_established:
            # pynetdicom's acceptor treats None as "no A-ASSOCIATE-RQ came": it ends.
            self.assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


_BOUNDED: dict[str, type[BoundedSocket]] = {}


def _bounded(base: type[AssociationSocket]) -> type[BoundedSocket]:
    if issubclass(base, BoundedSocket):
        return base
    key = f"{base.__module__}.{base.__qualname__}"
    if key not in _BOUNDED:
        made = type(f"Bounded{base.__name__}", (BoundedSocket, base), {})
        _BOUNDED[key] = cast(type[BoundedSocket], made)
    return _BOUNDED[key]


def bound(assoc: Association, budget: ReceiveBudget, read_timeout: float) -> Association:
    """Put an accepted association (threads not started) under the budget and read timeout."""
    sock = assoc.dul.socket
    if sock is None:
        return assoc
    sock.__class__ = _bounded(type(sock))
    bounded = cast(BoundedSocket, sock)
    bounded.budget = budget
    bounded.held = 0
    bounded.dropped = False
    bounded.opened = time.monotonic()
    if sock.socket is not None:
        sock.socket.settimeout(read_timeout)
    return assoc


def message_handled(assoc: Any) -> None:
    """Called by the DIMSE handlers: the message they were given is no longer buffered."""
    sock = getattr(getattr(assoc, "dul", None), "socket", None)
    if isinstance(sock, BoundedSocket):
        sock.settle()


def bounded_handler(base: type[RequestHandler]) -> type[RequestHandler]:
    """``base`` (pynetdicom's request handler or the lean path's), creating bounded
    associations; the server provides ``receive_budget`` and ``pdu_read_timeout``."""

    def _create_association(self: RequestHandler) -> Association:
        assoc = base._create_association(self)
        server: Any = self.server
        return bound(assoc, server.receive_budget, server.pdu_read_timeout)

    return cast(
        type[RequestHandler],
        type(f"Bounded{base.__name__}", (base,), {"_create_association": _create_association}),
    )

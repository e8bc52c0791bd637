"""Event-driven reactors for the associations the gateway accepts.

pynetdicom runs two polling loops per association: the DUL thread sleeps 1 ms whenever it
found nothing to do, and the association thread sleeps 1 ms before every check for a DIMSE
message. A C-STORE from a sender that waits for each response (storescu, most modalities)
crosses both loops several times, so those sleeps, not the work, set the pace of ingest.

Here both threads block until there is work instead:

* the DUL thread waits in ``select()`` on the peer's socket and on a wake-up socket pair that
  is written whenever a primitive is queued for sending (a C-STORE response) or the thread
  is told to stop; the wait is bounded by the ARTIM timer and by ``MAX_WAIT_SECONDS``;
* the association thread waits on an event that the DUL thread sets after every state
  machine action (a DIMSE message assembled, a release or abort indication).

The state machine, PDU decoding, DIMSE assembly and every event pynetdicom emits are
unchanged: the subclasses only replace the two loops and read PDU bodies in large
``recv_into`` calls instead of 4 KiB ``recv`` calls. ``event_driven()`` converts an acceptor
association before its threads start (see ``access.GatewayRequestHandler``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import struct
import threading
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_gateway._fastpath.fast_store import PDV, FastStore, MalformedPDUError, split_pdvs

logger = logging.getLogger(__name__)

#: Longest a reactor waits without being woken; only checks that nothing wakes (the network
#: idle timeout, a DUL thread that died) wait this long.
MAX_WAIT_SECONDS = 0.02
_RECV_CHUNK = 1 << 20
_FIRST_ALLOCATION = 4 << 20
_ABORT_SOURCE_PROVIDER = 0x02
_P_DATA_TF = 0x04
_PDU_TYPES = frozenset(range(0x01, 0x08))  # A-ASSOCIATE-RQ .. A-ABORT (PS3.8 9.3.1)


#: The pynetdicom release whose internals these subclasses were written and tested against
#: (constraints.txt pins it); any other release gets pynetdicom's own receive path.
TESTED_PYNETDICOM = "3.0.4"


def request_handler(enabled: bool) -> type[RequestHandler] | None:
    """The request handler class for the server: ours when enabled and pynetdicom is a release
    we were tested with, else None (pynetdicom's own)."""
    if not enabled:
        return None
    if pynetdicom.__version__ != TESTED_PYNETDICOM:
        logger.warning(
            "pynetdicom %s is not %s: using its own receive path (MEDSEG_FAST_RECEIVE ignored)",
            pynetdicom.__version__,
            TESTED_PYNETDICOM,
        )
        return None
    return EventDrivenRequestHandler


class FastAssociationSocket(AssociationSocket):
    """Reads a PDU body into one buffer with up to 1 MiB per ``recv_into`` call.

    The buffer grows as bytes arrive (from 4 MiB, doubling), never to the length a PDU header
    merely announces: a peer can't make us allocate gigabytes with six bytes.
    """

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(min(nr_bytes, _FIRST_ALLOCATION))
        done = 0
        while done < nr_bytes:
            if done == len(buffer):
                buffer.extend(bytes(min(nr_bytes - done, len(buffer))))
            with memoryview(buffer) as view, view[done:] as free:
                count = sock.recv_into(free, min(len(free), _RECV_CHUNK))
            if count == 0:  # the peer closed: return what arrived, as pynetdicom does
                del buffer[done:]
                return buffer
            done += count
        return buffer


class EventDrivenDUL(DULServiceProvider):
    """The DUL thread, waking on socket data, queued primitives, timers or a stop."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    #: Set once the association is established (see EventDrivenAssociation._run_reactor).
    fast_store: FastStore | None

    def enable_wakeups(self) -> None:
        self.fast_store = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        # OSError: the buffer is full (a wake-up is pending anyway) or the pair is closed.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def _wait_for_work(self) -> None:
        timeout = MAX_WAIT_SECONDS
        if self.artim_timer._start_time is not None and self.artim_timer.timeout is not None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        waitables: list[Any] = [self._wake_r]
        transport = self.socket.socket if self.socket is not None else None
        if transport is not None and transport.fileno() >= 0:
            if isinstance(transport, ssl.SSLSocket) and transport.pending():
                return  # decrypted bytes buffered inside the SSL object: select can't see them
            waitables.append(transport)
        try:
            select.select(waitables, [], [], timeout)
        except (OSError, ValueError):  # the transport closed under us: the loop notices
            return
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _read_pdu_data(self) -> None:
        """Read one PDU; P-DATA-TF PDUs of an established association go to the fast C-STORE
        path, every other PDU to pynetdicom's decoder and state machine."""
        fast = self.fast_store
        if (
            fast is None
            or self.state_machine.current_state != "Sta6"
            # Events still queued for the state machine go first, in order.
            or (not fast.within_message and not self.event_queue.empty())
        ):
            super()._read_pdu_data()
            return
        sock = cast(AssociationSocket, self.socket)
        try:
            header = sock.recv(6)
            if len(header) < 6:
                self.event_queue.put("Evt17")  # transport closed
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            body = sock.recv(length) if pdu_type in _PDU_TYPES else bytearray()
        except OSError:
            logger.error("connection closed before the entire PDU was received")
            self.event_queue.put("Evt17")
            return
        if pdu_type not in _PDU_TYPES:
            logger.error("unknown PDU type 0x%02X received", pdu_type)
            self.event_queue.put("Evt19")
            return
        if len(body) != length:
            logger.error("PDU shorter than announced (%d of %d bytes)", len(body), length)
            self.event_queue.put("Evt17")
            return
        if pdu_type != _P_DATA_TF:
            self._hand_to_state_machine(header + body)
            return
        try:
            fast.receive(split_pdvs(memoryview(body)))
        except MalformedPDUError as exc:
            logger.error("invalid P-DATA-TF PDU: %s", exc)
            self.event_queue.put("Evt19")

    def _hand_to_state_machine(self, raw: bytearray) -> None:
        """What pynetdicom does with a PDU it read: decode, queue its event and the PDU."""
        try:
            pdu, event = self._decode_pdu(raw)
        except Exception:
            logger.exception("unable to decode the received PDU")
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _forward_pdvs(self, pdvs: list[PDV]) -> None:
        """PDVs the fast path doesn't answer, to pynetdicom's DIMSE provider (as the state
        machine's P-DATA indication would pass them)."""
        primitive = P_DATA()
        # pynetdicom's annotation says tuples; its setter accepts only [ID, bytes] lists.
        items: Any = [[context_id, bytes([control]) + data] for context_id, control, data in pdvs]
        primitive.presentation_data_value_list = items
        self.assoc.dimse.receive_primitive(primitive)
        cast(EventDrivenAssociation, self.assoc).activity.set()

    def _send_raw(self, data: bytes) -> None:
        if self.socket is not None:
            self.socket.send(data)

    def _abort_on_error(self) -> None:
        """An exception in the reactor: A-ABORT straight onto the wire and stop both threads
        (the state machine can't be trusted any more), as pynetdicom's own reactor does."""
        pdu = A_ABORT_RQ()
        pdu.source = _ABORT_SOURCE_PROVIDER
        pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True

    def run(self) -> None:
        # Thread.run: pynetdicom bound its own run_reactor as the target when it built the DUL.
        self.run_reactor()

    def run_reactor(self) -> None:
        assoc = cast(EventDrivenAssociation, self.assoc)
        self._idle_timer.start()
        idle = False
        try:
            while True:
                if not assoc._dul_ready.is_set():
                    assoc._dul_ready.set()
                if idle:
                    self._wait_for_work()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    # Either send one queued primitive or read one PDU per turn.
                    if not self._process_recv_primitive() and self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    logger.exception("error in the DUL reactor, aborting the association")
                    self._abort_on_error()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    idle = True
                    continue
                self.state_machine.do_action(event)
                assoc.activity.set()
                idle = False
        finally:
            assoc.activity.set()
            self._wake_r.close()
            self._wake_w.close()


class EventDrivenAssociation(Association):
    """The acceptor's association thread, waking when the DUL thread did something."""

    activity: threading.Event
    fast_store_enabled: bool

    def kill(self) -> None:
        self.activity.set()
        super().kill()

    def _run_reactor(self) -> None:
        dul = cast(EventDrivenDUL, self.dul)
        if self.fast_store_enabled:
            dul.fast_store = FastStore(self, send=dul._send_raw, forward=dul._forward_pdvs)
        self._is_paused = False
        busy = False
        while not self._kill:
            if not busy:
                self.activity.wait(MAX_WAIT_SECONDS)
                self.activity.clear()
            busy = False
            # The acceptor's send_*() methods pause the reactor so that it doesn't take
            # their response off the queue.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, message = self.dimse.get_msg(block=False)
            if message:
                self._serve_request(message, cast(int, context_id))
                busy = True
            if self._stop_if_finished():
                return

    def _stop_if_finished(self) -> bool:
        """Release, abort, a dead DUL thread or the network timeout end the association."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            logger.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            logger.info(
                "Association Aborted%s",
                " (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else "",
            )
            self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for the abort
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            logger.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


def event_driven(assoc: Association, fast_store: bool = True) -> Association:
    """Convert a freshly created acceptor association (threads not started) in place."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("event_driven() needs an association whose threads haven't started")
    assoc.__class__ = EventDrivenAssociation
    cast(EventDrivenAssociation, assoc).activity = threading.Event()
    cast(EventDrivenAssociation, assoc).fast_store_enabled = fast_store
    dul = assoc.dul
    dul.__class__ = EventDrivenDUL
    cast(EventDrivenDUL, dul).enable_wakeups()
    if dul.socket is not None and type(dul.socket) is AssociationSocket:
        dul.socket.__class__ = FastAssociationSocket
    return assoc


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, handing out event-driven acceptor associations."""

    def _create_association(self) -> Association:
        return event_driven(super()._create_association())

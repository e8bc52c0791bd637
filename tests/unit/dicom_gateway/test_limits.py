"""Issue 18 items 2 and 6: half-sent PDUs time out, one source cannot lock the others out,
and the bytes a peer can make the gateway hold are bounded (the association is aborted)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance
from dicom_gateway import statuses
from dicom_gateway.access import GatewayServer
from dicom_gateway.limits import ReceiveBudget, ReceiveLimitError
from dicom_gateway.server import start_gateway
from tests.support.factories import minimal_image
from tests.support.gateway import RecordingPublisher, echo_from
from tests.support.tools import wait_until
from worker.core.settings import Settings
from worker.devtools.localstack import free_port

MIB = 1 << 20
_wait = partial(wait_until, timeout=15.0)


@pytest.fixture(params=[True, False], ids=["fast", "pynetdicom"])
def gateway(
    request: pytest.FixtureRequest, settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[tuple[Settings, GatewayServer]]:
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "fast_receive": request.param,
            "max_associations_per_host": 4,
            "pdu_read_timeout_seconds": 1.5,
            "max_message_bytes": 8 * MIB,
            "max_pdu": 16384,
        }
    )
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    assert isinstance(server, GatewayServer)
    yield settings, server
    server.shutdown()
    monitor.stop()


def _half_sent_request(port: int) -> socket.socket:
    """16 bytes of an A-ASSOCIATE-RQ announcing 200: header, version, reserved, 6 of the AE."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(struct.pack(">BBLHH", 0x01, 0, 200, 1, 0) + b"MEDSEG")
    return conn


def _closed_by_peer(conn: socket.socket, timeout: float) -> bool:
    conn.settimeout(timeout)
    try:
        while conn.recv(4096):  # an A-ASSOCIATE-RJ or A-ABORT may come first
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_half_sent_associations_of_one_source_lock_no_one_out(
    gateway: tuple[Settings, GatewayServer],
) -> None:
    settings, _ = gateway
    attackers = [_half_sent_request(settings.port) for _ in range(33)]
    try:
        time.sleep(0.3)
        # Another source is served while the attacker holds its connections.
        assert echo_from(settings, "127.0.0.2") == statuses.SUCCESS
        # The half-sent requests are dropped after the PDU read timeout (the ones over the
        # per-source limit were refused at once).
        start = time.monotonic()
        assert all(_closed_by_peer(conn, 10.0) for conn in attackers)
        assert time.monotonic() - start < 8.0
        # ... and the attacker's address is served again.
        assert echo_from(settings, "127.0.0.1") == statuses.SUCCESS
    finally:
        for conn in attackers:
            conn.close()


def test_a_pdu_announcing_4_gib_aborts_the_association_unread(
    gateway: tuple[Settings, GatewayServer],
) -> None:
    settings, server = gateway
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0))
    chunk = bytes(MIB)
    with pytest.raises(OSError):  # the gateway aborts and drops the connection
        for _ in range(200):
            raw.sendall(chunk)
    _wait(lambda: assoc.is_aborted or not assoc.is_alive())
    budget = server.receive_budget
    assert budget is not None
    _wait(lambda: budget.in_use == 0)
    assert echo_from(settings, "127.0.0.1") == statuses.SUCCESS


def test_a_data_set_growing_past_the_bound_aborts_the_association(
    gateway: tuple[Settings, GatewayServer], session_factory: sessionmaker[Session]
) -> None:
    settings, server = gateway
    big = minimal_image(CTImageStorage, "CT")
    big.Rows, big.Columns = 2048, 2560  # 10 MiB of pixels, sent in 16 KiB PDUs
    big.PixelData = np.zeros((2048, 2560), dtype="<u2").tobytes()
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    result: list[object] = []
    sender = threading.Thread(target=lambda: result.append(assoc.send_c_store(big)))
    sender.start()
    sender.join(30)
    assert not sender.is_alive()
    assert "Status" not in result[0]  # type: ignore[operator]  # no response: aborted
    # The requestor notices the abort in its own thread: wait for it, not a race.
    _wait(lambda: assoc.is_aborted or not assoc.is_established)
    budget = server.receive_budget
    assert budget is not None
    _wait(lambda: budget.in_use == 0)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 0
    # A normal instance still goes through on a new association.
    ae2 = AE(ae_title="TESTSCU")
    ae2.add_requested_context(CTImageStorage)
    assoc2 = ae2.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc2.send_c_store(minimal_image(CTImageStorage, "CT")).Status == statuses.SUCCESS
    assoc2.release()


def test_the_budget_bounds_one_association_and_all_together() -> None:
    budget = ReceiveBudget(per_association=10, total=15)
    budget.reserve(0, 8)
    with pytest.raises(ReceiveLimitError, match="MEDSEG_MAX_MESSAGE_BYTES"):
        budget.reserve(8, 3)
    with pytest.raises(ReceiveLimitError, match="MEDSEG_MAX_RECEIVE_BYTES"):
        budget.reserve(0, 8)  # a second association: 16 > 15 in all
    budget.release(8)
    budget.reserve(0, 8)
    assert budget.in_use == 8

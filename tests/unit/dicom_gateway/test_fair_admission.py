"""Issue 30 item 2: hostile sources holding half-sent A-ASSOCIATE-RQs, reopened when dropped,
cannot lock a sender out: capacity is kept for known senders, a connection must complete its
request quickly, and no source holds more than a few requests in progress."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway import statuses
from dicom_gateway.access import GatewayServer
from dicom_gateway.server import start_gateway
from tests.support.flood import half_open_flood
from tests.support.gateway import RecordingPublisher, echo_from
from worker.core.settings import Settings
from worker.devtools.localstack import free_port

HOSTILE = [f"127.0.0.{i}" for i in range(2, 9)]  # seven sources


@pytest.fixture(params=[True, False], ids=["fast", "pynetdicom"])
def gateway(
    request: pytest.FixtureRequest, settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[tuple[Settings, GatewayServer]]:
    # The shipped limits; only the time a request may take is shortened, to keep it brief.
    settings = settings.model_copy(
        update={
            "port": free_port(),
            "fast_receive": request.param,
            "association_request_timeout_seconds": 2.0,
        }
    )
    assert (settings.max_associations, settings.max_associations_per_host) == (32, 16)
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    assert isinstance(server, GatewayServer)
    yield settings, server
    server.shutdown()
    monitor.stop()


def _held(server: GatewayServer) -> Counter[str]:
    return Counter(
        str(a.requestor.address)
        for a in server.active_associations
        if not getattr(a.dul.socket, "dropped", False)
    )


def _echo_during(settings: Settings, sources: list[str], tries: int, seconds: float) -> int:
    answered = 0
    for i in range(tries):
        time.sleep(seconds / tries)
        answered += echo_from(settings, sources[i % len(sources)], "GOODSCU") == statuses.SUCCESS
    return answered


def test_seven_hostile_sources_leave_room_for_a_known_sender(
    gateway: tuple[Settings, GatewayServer],
) -> None:
    """The audit: 16 half-sent requests from each source, reopened when dropped, filled the
    32 associations and a C-ECHO was refused 8 of 8 times. Now a sender that has associated
    before (known) is answered 8 of 8 times while seven sources flood."""
    settings, server = gateway
    assert echo_from(settings, "127.0.0.9", "GOODSCU") == statuses.SUCCESS  # known from now on
    with half_open_flood(settings.port, HOSTILE, per_source=16, seconds=30) as flood:
        time.sleep(0.5)
        peak: Counter[str] = Counter()
        answered = 0
        for _ in range(8):
            answered += echo_from(settings, "127.0.0.9", "GOODSCU") == statuses.SUCCESS
            held = _held(server)
            peak = Counter({h: max(peak[h], held[h]) for h in set(peak) | set(held)})
            time.sleep(0.5)
        opened = flood.opened
    assert answered == 8
    hostile = {h: n for h, n in peak.items() if h in HOSTILE}
    assert max(hostile.values()) <= settings.max_pending_per_host
    assert opened > 7 * 16  # they kept reopening what was refused or dropped


def test_three_hostile_sources_leave_room_for_a_new_sender(
    gateway: tuple[Settings, GatewayServer],
) -> None:
    """A sender never seen before is served too: each hostile source holds at most
    ``MAX_PENDING_PER_HOST`` requests in progress, each dropped after the request timeout."""
    settings, _ = gateway
    with half_open_flood(settings.port, HOSTILE[:3], per_source=16, seconds=30) as flood:
        time.sleep(0.5)
        answered = _echo_during(settings, [f"127.0.0.{i}" for i in range(10, 18)], 8, 4.0)
        time.sleep(2.5)  # past the request timeout: the first ones were dropped
        dropped = flood.closed_by_gateway
    assert answered == 8
    assert dropped >= 3 * 16

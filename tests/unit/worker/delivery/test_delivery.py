"""Delivery of SEG + SR to a real DICOM peer (DCMTK storescp), retries and give-up."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, JobState
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from tests.support.tools import need_tool
from worker.core.settings import DicomDestination
from worker.delivery.deliver import execute_delivery
from worker.devtools.localstack import dcmtk_env, free_port, stop, wait_for_port
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import DeliverTo, execute_job


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[DicomDestination, Path]]:
    tool = need_tool("storescp")
    port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    process = subprocess.Popen(
        [tool, "-aet", "PACS", "-od", str(received), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process=process)  # type: ignore[arg-type]
    yield DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port), received
    stop(process)  # type: ignore[arg-type]


def _succeeded_job_with_delivery(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    destination: DicomDestination,
    attempts: int,
) -> int:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=6))
    state = execute_job(
        session_factory,
        ModelCache("cpu"),
        tmp_path / "results",
        job_id,
        DeliverTo([destination], attempts),
    )
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        (delivery,) = session.scalars(select(Delivery)).all()
    assert delivery.state is DeliveryState.PENDING and delivery.destination == destination.name
    return delivery.id


def test_seg_and_sr_reach_the_peer(
    session_factory: sessionmaker[Session], tmp_path: Path, storescp: tuple[DicomDestination, Path]
) -> None:
    destination, received = storescp
    delivery_id = _succeeded_job_with_delivery(session_factory, tmp_path, destination, 3)
    assert execute_delivery(session_factory, [destination], delivery_id) is DeliveryState.SENT
    modalities = sorted(pydicom.dcmread(p).Modality for p in received.iterdir())
    assert modalities == ["SEG", "SR"]
    with session_factory() as session:
        delivery = session.get_one(Delivery, delivery_id)
    assert delivery.attempts == 1 and delivery.delivered_at is not None and delivery.error is None
    assert execute_delivery(session_factory, [destination], delivery_id) is None  # done is done


def test_unreachable_peer_backs_off_then_fails(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    down = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    delivery_id = _succeeded_job_with_delivery(session_factory, tmp_path, down, 2)
    assert execute_delivery(session_factory, [down], delivery_id) is DeliveryState.PENDING
    with session_factory() as session:
        delivery = session.get_one(Delivery, delivery_id)
        assert delivery.attempts == 1 and delivery.not_before is not None
        assert delivery.enqueued_at is None and "no association" in (delivery.error or "")
    assert execute_delivery(session_factory, [down], delivery_id) is DeliveryState.FAILED


def test_a_removed_destination_fails_at_once(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    old = DicomDestination(name="old", ae_title="OLD", host="127.0.0.1", port=free_port())
    delivery_id = _succeeded_job_with_delivery(session_factory, tmp_path, old, 5)
    assert execute_delivery(session_factory, [], delivery_id) is DeliveryState.FAILED


def test_destinations_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.core.settings import Settings

    monkeypatch.setenv(
        "MEDSEG_DESTINATIONS",
        '[{"type": "dicom", "name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}]',
    )
    (destination,) = Settings().destinations
    assert (destination.name, destination.port, destination.calling_ae) == ("pacs", 104, "MEDSEG")
    monkeypatch.setenv("MEDSEG_DESTINATIONS", '[{"type": "ftp", "name": "x"}]')
    with pytest.raises(ValueError, match="type"):
        Settings()


def test_results_go_back_to_the_sending_ae(
    session_factory: sessionmaker[Session], tmp_path: Path, storescp: tuple[DicomDestination, Path]
) -> None:
    from db.models import Series

    peer, received = storescp
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 1, slices=4))
    with session_factory.begin() as session:
        for series in session.scalars(select(Series)):
            series.calling_ae, series.calling_host = "PACS", "127.0.0.1"
    state = execute_job(
        session_factory,
        ModelCache("cpu"),
        tmp_path / "r",
        job_id,
        DeliverTo([], 3, return_to_sender=True),
    )
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        (delivery,) = session.scalars(select(Delivery)).all()
    assert delivery.destination == "sender"
    assert (
        execute_delivery(session_factory, [], delivery.id, return_port=peer.port)
        is DeliveryState.SENT
    )
    assert sorted(pydicom.dcmread(p).Modality for p in received.iterdir()) == ["SEG", "SR"]

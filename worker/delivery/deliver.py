"""Deliver a result's DICOM outputs (SEG, SR) to configured destinations, with retries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, utcnow
from worker.core.settings import DicomDestination
from worker.delivery.policy import SENDER
from worker.runtime.jobs import backoff_seconds

logger = logging.getLogger(__name__)

#: Success, and the C-STORE warnings that still mean "stored" (PS3.4 B.2.3).
STORED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


class DeliveryError(RuntimeError):
    """The destination did not take every output; the message says what happened."""


def send_dicom(destination: DicomDestination, paths: Sequence[Path]) -> None:
    """C-STORE ``paths`` over one association; raises DeliveryError unless all are stored."""
    ae = AE(ae_title=destination.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    classes = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in paths}
    for sop_class in sorted(classes):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DeliveryError(
            f"no association with {destination.ae_title}@{destination.host}:{destination.port}"
        )
    try:
        for path in paths:
            status = assoc.send_c_store(path)
            code = int(status.Status) if "Status" in status else None
            if code not in STORED:
                shown = "no response" if code is None else f"status 0x{code:04X}"
                raise DeliveryError(f"{path.name}: {shown} from {destination.ae_title}")
    finally:
        if assoc.is_established:
            assoc.release()


def execute_delivery(
    session_factory: sessionmaker[Session],
    destinations: Sequence[DicomDestination],
    delivery_id: int,
    return_port: int | None = None,
) -> DeliveryState | None:
    """One attempt at delivery ``delivery_id``; None when there was nothing to do."""
    with session_factory.begin() as session:
        delivery = session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.state is not DeliveryState.PENDING:
            return None
        delivery.attempts += 1
        name = delivery.destination
        paths = [Path(o.path) for o in delivery.result.outputs if o.sop_instance_uid]
        series = delivery.result.job.series
        if name == SENDER and return_port and series.calling_host and series.calling_ae:
            destinations = [
                DicomDestination(
                    name=SENDER,
                    ae_title=series.calling_ae,
                    host=series.calling_host,
                    port=return_port,
                )
            ]
    destination = next((d for d in destinations if d.name == name), None)
    error: str | None = None
    if destination is None:
        error = f"destination {name!r} is no longer configured"
    else:
        try:
            send_dicom(destination, paths)
        except (DeliveryError, OSError) as exc:
            error = str(exc)
    with session_factory.begin() as session:
        delivery = session.get_one(Delivery, delivery_id, with_for_update=True)
        delivery.error = error
        if error is None:
            delivery.state = DeliveryState.SENT
            delivery.delivered_at = utcnow()
            logger.info("delivery %s: %d file(s) stored at %s", delivery_id, len(paths), name)
        elif destination is None or delivery.attempts >= delivery.max_attempts:
            delivery.state = DeliveryState.FAILED
            logger.error("delivery %s failed for good: %s", delivery_id, error)
        else:
            delivery.enqueued_at = None  # the outbox publishes it again when due
            delivery.not_before = utcnow() + timedelta(seconds=backoff_seconds(delivery.attempts))
            logger.warning("delivery %s will be retried: %s", delivery_id, error)
        return delivery.state

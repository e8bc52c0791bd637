"""Quiet periods per calling AE and per model: each series waits for its own period."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.models import Series, SeriesStatus, Study, utcnow
from dicom_gateway.completion import QuietPolicy, complete_quiet_series
from worker.core.routing import route
from worker.core.tags import SeriesTags


def _series(session_factory: sessionmaker[Session], uid: str, ae: str, modality: str) -> None:
    with session_factory.begin() as session:
        session.add(
            Series(
                study=Study(study_instance_uid=f"{uid}.0"),
                series_instance_uid=uid,
                modality=modality,
                body_part_examined="CHEST",
                calling_ae=ae,
                last_received_at=utcnow(),
            )
        )


def _status(session_factory: sessionmaker[Session], uid: str) -> SeriesStatus:
    with session_factory() as session:
        series = session.query(Series).filter_by(series_instance_uid=uid).one()
        return series.status


def test_a_calling_ae_with_a_short_period_completes_first(
    session_factory: sessionmaker[Session],
) -> None:
    _series(session_factory, "1.1", "US_ROOM3", "CT")
    _series(session_factory, "1.2", "CT1", "CT")
    policy = QuietPolicy(60.0, by_calling_ae={"US_ROOM3": 2.0})
    assert policy.shortest_s == 2.0
    complete_quiet_series(session_factory, policy, 3, now=utcnow() + timedelta(seconds=5))
    assert _status(session_factory, "1.1") is SeriesStatus.COMPLETE
    assert _status(session_factory, "1.2") is SeriesStatus.RECEIVING
    complete_quiet_series(session_factory, policy, 3, now=utcnow() + timedelta(seconds=61))
    assert _status(session_factory, "1.2") is SeriesStatus.COMPLETE


def test_a_model_period_applies_unless_the_calling_ae_has_its_own(
    session_factory: sessionmaker[Session],
) -> None:
    spec = route(SeriesTags.of(modality="CT", body_part_examined="CHEST"))
    assert spec is not None
    _series(session_factory, "2.1", "CT1", "CT")
    _series(session_factory, "2.2", "SLOW", "CT")
    policy = QuietPolicy(60.0, by_calling_ae={"SLOW": 30.0}, by_model={spec.name: 3.0})
    complete_quiet_series(session_factory, policy, 3, now=utcnow() + timedelta(seconds=10))
    assert _status(session_factory, "2.1") is SeriesStatus.COMPLETE
    assert _status(session_factory, "2.2") is SeriesStatus.RECEIVING


def test_a_series_receiving_at_a_restart_is_quiet_only_a_period_after_the_restart(
    session_factory: sessionmaker[Session],
) -> None:
    """Issue 18 item 4: the gateway was down longer than the quiet period mid-series; at its
    first poll the partial series must not complete (the sender could not send meanwhile)."""
    from dicom_gateway.completion import mark_interrupted

    _series(session_factory, "3.1", "CT1", "CT")
    restart = utcnow() + timedelta(seconds=60)  # the last instance came a minute before
    assert mark_interrupted(session_factory, now=restart) == 1
    policy = QuietPolicy(10.0)
    first_poll = restart + timedelta(seconds=1)
    assert complete_quiet_series(session_factory, policy, 3, now=first_poll) == []
    assert _status(session_factory, "3.1") is SeriesStatus.RECEIVING
    complete_quiet_series(session_factory, policy, 3, now=restart + timedelta(seconds=11))
    assert _status(session_factory, "3.1") is SeriesStatus.COMPLETE
    # A series that was complete before the restart is not touched.
    assert mark_interrupted(session_factory, now=restart + timedelta(seconds=20)) == 0

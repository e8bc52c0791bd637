"""Every operator action leaves an audit row (who, from where, when, target, outcome), written
by the operation itself in its own transaction; a refused action is recorded as refused and
changes nothing (issue 21 item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, DeliveryState, Job, JobState
from tests.support.factories import chest_series
from tests.support.history import with_result
from tests.support.jobs import add_job, queue_test_job
from worker.core.settings import DicomDestination
from worker.ops.audit import Actor, list_events
from worker.ops.deliveries import resend
from worker.ops.operations import OperationError, cancel, retry
from worker.ops.reruns import rerun
from worker.ops.review import decide

ALICE = Actor("alice", "cli")
PACS = [DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)]


def _events(factory: sessionmaker[Session]) -> list[tuple[object, ...]]:
    with factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.actor, e.source, e.action, e.job_id, e.delivery_id, e.outcome) for e in rows]


def _study(factory: sessionmaker[Session], job_id: int) -> int:
    with factory() as session:
        return session.get_one(Job, job_id).series.study_id


def test_retry_cancel_and_retry_all_are_recorded_with_user_source_target_and_outcome(
    session_factory: sessionmaker[Session],
) -> None:
    failed = add_job(session_factory, "cpu", state=JobState.FAILED, error="boom", attempts=1)
    other = add_job(session_factory, "cpu", state=JobState.QUARANTINED, error="boom", attempts=3)
    queued = add_job(session_factory, "cpu")
    retry(session_factory, [failed], actor=ALICE)
    cancel(session_factory, queued, actor=Actor("bob", "dashboard"))
    retry(session_factory, None, actor=ALICE)  # retry all: the quarantined one only
    assert _events(session_factory) == [
        ("alice", "cli", "retry", failed, None, "done"),
        ("bob", "dashboard", "cancel", queued, None, "done"),
        ("alice", "cli", "retry_all", other, None, "done"),
    ]
    [first] = list_events(session_factory, action="retry")
    assert first.study_id == _study(session_factory, failed)
    assert first.detail == "failed -> queued, a fresh budget of 3"
    assert first.at is not None
    retry(session_factory, None, actor=ALICE)
    assert list_events(session_factory, limit=1)[0].detail == "nothing to retry"


def test_a_refused_action_is_recorded_as_refused_and_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    done = add_job(session_factory, "cpu", state=JobState.SUCCEEDED)
    with pytest.raises(OperationError, match="succeeded"):
        retry(session_factory, [done], actor=ALICE)
    with pytest.raises(OperationError, match="no job 4242"):
        cancel(session_factory, 4242, actor=ALICE)
    events = list_events(session_factory)
    assert [(e.action, e.job_id, e.outcome) for e in events] == [
        ("cancel", None, "refused"),
        ("retry", done, "refused"),
    ]
    assert "no job 4242" in (events[0].detail or "")
    with session_factory() as session:
        assert session.get_one(Job, done).state is JobState.SUCCEEDED


def test_without_an_actor_nothing_is_recorded(session_factory: sessionmaker[Session]) -> None:
    failed = add_job(session_factory, "cpu", state=JobState.FAILED, error="boom")
    retry(session_factory, [failed])
    assert _events(session_factory) == []


def test_redelivery_and_review_are_recorded(session_factory: sessionmaker[Session]) -> None:
    job, delivery = with_result(session_factory, JobState.SUCCEEDED, DeliveryState.FAILED)
    other_job, other = with_result(session_factory, JobState.SUCCEEDED, DeliveryState.FAILED)
    resend(session_factory, [delivery], PACS, actor=ALICE)
    resend(session_factory, None, PACS, actor=Actor("carol", "dashboard"))
    _, sent = with_result(session_factory, JobState.SUCCEEDED, DeliveryState.SENT)
    with pytest.raises(OperationError, match="not sent again"):
        resend(session_factory, [sent], PACS, actor=ALICE)
    flagged, _ = with_result(
        session_factory, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, review="gate: odd"
    )
    decide(session_factory, flagged, "rejected", by="dr who", actor=Actor("dr who", "cli"))
    assert _events(session_factory)[:2] == [
        ("alice", "cli", "redeliver", job, delivery, "done"),
        ("carol", "dashboard", "redeliver_all", other_job, other, "done"),
    ]
    review, refused = list_events(session_factory, limit=2)
    assert (refused.action, refused.delivery_id, refused.outcome) == ("redeliver", sent, "refused")
    assert (review.action, review.actor, review.job_id, review.detail) == (
        "reject",
        "dr who",
        flagged,
        "rejected by dr who",
    )


def test_rerun_records_each_job_it_queued(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    first = queue_test_job(session_factory, chest_series(tmp_path / "a", 0, slices=2))
    created = rerun(session_factory, "lung-ct-threshold", force=True, actor=ALICE)
    assert len(created) == 1 and created[0] != first
    [event] = list_events(session_factory, action="rerun")
    assert (event.job_id, event.actor, event.outcome) == (created[0], "alice", "done")
    assert event.study_id == _study(session_factory, first)
    assert (event.detail or "").startswith("lung-ct-threshold ") and "(forced)" in (
        event.detail or ""
    )
    with pytest.raises(OperationError):
        rerun(session_factory, "no-such-model", actor=ALICE)
    assert list_events(session_factory, limit=1)[0].outcome == "refused"
    assert [e.action for e in list_events(session_factory, user="alice")] == ["rerun", "rerun"]
    assert list_events(session_factory, user="nobody") == []

"""Failed deliveries as operators see them: the delivery_failed condition, counts, and
sending again without running the model (issue 21 item 1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import fakeredis
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, Job, JobState, Result, utcnow
from tests.support.jobs import add_job
from worker.core.settings import DicomDestination, Settings
from worker.ops.deliveries import failed_deliveries, resend
from worker.ops.operations import OperationError, list_jobs, status

PACS = [DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)]


def _delivered(
    session_factory: sessionmaker[Session],
    state: DeliveryState,
    *,
    destination: str = "pacs",
    decision: str | None = None,
) -> tuple[int, int]:
    """A succeeded job whose result has one delivery in ``state``: (job id, delivery id)."""
    job_id = add_job(session_factory, "cpu", state=JobState.SUCCEEDED, attempts=1)
    with session_factory.begin() as session:
        delivery = Delivery(
            destination=destination,
            state=state,
            attempts=5 if state is DeliveryState.FAILED else 1,
            error="no association with PACS@127.0.0.1:11112"
            if state is DeliveryState.FAILED
            else None,
        )
        result = Result(
            job_id=job_id,
            model_name="m",
            model_version="1",
            validation="validated-real",
            review="flagged" if decision else None,
            review_decision=decision,
            deliveries=[delivery],
        )
        session.add(result)
        session.flush()
        return job_id, delivery.id


def _delivery(session_factory: sessionmaker[Session], delivery_id: int) -> Delivery:
    with session_factory() as session:
        return session.get_one(Delivery, delivery_id)


def test_failed_deliveries_are_a_condition_of_their_jobs(
    session_factory: sessionmaker[Session],
) -> None:
    failed_job, failed = _delivered(session_factory, DeliveryState.FAILED)
    sent_job, _ = _delivered(session_factory, DeliveryState.SENT)
    assert [j.id for j in list_jobs(session_factory, delivery_failed=True)] == [failed_job]
    assert {j.id for j in list_jobs(session_factory, state=JobState.SUCCEEDED)} == {
        failed_job,
        sent_job,
    }
    assert [d.id for d in failed_deliveries(session_factory)] == [failed]
    assert status(session_factory, fakeredis.FakeRedis(), None).deliveries_failed == 1


def test_resend_queues_failed_deliveries_with_a_fresh_budget(
    session_factory: sessionmaker[Session],
) -> None:
    _, failed = _delivered(session_factory, DeliveryState.FAILED)
    _, other = _delivered(session_factory, DeliveryState.FAILED)
    _, sent = _delivered(session_factory, DeliveryState.SENT)
    _, withheld = _delivered(session_factory, DeliveryState.WITHHELD)
    assert resend(session_factory, [failed], PACS).queued == [failed]
    delivery = _delivery(session_factory, failed)
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 0
    assert delivery.enqueued_at is None and delivery.not_before is None
    with pytest.raises(OperationError, match="it is sent"):
        resend(session_factory, [sent], PACS)
    with pytest.raises(OperationError, match="it is withheld"):
        resend(session_factory, [withheld], PACS)
    with pytest.raises(OperationError, match=r"no delivery\(ies\) 9999$"):
        resend(session_factory, [other, 9999], PACS)
    assert _delivery(session_factory, other).state is DeliveryState.FAILED  # nothing changed
    assert resend(session_factory, None, PACS).queued == [other]
    assert resend(session_factory, None, PACS).queued == []
    # A pending delivery named is published again at the next poll, its attempts kept.
    assert resend(session_factory, [failed], PACS).queued == [failed]


def test_resend_asks_the_policy_again_and_skips_what_cannot_be_sent(
    session_factory: sessionmaker[Session],
) -> None:
    _, rejected = _delivered(session_factory, DeliveryState.FAILED, decision="rejected")
    _, gone = _delivered(session_factory, DeliveryState.FAILED, destination="old-pacs")
    superseded_job, superseded = _delivered(session_factory, DeliveryState.FAILED)
    with session_factory.begin() as session:
        session.get_one(Job, superseded_job).superseded_at = utcnow()
    done = resend(session_factory, None, PACS)
    assert done.queued == [] and list(done.withheld) == [rejected]
    assert "rejected by a reviewer" in done.withheld[rejected]
    assert _delivery(session_factory, rejected).state is DeliveryState.WITHHELD
    assert "no longer configured" in done.left[gone]
    assert "superseded" in done.left[superseded]
    assert _delivery(session_factory, superseded).state is DeliveryState.FAILED
    with pytest.raises(OperationError, match="superseded"):
        resend(session_factory, [superseded], PACS)
    rerun_job, stale = _delivered(session_factory, DeliveryState.FAILED)
    with session_factory.begin() as session:
        session.add(Result(job_id=rerun_job, model_name="m", model_version="1"))
    with pytest.raises(OperationError, match="newer result"):
        resend(session_factory, [stale], PACS)


def test_deliver_and_jobs_from_the_command_line(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    job, failed = _delivered(session_factory, DeliveryState.FAILED)
    env = {
        **os.environ,
        "MEDSEG_DATABASE_URL": settings.database_url,
        "MEDSEG_DESTINATIONS": '[{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 1}]',
    }

    def medseg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = medseg("jobs", "--state", "delivery_failed")
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^ *{job} +succeeded ", listed.stdout, re.M), listed.stdout
    assert f"delivery {failed} to pacs failed: no association" in listed.stdout
    shown = medseg("deliver")
    assert f"{failed:>8} {job:>6} pacs" in shown.stdout and "no association" in shown.stdout
    refused = medseg("deliver", "--retry", "424242")
    assert refused.returncode == 1 and "no delivery(ies) 424242" in refused.stderr
    assert medseg("deliver", "--retry", str(failed)).stdout.strip() == f"queued again: {failed}"
    assert medseg("deliver", "--failed").stdout.strip() == "queued again: nothing"
    assert _delivery(session_factory, failed).state is DeliveryState.PENDING

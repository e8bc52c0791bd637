"""The dashboard's actions record the logged-in user in the audit trail, and the study page
shows each job's attempts (old errors kept, the current one marked) and what operators did
(issue 21 item 6)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import transition
from db.models import AuditEvent, DeliveryState, Job, JobState
from tests.support.dashboard_client import csrf_token, logged_in_client
from tests.support.history import with_result
from tests.support.jobs import add_job
from worker.core.settings import DicomDestination, Settings

PACS = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> TestClient:
    return logged_in_client(settings, session_factory, destinations=[PACS])


def _post(client: TestClient, url: str, **data: str) -> None:
    response = client.post(url, data={"csrf": csrf_token(client.get("/failures").text), **data})
    assert response.status_code == 303, response.text


def _trail(factory: sessionmaker[Session]) -> list[tuple[object, ...]]:
    with factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.actor, e.source, e.action, e.job_id, e.delivery_id, e.outcome) for e in rows]


def _run(factory: sessionmaker[Session], job_id: int, worker: str, then: JobState) -> None:
    with factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.worker = worker
        transition(job, JobState.RUNNING)
        if then is not JobState.RUNNING:
            transition(job, then, error=f"boom on {worker}")


def test_every_dashboard_action_records_the_logged_in_user(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    failed = add_job(session_factory, "cpu", state=JobState.FAILED, error="boom")
    queued = add_job(session_factory, "cpu")
    other = add_job(session_factory, "cpu", state=JobState.QUARANTINED, error="boom")
    job, delivery = with_result(session_factory, JobState.SUCCEEDED, DeliveryState.FAILED)
    flagged, _ = with_result(
        session_factory, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, review="gate: odd"
    )
    _post(client, f"/jobs/{failed}/retry")
    _post(client, f"/jobs/{queued}/cancel")
    _post(client, "/failures/retry-all")
    _post(client, f"/deliveries/{delivery}/retry")
    _post(client, "/failures/retry-deliveries")
    _post(client, f"/jobs/{flagged}/review", decision="accepted")
    _post(client, "/rerun", model="lung-ct-threshold", confirmed="true")
    _post(client, f"/jobs/{job}/cancel")  # succeeded: refused
    assert _trail(session_factory) == [
        ("op", "dashboard", "retry", failed, None, "done"),
        ("op", "dashboard", "cancel", queued, None, "done"),
        ("op", "dashboard", "retry_all", other, None, "done"),
        ("op", "dashboard", "redeliver", job, delivery, "done"),
        ("op", "dashboard", "redeliver_all", None, None, "done"),  # nothing left failed
        ("op", "dashboard", "accept", flagged, None, "done"),
        ("op", "dashboard", "rerun", None, None, "done"),  # no series ran it: nothing queued
        ("op", "dashboard", "cancel", job, None, "refused"),
    ]


def test_the_study_page_shows_every_attempt_and_who_retried(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    job_id = add_job(session_factory, "cpu")
    _run(session_factory, job_id, "medseg@one", JobState.FAILED)
    _post(client, f"/jobs/{job_id}/retry")
    with session_factory() as session:
        study = session.get_one(Job, job_id).series.study_id
    page = client.get(f"/studies/{study}").text
    assert 'id="attempts-' in page and "boom on medseg@one" in page
    assert f'id="attempt-{job_id}-next"' in page, "queued again: the next attempt is announced"
    assert "(current)" not in page
    audit = page.split(f'id="audit-{job_id}"')[1].split("</table>")[0]
    assert 'class="actor">op<' in audit and ">retry<" in audit and "dashboard" in audit

    _run(session_factory, job_id, "medseg@two", JobState.RUNNING)
    page = client.get(f"/studies/{study}").text
    first = page.split(f'id="attempt-{job_id}-1"')[1].split("</tr>")[0]
    second = page.split(f'id="attempt-{job_id}-2"')[1].split("</tr>")[0]
    assert "boom on medseg@one" in first and "(current)" not in first
    assert "(current)" in second and "medseg@two" in second and "running" in second
    assert f'id="attempt-{job_id}-next"' not in page


def test_the_audit_page_filters_by_user_action_and_study(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Issue 32 item 10: the trail on the dashboard, not only `medseg audit`."""
    from db.models import Job, JobState
    from tests.support.dashboard_client import logged_in_client
    from tests.support.jobs import add_job
    from worker.ops.audit import Actor
    from worker.ops.operations import cancel, retry

    first = add_job(session_factory, "cpu", state=JobState.FAILED)
    second = add_job(session_factory, "cpu", state=JobState.FAILED)
    retry(session_factory, [first], actor=Actor("ann", "cli"))
    cancel(session_factory, second, actor=Actor("bob", "dashboard"))
    with session_factory() as session:
        study = session.get_one(Job, second).series.study_id
    client = logged_in_client(settings, session_factory)
    page = client.get("/audit").text
    assert page.count('id="audit-') >= 2 and "ann" in page and "bob" in page
    by_user = client.get("/audit?who=ann").text
    assert "failed -&gt; queued" in by_user and "cancelled" not in by_user
    by_action = client.get("/audit?action=cancel").text
    assert f'<a href="/jobs/{second}">{second}</a>' in by_action
    assert "<td>bob</td>" in by_action and "<td>ann</td>" not in by_action
    by_study = client.get(f"/audit?study={study}").text
    assert "<td>bob</td>" in by_study and "<td>ann</td>" not in by_study
    assert f'href="/audit?study={study}"' in client.get(f"/studies/{study}").text
    bad = client.get("/audit?study=abc")
    assert bad.status_code == 400 and "not a study number" in bad.text
    assert "no operator actions recorded matching" in client.get("/audit?who=nobody").text

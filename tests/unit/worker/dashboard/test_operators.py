"""The operators' actions on the dashboard over bare rows (no pipeline run): retry all,
failed deliveries."""

from __future__ import annotations

import re

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from tests.support.dashboard_client import csrf_token, logged_in_client
from tests.support.jobs import add_job
from worker.core.settings import Settings


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> TestClient:
    return logged_in_client(settings, session_factory)


def _state(session_factory: sessionmaker[Session], job_id: int) -> JobState:
    with session_factory() as session:
        return session.get_one(Job, job_id).state


def test_retry_all_leaves_cancelled_jobs_cancelled(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    failed = add_job(session_factory, "cpu", state=JobState.FAILED, error="boom")
    cancelled = add_job(session_factory, "cpu", state=JobState.CANCELLED, error="by an operator")
    token = csrf_token(client.get("/failures").text)
    response = client.post("/failures/retry-all", data={"csrf": token})
    assert response.status_code == 303
    assert "1 job(s) queued again" in client.get("/failures").text
    assert _state(session_factory, failed) is JobState.QUEUED
    assert _state(session_factory, cancelled) is JobState.CANCELLED


def test_a_failed_delivery_is_shown_everywhere_and_sent_again_from_the_dashboard(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """Issue 21 item 1: on the overview, the jobs filter, the study page and Failures, with
    a button that sends it again without running the model."""
    from db.models import Delivery, DeliveryState, Result

    job = add_job(session_factory, "cpu", state=JobState.SUCCEEDED, attempts=1)
    with session_factory.begin() as session:
        delivery = Delivery(
            destination="sender", state=DeliveryState.FAILED, attempts=5, error="PACS down"
        )
        result = Result(
            job_id=job,
            model_name="m",
            model_version="1",
            validation="validated-real",
            deliveries=[delivery],
        )
        session.add(result)
        session.flush()
        delivery_id = delivery.id
        study_id = session.get_one(Job, job).series.study_id
    overview = client.get("/").text
    assert re.search(r'id="deliveries-failed">.*<b>1</b>', overview)
    jobs = client.get("/jobs?state=delivery_failed")
    assert jobs.status_code == 200 and f'id="job-row-{job}"' in jobs.text
    assert "delivery failed" in jobs.text
    study = client.get(f"/studies/{study_id}").text
    assert 'id="study-delivery-failed"' in study and f'id="resend-{delivery_id}"' in study
    failures = client.get("/failures").text
    assert f'id="delivery-failure-{delivery_id}"' in failures and "PACS down" in failures
    token = csrf_token(failures)
    response = client.post(
        f"/deliveries/{delivery_id}/retry", data={"csrf": token, "back": f"/studies/{study_id}"}
    )
    assert response.headers["location"] == f"/studies/{study_id}"
    assert f"delivery {delivery_id} queued again" in client.get(f"/studies/{study_id}").text
    with session_factory() as session:
        assert session.get_one(Delivery, delivery_id).state is DeliveryState.PENDING
        assert session.get_one(Job, job).attempts == 1  # the model did not run again
    client.post(f"/deliveries/{delivery_id}/retry", data={"csrf": token})
    assert "not sent again" not in client.get("/failures").text  # pending: published again
    with session_factory.begin() as session:
        session.get_one(Delivery, delivery_id).state = DeliveryState.FAILED
    client.post("/failures/retry-deliveries", data={"csrf": token})
    assert "1 delivery(ies) queued again" in client.get("/failures").text
    assert client.post("/failures/retry-deliveries", data={"csrf": "forged"}).status_code == 403
    assert client.get("/jobs?state=delivery_failed").text.count('id="job-row-') == 0


def test_a_missing_study_or_job_is_a_page_not_json(client: TestClient) -> None:
    """Issue 21 item 10: errors are pages with one line, not FastAPI's {"detail": ...}."""
    for path, line in (
        ("/studies/424242", "no study 424242"),
        ("/jobs/424242", "no job 424242"),
        ("/studies/abc", "study_id: Input should be a valid integer"),
    ):
        response = client.get(path)
        assert response.status_code in (404, 422), path
        assert response.headers["content-type"].startswith("text/html"), path
        assert '"detail"' not in response.text and line in response.text, path
        assert 'href="/failures"' in response.text  # the way back


class _Celery:
    """A Celery app whose only worker consumes the cpu queue."""

    class control:  # noqa: N801 - Celery's attribute name
        @staticmethod
        def inspect(timeout: float) -> _Celery._Inspect:
            return _Celery._Inspect()

    class _Inspect:
        def active_queues(self) -> dict[str, list[dict[str, str]]]:
            return {"medseg@cpu1": [{"name": "cpu"}]}


class _Down:
    def ping(self) -> bool:
        raise ConnectionError("down")

    def llen(self, name: str) -> int:
        raise ConnectionError("down")


def _app_client(
    settings: Settings, factory: sessionmaker[Session], redis: object, celery: object
) -> TestClient:
    return logged_in_client(settings, factory, redis=redis, celery=celery)


def test_health_banner_and_readiness(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Issue 21 item 3: a banner when a queue with work has no consumer, the broker or the
    database is down; /healthz the process, /readyz the database and the broker."""
    from db.session import make_engine, make_session_factory

    redis = fakeredis.FakeRedis()
    redis.rpush(settings.broker_key_prefix + "gpu", b"m1", b"m2")
    client = _app_client(settings, session_factory, redis, _Celery())
    overview = client.get("/")
    assert "2 message(s) waiting in queue gpu and no worker consumes it" in overview.text
    assert "queue cpu and no worker" not in overview.text  # empty, and consumed
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "broker": "ok"}

    client = _app_client(settings, session_factory, _Down(), None)
    assert "broker unreachable" in client.get("/").text
    assert client.get("/readyz").json()["broker"] == "unreachable"

    engine = make_engine("postgresql+psycopg://medseg@127.0.0.1:1/medseg")
    try:
        broken = make_session_factory(engine)
        client = _app_client(settings, broken, redis, None)
        page = client.get("/")
        assert page.status_code == 200 and "database unreachable" in page.text
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["database"] == "unreachable"
        assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        engine.dispose()


def test_running_jobs_show_their_worker_and_time_and_a_dead_worker_is_flagged(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Issue 32 item 3: the jobs page and the study page say which worker runs a job and for
    how long, and flag a run whose worker no longer answers the broker."""
    from datetime import timedelta

    from db.models import utcnow

    started = utcnow() - timedelta(minutes=3, seconds=5)
    alive = add_job(
        session_factory, "cpu", state=JobState.RUNNING, worker="medseg@cpu1", started_at=started
    )
    dead = add_job(
        session_factory, "cpu", state=JobState.RUNNING, worker="medseg@gone", started_at=started
    )
    client = _app_client(settings, session_factory, fakeredis.FakeRedis(), _Celery())
    page = client.get("/jobs?state=running").text
    row = {j: page.split(f'id="job-row-{j}"')[1].split("</tr>")[0] for j in (alive, dead)}
    assert "medseg@cpu1, running for 3 min" in row[alive] and "worker gone" not in row[alive]
    assert "medseg@gone, running for 3 min" in row[dead] and "worker gone" in row[dead]
    with session_factory() as session:
        study_id = session.get_one(Job, dead).series.study_id
    study = client.get(f"/studies/{study_id}").text
    assert f'id="run-{dead}">medseg@gone, running for 3 min' in study and "worker gone" in study

    # Broker down: the workers cannot be asked, nothing is claimed either way.
    client = _app_client(settings, session_factory, _Down(), None)
    page = client.get("/jobs?state=running").text
    assert "medseg@gone, running for" in page and "worker gone" not in page

"""The operators' actions on the dashboard over bare rows (no pipeline run): retry all,
failed deliveries."""

from __future__ import annotations

import re

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from tests.support.jobs import add_job
from worker.core.settings import Settings
from worker.dashboard.app import create_app
from worker.dashboard.auth import hash_password

PASSWORD = "correct horse battery"


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> TestClient:
    configured = settings.model_copy(
        update={"dashboard_password_hash": hash_password(PASSWORD), "dashboard_user": "op"}
    )
    app = create_app(configured, session_factory, fakeredis.FakeRedis(), None)
    test_client = TestClient(app, follow_redirects=False)
    page = test_client.get("/login")
    data = {"username": "op", "password": PASSWORD, "csrf": _csrf(page.text)}
    assert test_client.post("/login", data=data).status_code == 303
    return test_client


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


def _state(session_factory: sessionmaker[Session], job_id: int) -> JobState:
    with session_factory() as session:
        return session.get_one(Job, job_id).state


def test_retry_all_leaves_cancelled_jobs_cancelled(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    failed = add_job(session_factory, "cpu", state=JobState.FAILED, error="boom")
    cancelled = add_job(session_factory, "cpu", state=JobState.CANCELLED, error="by an operator")
    token = _csrf(client.get("/failures").text)
    response = client.post("/failures/retry-all", data={"csrf": token})
    assert response.status_code == 303
    assert "1 job(s) queued again" in client.get("/failures").text
    assert _state(session_factory, failed) is JobState.QUEUED
    assert _state(session_factory, cancelled) is JobState.CANCELLED

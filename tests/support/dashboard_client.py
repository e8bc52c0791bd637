"""A dashboard TestClient logged in as an operator, and the CSRF token of a page's form."""

from __future__ import annotations

import re
from typing import Any

import fakeredis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from worker.core.settings import Settings
from worker.dashboard.app import create_app
from worker.dashboard.auth import hash_password

PASSWORD = "correct horse battery"


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token in the form"
    return match.group(1)


def logged_in_client(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    redis: object | None = None,
    celery: object | None = None,
    **update: Any,
) -> TestClient:
    """The dashboard on ``settings`` (with ``update``), logged in as "op"; ``redis`` is a
    fake Redis unless given."""
    login = {"dashboard_password_hash": hash_password(PASSWORD), "dashboard_user": "op"}
    configured = settings.model_copy(update={**login, **update})
    broker = redis if redis is not None else fakeredis.FakeRedis()
    client = TestClient(
        create_app(configured, session_factory, broker, celery), follow_redirects=False
    )
    data = {"username": "op", "password": PASSWORD, "csrf": csrf_token(client.get("/login").text)}
    assert client.post("/login", data=data).status_code == 303
    return client

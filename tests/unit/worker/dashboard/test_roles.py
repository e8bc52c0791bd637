"""Issue 30 item 7: named accounts, roles enforced on every dashboard action (403, recorded as
refused), the audit trail names the person, the bootstrap admin still logs in."""

from __future__ import annotations

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, DeliveryState, JobState
from tests.support.dashboard_client import PASSWORD, csrf_token, logged_in_client
from tests.support.history import with_result
from tests.support.jobs import add_job
from worker.core.settings import DicomDestination, Settings
from worker.dashboard.app import DashboardConfigError, create_app
from worker.ops import people

PACS = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)
PW = "a long enough password"


def _client(settings: Settings, factory: sessionmaker[Session], **update: object) -> TestClient:
    configured = settings.model_copy(update={"destinations": [PACS], **update})
    return TestClient(
        create_app(configured, factory, fakeredis.FakeRedis()), follow_redirects=False
    )


def _login(client: TestClient, name: str, password: str = PW) -> int:
    client.cookies.clear()  # a new login starts without a session
    data = {"username": name, "password": password, "csrf": csrf_token(client.get("/login").text)}
    return client.post("/login", data=data).status_code


def _post(client: TestClient, url: str, **data: str) -> int:
    token = csrf_token(client.get("/failures").text)
    return client.post(url, data={"csrf": token, **data}).status_code


def _trail(factory: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.actor, e.action, e.outcome) for e in rows]


@pytest.fixture
def accounts(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    for name, role in (("vera", "viewer"), ("otto", "operator"), ("rita", "reviewer")):
        people.add(session_factory, name, people.as_role(role), PW)
    people.add(session_factory, "adam", "admin", PW)
    return session_factory


def test_each_role_may_do_its_actions_only_and_refusals_are_recorded(
    settings: Settings, accounts: sessionmaker[Session]
) -> None:
    failed = add_job(accounts, "cpu", state=JobState.FAILED, error="boom")
    flagged, _ = with_result(accounts, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, review="x")
    _, delivery = with_result(accounts, JobState.SUCCEEDED, DeliveryState.FAILED)
    client = _client(settings, accounts, dashboard_password_hash="")
    actions = {
        "retry": (f"/jobs/{failed}/retry", {}),
        "retry_all": ("/failures/retry-all", {}),
        "redeliver": (f"/deliveries/{delivery}/retry", {}),
        "redeliver_all": ("/failures/retry-deliveries", {}),
        "cancel": (f"/jobs/{failed}/cancel", {}),
        "rerun": ("/rerun", {"model": "m"}),
        "accept": (f"/jobs/{flagged}/review", {"decision": "accepted"}),
        "echo": ("/destinations/pacs/echo", {}),
        "route": ("/series/424242/route", {"model": "lung-ct-threshold"}),
    }
    expected = {
        "vera": set(),
        "otto": {
            "retry",
            "retry_all",
            "redeliver",
            "redeliver_all",
            "cancel",
            "rerun",
            "echo",
            "route",
        },
        "rita": {"accept"},
    }
    for name, allowed in expected.items():
        assert _login(client, name) == 303
        assert client.get("/").status_code == 200 and f"{name} (" in client.get("/jobs").text
        for action, (url, data) in actions.items():
            status = _post(client, url, **data)
            assert (status != 403) == (action in allowed), (name, action, status)
            assert status in (200, 303, 403)  # 200: the rerun's confirmation page
    trail = _trail(accounts)
    refused = {(a, act) for a, act, outcome in trail if outcome == "refused"}
    assert ("vera", "retry") in refused and ("vera", "accept") in refused
    assert ("otto", "accept") in refused and ("rita", "cancel") in refused
    assert ("otto", "retry", "done") in trail and ("rita", "accept", "done") in trail
    assert {a for a, _, _ in trail} == {"vera", "otto", "rita"}  # every row names the person
    assert not any(a == "op" or a == "admin" for a, _, _ in trail)


def test_a_refusal_answers_403_with_a_reason(
    settings: Settings, accounts: sessionmaker[Session]
) -> None:
    failed = add_job(accounts, "cpu", state=JobState.FAILED, error="boom")
    client = _client(settings, accounts)
    assert _login(client, "vera") == 303
    token = csrf_token(client.get("/failures").text)
    response = client.post(f"/jobs/{failed}/retry", data={"csrf": token})
    assert response.status_code == 403
    assert "role viewer may not retry" in response.text
    with accounts() as session:
        event = session.scalars(select(AuditEvent)).one()
    assert (event.actor, event.action, event.job_id, event.outcome) == (
        "vera",
        "retry",
        failed,
        "refused",
    )
    assert event.detail == "role viewer may not retry"


def test_disabling_or_changing_a_role_applies_at_the_next_request(
    settings: Settings, accounts: sessionmaker[Session]
) -> None:
    client = _client(settings, accounts)
    assert _login(client, "otto") == 303
    failed = add_job(accounts, "cpu", state=JobState.FAILED, error="boom")
    people.set_role(accounts, "otto", "viewer")
    assert _post(client, f"/jobs/{failed}/retry") == 403
    people.disable(accounts, "otto")
    assert client.get("/jobs").headers["location"] == "/login"
    assert _login(client, "otto") == 401  # no new login either
    people.enable(accounts, "otto")
    assert _login(client, "otto") == 303
    assert _login(client, "otto", "wrong password") == 401


def test_the_bootstrap_admin_still_logs_in_as_admin(
    settings: Settings, accounts: sessionmaker[Session]
) -> None:
    client = logged_in_client(settings, accounts)  # MEDSEG_DASHBOARD_USER=op and its hash
    assert "op (admin)" in client.get("/jobs").text
    failed = add_job(accounts, "cpu", state=JobState.FAILED, error="boom")
    assert _post(client, f"/jobs/{failed}/retry") == 303
    assert _trail(accounts) == [("op", "retry", "done")]
    # An account of the bootstrap admin's name takes its place.
    people.add(accounts, "op", "viewer", PW)
    fresh = _client(
        settings, accounts, dashboard_user="op", dashboard_password_hash=logged_in_hash(client)
    )
    assert _login(fresh, "op", PASSWORD) == 401
    assert _login(fresh, "op", PW) == 303
    assert "op (viewer)" in fresh.get("/jobs").text


def logged_in_hash(client: TestClient) -> str:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return settings.dashboard_password_hash


def test_no_way_to_log_in_refuses_to_start(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with pytest.raises(DashboardConfigError, match="medseg users add"):
        _client(settings, session_factory)
    people.add(session_factory, "adam", "admin", PW)
    client = _client(settings, session_factory)  # an account is enough
    assert _login(client, "adam") == 303
    people.disable(session_factory, "adam")
    with pytest.raises(DashboardConfigError):
        _client(settings, session_factory)


def test_sso_claims_map_to_the_highest_role() -> None:
    from worker.dashboard.sso import role_for

    mapping = {"rad": "reviewer", "ops": "operator", "adm": "admin", "all": "viewer"}
    assert role_for({"groups": ["all", "ops", "rad"]}, "groups", mapping) == "reviewer"
    assert role_for({"groups": "adm"}, "groups", mapping) == "admin"
    assert role_for({"groups": ["other"]}, "groups", mapping) is None
    assert role_for({}, "groups", mapping) is None
    assert role_for({"groups": 3}, "groups", mapping) is None


def test_an_sso_name_cannot_take_over_a_local_account(
    accounts: sessionmaker[Session],
) -> None:
    with pytest.raises(people.AccountError, match="local account"):
        people.sso_login(accounts, "vera", "admin")
    assert people.sso_login(accounts, "sam", "operator") == people.Person("sam", "operator")
    assert people.sso_login(accounts, "sam", "viewer").role == "viewer"  # updated each time
    people.disable(accounts, "sam")
    with pytest.raises(people.AccountError, match="disabled"):
        people.sso_login(accounts, "sam", "viewer")

"""The dashboard through FastAPI's TestClient on a database the real pipeline filled."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import fakeredis
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Job, JobState
from db.session import make_engine, make_session_factory
from tests.support.dashboard_client import csrf_token
from tests.support.dashboard_data import Filled, fill
from worker.core.settings import Settings
from worker.dashboard.app import DashboardConfigError, create_app
from worker.dashboard.auth import PasswordHashError, check_hash_format, hash_password
from worker.dashboard.palette import STRUCTURES
from worker.dashboard.throttle import LoginThrottle

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)


@dataclass
class World:
    settings: Settings
    session_factory: sessionmaker[Session]
    filled: Filled
    redis: fakeredis.FakeRedis


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dash")
    settings = Settings(
        data_dir=root / "data",
        dashboard_password_hash=HASH,
        dashboard_user="operator",
        broker_key_prefix="t:",
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    filled = fill(factory, root / "incoming", settings.results_dir)
    redis = fakeredis.FakeRedis()
    redis.rpush("t:gpu", b"a", b"b", b"c")
    yield World(settings, factory, filled, redis)
    engine.dispose()


@pytest.fixture
def client(world: World) -> TestClient:
    app = create_app(world.settings, world.session_factory, world.redis, None)
    return TestClient(app, follow_redirects=False)


def _login(client: TestClient, password: str = PASSWORD, user: str = "operator") -> int:
    page = client.get("/login")
    response = client.post(
        "/login", data={"username": user, "password": password, "csrf": csrf_token(page.text)}
    )
    return response.status_code


def test_a_password_hash_is_required_and_checked(world: World) -> None:
    with pytest.raises(DashboardConfigError, match="MEDSEG_DASHBOARD_PASSWORD_HASH"):
        create_app(
            world.settings.model_copy(update={"dashboard_password_hash": ""}), world.session_factory
        )
    with pytest.raises(DashboardConfigError, match="hash-password"):
        create_app(
            world.settings.model_copy(update={"dashboard_password_hash": "plaintext"}),
            world.session_factory,
        )
    with pytest.raises(PasswordHashError):
        check_hash_format("scrypt$3$8$1$AAAA$AAAA")
    assert hash_password(PASSWORD) != HASH, "salted: two hashes of one password differ"


def test_pages_need_a_login(client: TestClient, world: World) -> None:
    for path in (
        "/",
        "/jobs",
        "/failures",
        "/review",
        "/audit",
        f"/jobs/{world.filled.ct_job}/overlay.png",
        "/studies/1",
    ):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/login", path
    assert (
        client.post(f"/jobs/{world.filled.failed_job}/retry", data={"csrf": "x"}).status_code == 303
    )
    assert client.get("/healthz").json() == {"status": "ok"}


def test_wrong_password_or_user_is_refused(client: TestClient) -> None:
    assert _login(client, password="wrong password") == 401
    assert _login(client, user="admin") == 401
    assert client.get("/").status_code == 303
    assert _login(client) == 303
    assert client.get("/").status_code == 200


def test_repeated_failed_logins_lock_the_address_out(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        assert _login(client, password="guess") == 401
    with caplog.at_level(logging.WARNING, logger="worker.dashboard.actions"):
        assert _login(client) == 429  # even the right password is not checked now
    assert "locked out" in caplog.text
    page = client.get("/login")
    response = client.post(
        "/login", data={"username": "operator", "password": PASSWORD, "csrf": csrf_token(page.text)}
    )
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
    assert "too many failed logins" in response.text


def test_the_lockout_ends_and_a_success_clears_the_count() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=120, clock=lambda: now[0])
    assert not throttle.failed("10.0.0.1") and not throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")  # the count starts again
    assert not throttle.failed("10.0.0.1") and not throttle.failed("10.0.0.1")
    assert throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 120 and throttle.retry_after("10.0.0.2") == 0
    now[0] = 121
    assert throttle.retry_after("10.0.0.1") == 0
    now[0] = 500  # failures older than the window do not count
    assert not throttle.failed("10.0.0.1")
    now[0] = 600
    assert not throttle.failed("10.0.0.1") and not throttle.failed("10.0.0.1")


def test_posts_without_the_session_csrf_token_are_refused(client: TestClient, world: World) -> None:
    page = client.get("/login")
    refused = client.post(
        "/login", data={"username": "operator", "password": PASSWORD, "csrf": "forged"}
    )
    assert refused.status_code == 403
    assert csrf_token(page.text)  # the right token works (next line) and is not the forged one
    assert _login(client) == 303
    job = world.filled.failed_job
    assert client.post(f"/jobs/{job}/retry", data={"csrf": "forged"}).status_code == 403
    assert client.post(f"/jobs/{job}/retry", data={}).status_code == 422
    with world.session_factory() as session:
        assert session.get_one(Job, job).state is JobState.FAILED


def test_overview_shows_queue_depth_and_jobs_by_state(client: TestClient) -> None:
    _login(client)
    html = client.get("/").text
    assert re.search(r'id="queue-gpu">queue gpu<b>3</b>', html)
    assert re.search(r'id="queue-cpu">queue cpu<b>0</b>', html)
    assert "33.3 %" in html  # one failed of three finished
    assert re.search(
        r'state-succeeded" href="/jobs\?state=succeeded">succeeded</a></td>\s*<td>2</td><td>2</td>',
        html,
    )


def test_jobs_table_filters_by_state_model_and_period(client: TestClient, world: World) -> None:
    _login(client)
    f = world.filled

    def ids(query: str) -> set[int]:
        response = client.get(f"/jobs{query}")
        assert response.status_code == 200, response.text
        return {int(v) for v in re.findall(r'id="job-row-(\d+)"', response.text)}

    assert ids("") == {f.ct_job, f.us_job, f.failed_job}
    assert ids("?state=failed") == {f.failed_job}
    with world.session_factory() as session:
        us_model = session.get_one(Job, f.us_job).model_name
        ct_model = session.get_one(Job, f.ct_job).model_name
    assert ids(f"?state=succeeded&model={us_model}") == {f.us_job}
    assert ids(f"?model={ct_model}") == {f.ct_job, f.failed_job}
    assert ids("?since=1h") == {f.ct_job, f.us_job, f.failed_job}
    assert ids("?state=running") == set()
    assert client.get("/jobs?since=1y").status_code == 400


def test_no_identifier_in_any_url_of_any_page(client: TestClient, world: World) -> None:
    _login(client)
    pages = ["/", "/jobs", "/failures"]
    seen: set[str] = set()
    shown = ""
    while pages:
        path = pages.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(path, follow_redirects=True)
        assert response.status_code == 200, path
        shown += response.text
        for url in re.findall(r'(?:href|src|action)="([^"]*)"', response.text):
            for identifier in world.filled.identifiers:
                assert identifier.lower() not in url.lower(), (path, url)
            if url.startswith("/studies/") or url.startswith("/jobs?"):
                pages.append(url.split("#")[0])
    assert any(p.startswith("/studies/") for p in seen)
    assert world.filled.identifiers[4] in shown, "the study UID is shown on the study page"


def _png(client: TestClient, job: int) -> np.ndarray:
    response = client.get(f"/jobs/{job}/overlay.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _colour_pixels(image: np.ndarray, bgr: tuple[int, int, int]) -> int:
    return int(np.all(np.abs(image.astype(int) - bgr) <= 40, axis=2).sum())


def _colour(name: str) -> tuple[int, int, int]:
    return next(s.bgr for s in STRUCTURES if s.name == name)


def test_ct_overlay_has_both_lung_contours_and_no_text_on_the_image(
    client: TestClient, world: World
) -> None:
    _login(client)
    image = _png(client, world.filled.ct_job)
    assert image.shape[1:] == (512, 3), "512 across (the status band under it)"
    assert _colour_pixels(image, _colour("Left lung")) > 300
    assert _colour_pixels(image, _colour("Right lung")) > 300
    white = np.all(image >= 250, axis=2)
    assert white[:80, :200].sum() < 20, "no legend nor measurement text over the image"


def test_us_cine_overlay_is_the_measured_frame(client: TestClient, world: World) -> None:
    _login(client)
    image = _png(client, world.filled.us_job)
    assert max(image.shape[:2]) == 512
    assert _colour_pixels(image, _colour("Fetal head")) > 300
    with world.session_factory() as session:
        job = session.get_one(Job, world.filled.us_job)
        frame = next(m.value for m in job.results[0].measurements if m.key == "measured_frame")
    from worker.dashboard.overlay_source import load_job, read_seg

    loaded = load_job(world.session_factory, world.filled.us_job)
    assert loaded is not None
    assert [key[1] for key in read_seg(loaded.seg_path).packed] == [int(frame)]
    assert client.get(f"/jobs/{world.filled.failed_job}/overlay.png").status_code == 404


def test_retry_and_cancel_buttons_change_the_job(client: TestClient, world: World) -> None:
    _login(client)
    page = client.get("/failures")
    job = world.filled.failed_job
    with world.session_factory() as session:
        reason = session.get_one(Job, job).error
    assert reason and f'id="retry-{job}"' in page.text and reason in page.text
    token = csrf_token(page.text)
    response = client.post(f"/jobs/{job}/retry", data={"csrf": token, "back": "//evil.example"})
    assert response.status_code == 303 and response.headers["location"] == "/failures"
    assert f"job {job} queued again" in client.get("/failures").text
    with world.session_factory() as session:
        assert session.get_one(Job, job).state is JobState.QUEUED
    response = client.post(f"/jobs/{job}/cancel", data={"csrf": token, "back": "/jobs"})
    assert response.headers["location"] == "/jobs"
    with world.session_factory() as session:
        assert session.get_one(Job, job).state is JobState.CANCELLED
    again = client.post(f"/jobs/{world.filled.ct_job}/retry", data={"csrf": token})
    assert again.status_code == 303
    assert "not retried" in client.get("/failures").text
    client.post(f"/jobs/{job}/retry", data={"csrf": token})  # back to queued for other tests


def test_logout_ends_the_session(client: TestClient) -> None:
    _login(client)
    saved = client.cookies.get("medseg_session")
    token = csrf_token(client.get("/").text)
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/").status_code == 303
    # Issue 18 item 9: the cookie saved before logout no longer opens a page.
    client.cookies.set("medseg_session", str(saved))
    assert client.get("/").status_code == 303
    assert client.get("/jobs").status_code == 303


def test_security_headers(client: TestClient) -> None:
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert "medseg_session" in response.headers.get("set-cookie", "")
    assert "samesite=strict" in response.headers["set-cookie"].lower()
    assert "httponly" in response.headers["set-cookie"].lower()


def test_overlay_size_and_escaped_error_text(client: TestClient, world: World) -> None:
    _login(client)
    response = client.get(f"/jobs/{world.filled.ct_job}/overlay.png?size=256")
    small = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[1] == 256 and 256 < small.shape[0] < 300  # the status band under it
    with world.session_factory.begin() as session:
        session.get_one(Job, world.filled.ct_job).error = "<script>alert(1)</script>"
    try:
        html = client.get("/jobs").text
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    finally:
        with world.session_factory.begin() as session:
            session.get_one(Job, world.filled.ct_job).error = None


def test_rerun_a_model_from_the_jobs_page(client: TestClient, world: World) -> None:
    """Last in this module: it adds jobs."""
    _login(client)
    with world.session_factory() as session:
        model = session.get_one(Job, world.filled.us_job).model_name
    jobs_page = client.get("/jobs").text
    assert 'value="" selected disabled>choose a model' in jobs_page  # no model by default
    token = csrf_token(jobs_page)
    # First a page that says what would be rerun, and nothing queued yet.
    asked = client.post("/rerun", data={"csrf": token, "model": model})
    assert asked.status_code == 200 and f"{model} ran on <strong>1</strong> series" in asked.text
    assert 'name="confirmed" value="true"' in asked.text
    with world.session_factory() as session:
        assert session.query(Job).filter(Job.model_name == model).count() == 1
    confirm = {"csrf": token, "model": model, "confirmed": "true"}
    response = client.post("/rerun", data=confirm)
    assert response.status_code == 303 and response.headers["location"] == f"/jobs?model={model}"
    assert f"{model}: 0 job(s) queued" in client.get("/jobs").text, "identical job succeeded"
    client.post("/rerun", data={**confirm, "force": "true", "since": "1h"})
    page = client.get(f"/jobs?model={model}&state=queued").text
    assert f"{model}: 1 job(s) queued" in page
    assert len(re.findall(r'id="job-row-(\d+)"', page)) == 1
    client.post("/rerun", data={**confirm, "model": "no-such-model"})
    assert "not rerun" in client.get("/jobs").text
    client.post("/rerun", data={"csrf": token, "model": ""})
    assert "not rerun: choose a model" in client.get("/jobs").text
    assert client.post("/rerun", data={**confirm, "csrf": "forged"}).status_code == 403


def test_validation_badges_and_a_review_form_on_the_study_page(
    client: TestClient, world: World
) -> None:
    """After the rerun test: it adds a flagged, phantom-only job of its own."""
    from db.models import Delivery, DeliveryState, Result, Series, Study

    _login(client)
    with world.session_factory.begin() as session:
        series = Series(study=Study(study_instance_uid="1.7.7"), series_instance_uid="1.7.7.1")
        job = Job(
            series=series,
            model_name="fetal-brain-unet",
            model_version="1.0.0",
            queue="gpu",
            state=JobState.NEEDS_REVIEW,
            attempts=1,
        )
        reason = "withheld: needs review (the destination has send_needs_review off)"
        job.results.append(
            Result(
                model_name="fetal-brain-unet",
                model_version="1.0.0",
                validation="phantom-only",
                review="brain implausible (12 mL)",
                deliveries=[
                    Delivery(destination="pacs", state=DeliveryState.WITHHELD, error=reason)
                ],
            )
        )
        session.add(job)
        session.flush()
        job_id, study_id = job.id, series.study.id
    page = client.get(f"/studies/{study_id}").text
    badge = (
        rf'id="validation-{job_id}">validation:\s*<span class="validation validation-phantom-only">'
    )
    assert re.search(badge, page)
    assert '<span class="nfcu">not for clinical use</span>' in page
    assert "withheld" in page and reason in page
    assert f'id="accept-{job_id}"' in page and f'id="reject-{job_id}"' in page
    # The CT result (lung-ct-unet or the threshold model) is reference-only: no red badge.
    ct_study = client.get(f"/jobs/{world.filled.ct_job}", follow_redirects=True).text
    assert "reference-only" in ct_study and "not for clinical use" not in ct_study
    assert "needs_review" in client.get("/jobs?state=needs_review").text

    token = csrf_token(page)
    forged = {"csrf": "forged", "decision": "accepted"}
    assert client.post(f"/jobs/{job_id}/review", data=forged).status_code == 403
    data = {"csrf": token, "decision": "accepted", "note": "looked fine"}
    response = client.post(f"/jobs/{job_id}/review", data=data)
    assert response.status_code == 303
    page = client.get(f"/studies/{study_id}").text
    assert f"job {job_id} accepted" in page
    assert re.search(rf'id="decision-{job_id}">accepted by operator', page)
    assert "looked fine" in page
    with world.session_factory() as session:
        result = session.get_one(Job, job_id).results[-1]
        assert (result.review_decision, result.reviewed_by) == ("accepted", "operator")
        assert result.deliveries[0].state is DeliveryState.WITHHELD  # phantom-only: still held
    client.post(f"/jobs/{job_id}/review", data={**data, "decision": "rejected"})
    assert "not reviewed: " in client.get(f"/studies/{study_id}").text
    assert client.post(f"/jobs/{job_id}/review", data={**data, "decision": "x"}).status_code == 400

"""The study browser and live pages through FastAPI's TestClient over bare rows."""

from __future__ import annotations

import base64
import logging
import re

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, SeriesStatus
from tests.support.studies import add_study
from worker.core.settings import Settings
from worker.dashboard.app import STATIC_DIR, create_app
from worker.dashboard.auth import hash_password

PASSWORD = "correct horse battery"
PATIENT, ACCESSION = "PID-4242-SECRET", "ACC4242"


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


def _search(client: TestClient, **fields: str) -> str:
    token = _csrf(client.get("/studies").text)
    response = client.post("/studies", data={"csrf": token, **fields})
    assert response.status_code == 303 and response.headers["location"] == "/studies"
    page = client.get("/studies")
    assert page.status_code == 200, page.text
    return page.text


def _rows(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'id="study-row-(\d+)"', html)]


@pytest.fixture
def studies(session_factory: sessionmaker[Session]) -> dict[str, int]:
    return {
        "ct": add_study(
            session_factory,
            "1.6.1",
            patient_id=PATIENT,
            accession=ACCESSION,
            study_date="20261101",
            series=[{"modality": "CT", "jobs": [("lung-ct", JobState.FAILED)]}],
        ),
        "mr": add_study(
            session_factory,
            "1.6.2",
            patient_id="OTHER",
            accession="ACC1",
            series=[
                {
                    "modality": "MR",
                    "body_part_examined": "KNEE",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                    "status": SeriesStatus.UNROUTED,
                }
            ],
        ),
    }


def test_search_by_patient_id_and_accession_keeps_them_out_of_urls(
    client: TestClient, studies: dict[str, int]
) -> None:
    assert _rows(client.get("/studies").text) == [studies["mr"], studies["ct"]]
    assert 'href="/studies"' in client.get("/").text, "linked from the nav"
    html = _search(client, patient_id=PATIENT)
    assert _rows(html) == [studies["ct"]]
    assert f'value="{PATIENT}"' in html, "the form shows the search"
    assert _rows(_search(client, accession=ACCESSION)) == [studies["ct"]]
    assert _rows(_search(client, accession="ACC1", patient_id=PATIENT)) == []
    assert "no study matches" in client.get("/studies").text
    for page in ("/studies", "/studies?sort=patient_id&order=asc", f"/studies/{studies['ct']}"):
        html = client.get(page).text
        for url in re.findall(r'(?:href|src|action)="([^"]*)"', html):
            assert PATIENT not in url and ACCESSION not in url and "1.6." not in url, url
    assert _rows(_search(client, clear="1", patient_id=PATIENT)) == [studies["mr"], studies["ct"]]


def test_unrouted_series_listed_with_their_reason(
    client: TestClient, studies: dict[str, int]
) -> None:
    html = _search(client, state="unrouted")
    assert _rows(html) == [studies["mr"]]
    assert "no model accepts modality MR, body part KNEE" in html
    link = re.search(r'href="(/studies/\d+#series-(\d+))"', html)
    assert link is not None
    study_page = client.get(link.group(1).split("#")[0]).text
    assert f'id="series-{link.group(2)}"' in study_page
    assert "not processed: no model accepts modality MR, body part KNEE" in study_page
    assert _rows(_search(client, state="failed", modality="ct")) == [studies["ct"]]


def test_a_fetal_mr_left_unprocessed_by_an_off_model_says_why(
    client: TestClient, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetal brain model is phantom-only, so off by default: the study page says so and
    how to turn it on, and does not offer it under "Send to model"."""
    from worker.core.settings import get_settings

    monkeypatch.delenv("MEDSEG_RESEARCH_MODELS", raising=False)  # the shipped default
    get_settings.cache_clear()
    try:
        study = add_study(
            session_factory,
            "1.6.3",
            series=[
                {
                    "modality": "MR",
                    "series_description": "Fetal brain HASTE COR",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                    "status": SeriesStatus.UNROUTED,
                }
            ],
        )
        page = client.get(f"/studies/{study}").text
    finally:
        get_settings.cache_clear()
    assert "not processed: fetal-brain-unet 1.0.0 is off" in page
    assert "MEDSEG_RESEARCH_MODELS" in page
    offered = re.findall(r'<option value="([a-z0-9-]+)">', page)
    assert "fetal-head-unet" in offered and "fetal-brain-unet" not in offered


def test_bad_searches_and_sorts_are_one_line_errors(
    client: TestClient, studies: dict[str, int]
) -> None:
    token = _csrf(client.get("/studies").text)
    assert client.post("/studies", data={"csrf": "wrong"}).status_code == 403
    client.post("/studies", data={"csrf": token, "since": "2026-11-02", "until": "2026-11-01"})
    response = client.get("/studies")
    assert response.status_code == 400 and "before it starts" in response.text
    client.post("/studies", data={"csrf": token, "since": "yesterday"})
    assert "not a date" in client.get("/studies").text
    client.post("/studies", data={"csrf": token, "clear": "1"})
    response = client.get("/studies?sort=name")
    assert response.status_code == 400 and "unknown sort" in response.text
    assert client.get("/studies?page=0").status_code == 200


def test_paging_links(
    client: TestClient, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.dashboard import browser

    monkeypatch.setattr(browser, "PER_PAGE", 2)
    made = [add_study(session_factory, f"1.7.{n}", series=[{"modality": "CR"}]) for n in range(5)]
    first = client.get("/studies").text
    assert _rows(first) == made[::-1][:2] and 'id="page-next"' in first
    assert 'id="page-prev"' not in first
    last = client.get("/studies?page=3").text
    assert _rows(last) == [made[0]] and 'id="page-prev"' in last
    assert _rows(client.get("/studies?order=asc").text) == made[:2]


def test_live_pages_have_regions_the_script_and_a_csp_that_allows_only_it(
    client: TestClient, studies: dict[str, int]
) -> None:
    for page, region in (
        ("/", "overview-live"),
        ("/jobs", "jobs-live"),
        ("/failures", "failures-live"),
        ("/studies", "studies-live"),
    ):
        html = client.get(page).text
        assert f'id="{region}" data-live' in html, page
        assert '<script src="/static/live.js" defer></script>' in html
        assert '<body data-live-period="5">' in html  # MEDSEG_DASHBOARD_LIVE_SECONDS
        assert "<script>" not in html, "no inline script"
    script = client.get("/static/live.js")
    assert script.status_code == 200
    assert script.text == (STATIC_DIR / "live.js").read_text()
    csp = script.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "http" not in script.text, "nothing from elsewhere"


def test_a_live_poll_leaves_the_flash_to_the_page(
    client: TestClient, session_factory: sessionmaker[Session], studies: dict[str, int]
) -> None:
    with session_factory() as session:
        job_id = session.scalars(select(Job.id).where(Job.state == JobState.FAILED)).one()
    token = _csrf(client.get("/failures").text)
    response = client.post(f"/jobs/{job_id}/retry", data={"csrf": token, "back": "/failures"})
    assert response.status_code == 303
    polled = client.get("/failures", headers={"X-Medseg-Live": "1"}).text
    assert 'id="flash"' not in polled
    assert f"job {job_id} queued again" in client.get("/failures").text


def test_a_huge_page_number_is_refused_and_the_search_stays_server_side(
    client: TestClient, studies: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 30 item 6: ``/studies?page=99999999999999999999`` after a saved search answered
    500 and logged the query's parameters, the patient ID among them; the saved search sat
    in the (signed, readable) session cookie."""
    _search(client, patient_id=PATIENT)
    with caplog.at_level(logging.DEBUG):
        assert client.get("/studies?page=-99999999999999999999").status_code == 200  # page 1
        for page in ("99999999999999999999", "100001"):
            response = client.get(f"/studies?page={page}")
            assert response.status_code == 400, page
            assert PATIENT not in response.text.replace(f'value="{PATIENT}"', "")
    assert PATIENT not in caplog.text
    cookie = client.cookies["medseg_session"]
    payload = base64.b64decode(cookie.split(".")[0] + "==")
    assert PATIENT.encode() not in payload, "the search is in the cookie"
    assert _rows(client.get("/studies").text) == [studies["ct"]]  # still the saved search

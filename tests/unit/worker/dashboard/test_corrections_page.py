"""Issue 34 on the dashboard: a reviewer corrects a fetal head result's ellipse on the study
page (prefilled with the model's ellipse, CSRF and role checked, recorded for the worker and
audited), a viewer cannot; corrections, unmatched ones with their reason, are listed on the
study page and on /corrections."""

from __future__ import annotations

import json
import re
from pathlib import Path

import fakeredis
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Correction, CorrectionState, Job, Result
from tests.support.dashboard_client import csrf_token
from tests.support.fetal_cases import fetal_head_result
from worker.core.settings import Settings
from worker.corrections.apply import execute_correction
from worker.dashboard.app import create_app
from worker.models.fetal_head.phantoms import FetalHeadTruth
from worker.ops import people

PW = "a long enough password"


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> TestClient:
    people.add(session_factory, "vera", "viewer", PW)
    people.add(session_factory, "rita", "reviewer", PW)
    people.add(session_factory, "otto", "operator", PW)
    configured = settings.model_copy(update={"dashboard_password_hash": ""})
    app = create_app(configured, session_factory, fakeredis.FakeRedis())
    return TestClient(app, follow_redirects=False)


def _login(client: TestClient, name: str) -> None:
    client.cookies.clear()
    data = {"username": name, "password": PW, "csrf": csrf_token(client.get("/login").text)}
    assert client.post("/login", data=data).status_code == 303


def _flagged_head(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> tuple[int, int, FetalHeadTruth]:
    """A flagged fetal head result (the model's SEG is the phantom's head): (study, job, truth)."""
    result_id, truth = fetal_head_result(
        session_factory, tmp_path, 41, decision=None, reviewer="rita"
    )
    with session_factory() as session:
        job = session.get_one(Result, result_id).job
        return job.series.study_id, job.id, truth


def _form(html: str, job_id: int) -> dict[str, float]:
    match = re.search(rf'<form[^>]*id="correct-{job_id}".*?</form>', html, re.S)
    assert match, "no correction form"
    fields = dict(re.findall(r'name="(cx|cy|a|b|angle)"[^>]*value="([^"]+)"', match.group(0)))
    return {k: float(v) for k, v in fields.items()}


def test_a_reviewer_corrects_the_prefilled_ellipse_on_the_study_page(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id, job_id, truth = _flagged_head(session_factory, tmp_path)
    _login(client, "rita")
    page = client.get(f"/studies/{study_id}").text
    prefilled = _form(page, job_id)
    mm = truth.pixel_mm
    # The model's ellipse, refitted to its SEG, in mm: the phantom's head within a pixel.
    assert prefilled["cx"] == pytest.approx(truth.cx * mm, abs=mm)
    assert prefilled["cy"] == pytest.approx(truth.cy * mm, abs=mm)
    assert prefilled["a"] == pytest.approx(truth.a * mm, abs=mm)
    assert prefilled["b"] == pytest.approx(truth.b * mm, abs=mm)

    moved = prefilled | {"a": round(prefilled["a"] * 1.1, 2)}
    data = {k: str(v) for k, v in moved.items()}
    response = client.post(
        f"/jobs/{job_id}/correct", data={"csrf": csrf_token(page), "note": "skull edge", **data}
    )

    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{job_id}"
    with session_factory() as session:
        row = session.scalars(select(Correction)).one()
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "correct")).one()
    assert (row.kind, row.by, row.source, row.job_id, row.note) == (
        "ellipse",
        "rita",
        "dashboard",
        job_id,
        "skull edge",
    )
    assert json.loads(row.ellipse or "{}")["a"] == pytest.approx(moved["a"])
    assert (event.actor, event.outcome) == ("rita", "done")
    assert "recorded" in client.get(f"/studies/{study_id}").text  # the flash

    # Applied by the worker: the study page lists it with what changed, and prefills the
    # reviewer's ellipse from now on.
    assert execute_correction(session_factory, row.id, tmp_path / "r") is CorrectionState.APPLIED
    page = client.get(f"/studies/{study_id}").text
    assert 'id="study-corrections"' in page and "head_circumference_mm" in page
    assert _form(page, job_id)["a"] == pytest.approx(moved["a"], abs=0.01)


def test_a_viewer_or_an_operator_cannot_correct_and_bad_values_are_refused(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id, job_id, _ = _flagged_head(session_factory, tmp_path)
    values = {"cx": "60", "cy": "45", "a": "40", "b": "30", "angle": "0"}
    for name in ("vera", "otto"):
        _login(client, name)
        token = csrf_token(client.get(f"/studies/{study_id}").text)
        response = client.post(f"/jobs/{job_id}/correct", data={"csrf": token, **values})
        assert response.status_code == 403 and "may not correct" in response.text
    _login(client, "rita")
    token = csrf_token(client.get(f"/studies/{study_id}").text)
    assert client.post(f"/jobs/{job_id}/correct", data=values).status_code in (403, 422)
    bad = client.post(f"/jobs/{job_id}/correct", data={"csrf": "x", **values})
    assert bad.status_code == 403  # a wrong CSRF token
    nan = client.post(f"/jobs/{job_id}/correct", data={"csrf": token, **values, "b": "-1"})
    assert nan.status_code == 303
    assert "not corrected: the semi-axes a and b must be positive" in client.get("/review").text
    with session_factory() as session:
        assert session.scalars(select(Correction)).all() == []
        refused = session.scalars(
            select(AuditEvent.actor).where(AuditEvent.outcome == "refused")
        ).all()
    assert set(refused) == {"vera", "otto"}


def test_corrections_page_lists_an_unmatched_seg_with_its_reason(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory.begin() as session:
        session.add(
            Correction(
                kind="seg",
                by="OHIF",
                source="dicom",
                state=CorrectionState.UNMATCHED,
                reason="no series received here is the SEG's source: 1.2.3",
            )
        )
    _login(client, "vera")  # reading is for every role
    overview = client.get("/").text
    assert 'href="/corrections"' in overview
    page = client.get("/corrections").text
    assert "unmatched" in page and "OHIF (dicom)" in page
    assert "no series received here is the SEG&#39;s source" in page
    assert "0 correction(s)" in client.get("/corrections?state=applied").text
    assert client.get("/corrections?state=nonsense").status_code == 400


def test_no_correction_form_for_a_result_that_is_not_a_fetal_head(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    study_id, job_id, _ = _flagged_head(session_factory, tmp_path)
    with session_factory.begin() as session:
        result = session.get_one(Job, job_id).results[-1]
        for m in result.measurements:
            m.key = "lung_area_cm2"
    _login(client, "rita")
    assert f'id="correct-{job_id}"' not in client.get(f"/studies/{study_id}").text

"""Issue 31 item 3: the study page's GA by dates form (CSRF, roles, audit), the source shown,
and the growth standing and chart recomputed at the entered GA; ``medseg study-ga``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Measurement, Result, Study
from tests.support.jobs import add_job
from tests.unit.worker.dashboard.test_roles import PW, _client, _login, accounts
from worker.core.settings import Settings
from worker.dashboard.growth_chart import job_point
from worker.models.fetal_head.growth import standing

__all__ = ["accounts"]


def _hc_study(factory: sessionmaker[Session]) -> tuple[int, int]:
    """A fetal head result (HC 250 mm) whose DICOM had an LMP (28w0d stored); (study, job)."""
    job_id = add_job(factory, "gpu", state=JobState.SUCCEEDED, attempts=1)
    with factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.series.study.study_date = "20260611"
        result = Result(job_id=job_id, model_name="fetal-head-unet", model_version="1")
        result.measurements = [
            Measurement(key="head_circumference_mm", label="HC", value=250.0, unit="mm"),
            Measurement(
                key="gestational_age_by_dates_days", label="GA (LMP)", value=196.0, unit="d"
            ),
            Measurement(key="head_circumference_z", label="stored z", value=-0.5, unit="{z-score}"),
        ]
        session.add(result)
        return job.series.study_id, job_id


def test_a_reviewer_enters_the_ga_and_the_page_recomputes_the_standing(
    settings: Settings, accounts: sessionmaker[Session]
) -> None:
    study_id, job_id = _hc_study(accounts)
    client = _client(settings, accounts)
    assert _login(client, "rita", PW) == 303
    page = client.get(f"/studies/{study_id}").text
    assert 'id="study-ga-form"' in page and "GA by dates: from the DICOM LMP" in page
    assert job_point(accounts, job_id) is not None
    token = page.split('name="csrf" value="')[1].split('"')[0]
    assert (
        client.post(
            f"/studies/{study_id}/ga", data={"csrf": "forged", "kind": "ga", "value": "24w3d"}
        ).status_code
        == 403
    )
    done = client.post(
        f"/studies/{study_id}/ga", data={"csrf": token, "kind": "ga", "value": "30w0d"}
    )
    assert done.status_code == 303
    page = client.get(f"/studies/{study_id}").text
    assert "30w0d" in page and "entered by rita" in page
    assert "stored z" not in page, "the worker's z at the DICOM LMP is stale"
    expected = standing("hc", 250.0, 30.0)
    assert expected is not None
    assert f'id="standing-{job_id}"' in page and f"{expected.z:+.2f}"[:4] in page
    point = job_point(accounts, job_id)
    assert point is not None and point.ga_days == 210.0 and "entered by rita" in point.source
    assert client.get(f"/jobs/{job_id}/growth.png").status_code == 200
    bad = client.post(f"/studies/{study_id}/ga", data={"csrf": token, "kind": "lmp", "value": "x"})
    assert bad.status_code == 303 and "not saved" in client.get(f"/studies/{study_id}").text
    with accounts() as session:
        assert session.get_one(Study, study_id).ga_days == 210


@pytest.mark.parametrize("name", ["vera", "otto"])
def test_viewers_and_operators_may_not_enter_a_ga(
    settings: Settings, accounts: sessionmaker[Session], name: str
) -> None:
    study_id, _ = _hc_study(accounts)
    client = _client(settings, accounts)
    assert _login(client, name, PW) == 303
    page = client.get(f"/studies/{study_id}").text
    assert 'id="study-ga-form"' not in page
    token = page.split('name="csrf" value="')[1].split('"')[0]
    refused = client.post(
        f"/studies/{study_id}/ga", data={"csrf": token, "kind": "ga", "value": "24w"}
    )
    assert refused.status_code == 403
    with accounts() as session:
        assert session.get_one(Study, study_id).ga_days is None


def test_the_cli_enters_and_clears_a_ga(
    settings: Settings, accounts: sessionmaker[Session]
) -> None:
    study_id, _ = _hc_study(accounts)
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "study-ga", str(study_id), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = run("--lmp", "2025-11-27", "--user", "rita")
    assert done.returncode == 0, done.stderr
    assert "28w0d" in done.stdout and "entered by rita" in done.stdout
    assert run("--ga", "24w8d", "--user", "rita").returncode == 1
    assert run("--ga", "24w3d", "--user", "otto").returncode == 3, "an operator may not"
    cleared = run("--clear", "--user", "rita")
    assert cleared.returncode == 0 and "cleared" in cleared.stdout
    with accounts() as session:
        assert session.get_one(Study, study_id).ga_lmp is None

"""Issue 31 items 4 and 6: the fetal brain volume against its published reference, a
patient's lung volumes over all their studies (table and chart, PNG and PDF), and the
operator pages' badges and live clock."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from db.models import Job, JobState, Measurement, Result, Series, Study
from tests.unit.worker.dashboard.test_app import World, _login, client, world
from worker.dashboard.brain_chart import BrainPoint, brain_chart
from worker.dashboard.lung_trend import LungRow, lung_chart
from worker.models.fetal_brain.growth import ICV_ML, standing

__all__ = ["client", "world"]  # the fixtures, shared with test_app

#: Intracranial cavity volume (mL), mean and SD per completed week, from Table 1 of Ren et al.,
#: Front Neurosci 2022;16:886083, as transcribed in github.com/ajoshiusc/fetal-brain-growth
#: (references/ren2022_weekly_mean_sd.csv, commit ee8e040).
PUBLISHED_ICV = {
    19: (69.55, 3.05),
    22: (109.30, 11.90),
    27: (215.50, 21.33),
    30: (302.50, 15.51),
    34: (386.60, 12.09),
    37: (491.80, 11.47),
}


def _image(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_the_brain_reference_is_the_published_table() -> None:
    assert sorted(ICV_ML) == list(range(19, 38)), "every completed week 19-37"
    for week, row in PUBLISHED_ICV.items():
        assert ICV_ML[week] == row
    means = [ICV_ML[w][0] for w in sorted(ICV_ML)]
    assert means == sorted(means), "the intracranial volume grows every week"


def test_a_volume_stands_in_its_completed_week() -> None:
    mean = standing(302.5, 30 * 7 + 6)  # 30w6d: still week 30's row
    assert mean is not None and mean.week == 30 and mean.z == pytest.approx(0.0)
    low = standing(302.5 - 2 * 15.51, 30 * 7)
    assert low is not None and low.z == pytest.approx(-2.0) and low.within_2sd
    high = standing(400.0, 30 * 7)
    assert high is not None and not high.within_2sd
    assert standing(60.0, 18 * 7 + 6) is None and standing(500.0, 38 * 7) is None


def test_the_brain_chart_draws_the_point(tmp_path: Path) -> None:
    png = brain_chart(BrainPoint(volume_ml=246.8, ga_days=28 * 7 + 3, flagged=False))
    image = _image(png)
    assert image.shape == (480, 640, 3)
    red = (image[..., 2] > 180) & (image[..., 1] < 60) & (image[..., 0] < 60)
    assert red.sum() > 30, "the measured point"
    (tmp_path / "brain.png").write_bytes(png)
    assert brain_chart(BrainPoint(246.8, 199.0, flagged=True), "pdf").startswith(b"%PDF")


def test_the_brain_measurements_need_the_dates_and_an_unflagged_volume() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from pydicom import Dataset

    from worker.models.fetal_brain.serve import _growth
    from worker.ops.dating import Dating

    ds = Dataset()
    ds.StudyDate = "20260611"
    series = cast(Any, SimpleNamespace(datasets=[ds], entered_ga=None))
    assert _growth(series, 246.8, flagged=False) == [], "no LMP, no GA by dates"
    ds.LastMenstrualDate = "20251127"  # 28w0d on the study date
    found = {m.key: m for m in _growth(series, 246.8, flagged=False)}
    assert found["gestational_age_by_dates_days"].value == 196.0
    assert found["brain_volume_z"].value == pytest.approx(0.0)
    z = found["brain_volume_z"]  # in the SR as the volume's statistic (test_sr_growth.py)
    assert z.statistic_of == "brain_volume_ml" and z.concept is not None
    assert found["gestational_age_by_dates_days"].concept is not None
    flagged = {m.key for m in _growth(series, 246.8, flagged=True)}
    assert flagged == {"gestational_age_by_dates_days"}, "no z-score on a flagged volume"
    series.entered_ga = Dating(210.0, "entered", "rita")  # 30w0d: wins over the DICOM LMP
    entered = {m.key: m for m in _growth(series, 246.8, flagged=False)}
    assert entered["gestational_age_by_dates_days"].value == 210.0
    assert entered["gestational_age_by_dates_days"].label == "Gestational age by dates (entered)"
    assert "week 30" in entered["brain_volume_z"].label


def test_the_lung_chart_has_a_point_per_study() -> None:
    rows = [
        LungRow(1, "20260101", 1, "lung-ct-unet 1.0.0", 2100.0, 1900.0, 4000.0, False),
        LungRow(2, "20260301", 2, "lung-ct-unet 1.0.0", 2000.0, 1800.0, 3800.0, True),
    ]
    assert _image(lung_chart(rows)).shape[:2] == (400, 640)
    assert lung_chart(rows, "pdf").startswith(b"%PDF")
    assert rows[0].date_text == "2026-01-01"


@pytest.fixture
def later_ct(world: World) -> Iterator[tuple[int, int]]:
    """A second CT study of the same patient, dated later, with lung volumes; (study, job)."""
    with world.session_factory.begin() as session:
        first = session.get_one(Job, world.filled.ct_job).series.study
        study = Study(
            study_instance_uid="1.2.826.0.1.3680043.8.498.31031",
            study_date="20270315",
            patient_id=first.patient_id,
        )
        series = Series(study=study, series_instance_uid="1.2.826.0.1.3680043.8.498.31032")
        job = Job(
            series=series,
            model_name="lung-ct-unet",
            model_version="1.0.0",
            queue="gpu",
            state=JobState.NEEDS_REVIEW,
        )
        result = Result(job=job, model_name="lung-ct-unet", model_version="1.0.0", review="x")
        result.measurements = [
            Measurement(key=k, label=k, value=v, unit="mL")
            for k, v in (
                ("right_lung_volume_ml", 2222.0),
                ("left_lung_volume_ml", 1111.0),
                ("lung_volume_ml", 3333.0),
            )
        ]
        session.add(study)
        session.flush()
        ids = (study.id, job.id)
    yield ids
    with world.session_factory.begin() as session:
        session.delete(session.get_one(Result, session.get_one(Job, ids[1]).results[0].id))
        session.flush()
        session.delete(session.get_one(Job, ids[1]))
        session.flush()
        study = session.get_one(Study, ids[0])
        for s in list(study.series):
            session.delete(s)
        session.flush()
        session.delete(study)


def test_the_study_page_shows_the_patients_lung_volumes(
    client: TestClient, world: World, later_ct: tuple[int, int]
) -> None:
    _login(client)
    later_study, later_job = later_ct
    with world.session_factory() as session:
        first_study = session.get_one(Job, world.filled.ct_job).series.study_id
    page = client.get(f"/studies/{first_study}").text
    table = page[page.index('id="lung-volumes"') : page.index('id="lung-chart"')]
    rows = re.findall(r'id="lung-row-(\d+)"', table)
    assert rows == [str(world.filled.ct_job), str(later_job)], "oldest study first"
    assert "2027-03-15" in table and "3333.0 mL" in table and "needs review" in table
    assert f'href="/studies/{later_study}"' in table and "this study" in table
    chart = client.get(f"/studies/{first_study}/lung-volumes.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    pdf = client.get(f"/studies/{later_study}/lung-volumes.pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    assert client.get(f"/studies/{first_study}/lung-volumes.svg").status_code == 404
    # The same patient's page from the later study shows the same two rows.
    assert 'id="lung-trend"' in client.get(f"/studies/{later_study}").text


def test_the_study_page_shows_the_brain_chart_when_the_dates_are_known(
    client: TestClient, world: World
) -> None:
    _login(client)
    job = world.filled.us_job  # any job: the chart needs only the two measurements
    with world.session_factory() as session:
        study_id = session.get_one(Job, job).series.study_id
    assert client.get(f"/jobs/{job}/brain-growth.png").status_code == 404
    added = [
        ("brain_volume_ml", "Brain volume (intracranial)", 246.8, "mL"),
        ("gestational_age_by_dates_days", "Gestational age by dates (LMP)", 199.0, "d"),
    ]
    with world.session_factory.begin() as session:
        result = session.get_one(Job, job).results[-1]
        result.measurements.extend(
            Measurement(key=k, label=lb, value=v, unit=u) for k, lb, v, u in added
        )
    try:
        png = client.get(f"/jobs/{job}/brain-growth.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        pdf = client.get(f"/jobs/{job}/brain-growth.pdf")
        assert pdf.headers["content-type"] == "application/pdf"
        page = client.get(f"/studies/{study_id}").text
        assert f'id="brain-growth-{job}"' in page and "Ren et al. 2022" in page
    finally:
        with world.session_factory.begin() as session:
            result = session.get_one(Job, job).results[-1]
            for m in list(result.measurements):
                if m.key in {k for k, *_ in added}:
                    session.delete(m)


def test_badges_sit_in_their_cell_and_the_clock_is_utc(client: TestClient, world: World) -> None:
    _login(client)
    jobs = client.get("/jobs").text
    assert not re.search(r'<td class="state', jobs), "a state is a badge, not a cell colour"
    assert re.search(r'<td><span class="state state-\w+">', jobs)
    script = client.get("/static/live.js").text
    assert "toLocaleTimeString" not in script and '" UTC"' in script
    css = client.get("/jobs").text
    assert ".delivery-failed-badge { display: inline-block; color: #fff; background: #b3261e" in css

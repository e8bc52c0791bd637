"""Issue 31: a job run after a reviewer entered the study's GA by dates (worker.ops.dating)
stores the growth standing at that GA, in the DB, report.json (its source named) and the SR
(LN 11885-1 and the HC's z-score and centile as its statistical properties), with no DICOM
Last Menstrual Date; the study page then has nothing to recompute."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from tests.support.jobs import queue_test_job, set_job
from tests.support.sr import sr_numbers
from tests.support.tools import dciodvfy_errors
from worker.dashboard.growth_standing import recomputed
from worker.models.fetal_head.growth import standing
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.ops.audit import Actor
from worker.ops.dating import set_dating
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job

ENTERED = 24 * 7 + 3  # 24w3d on the study date


def test_a_job_uses_the_entered_ga_by_dates(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = write_us_phantom(tmp_path / "in" / "us.dcm", 200032).path
    ds = pydicom.dcmread(path)
    ds.StudyDate = "20260611"
    assert "LastMenstrualDate" not in ds
    ds.save_as(path, enforce_file_format=True)
    job_id = queue_test_job(session_factory, [path])
    set_job(session_factory, job_id, model_name="fetal-head-unet")
    with session_factory.begin() as session:
        study = session.get_one(Job, job_id).series.study
        study.study_date = "20260611"
        study_id = study.id
    set_dating(session_factory, study_id, ga_days=ENTERED, actor=Actor("rita", "cli"))

    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "results", job_id)
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        (result,) = job.results
        stored = {m.key: m.value for m in result.measurements}
        labels = {m.key: m.label for m in result.measurements}
        outputs = {o.kind: Path(o.path) for o in result.outputs}
        assert recomputed(job.series.study, result) is None, "stored with the entered GA"
    hc = stored["head_circumference_mm"]
    expected = standing("hc", hc, ENTERED / 7.0)
    assert expected is not None
    assert stored["gestational_age_by_dates_days"] == ENTERED
    assert labels["gestational_age_by_dates_days"] == "Gestational age by dates (entered)"
    assert stored["head_circumference_z"] == pytest.approx(expected.z)
    assert stored["head_circumference_centile"] == pytest.approx(expected.centile)

    report = json.loads(outputs["json"].read_text())
    assert report["measurements"]["gestational_age_by_dates_days"] == ENTERED
    assert report["measurements"]["head_circumference_z"] == pytest.approx(expected.z)
    dating = report["gestational_age_by_dates"]
    assert dating["days"] == ENTERED and dating["source"] == "entered"
    assert dating["described"].startswith("entered by rita at ")
    assert dating["described"].endswith("(GA on the study date)")

    assert dciodvfy_errors(outputs["sr"]) == []
    in_sr = sr_numbers(pydicom.dcmread(outputs["sr"]))
    assert in_sr["11885-1"] == ENTERED  # LN Gestational Age by LMP: the GA by dates
    assert in_sr["121416"] == pytest.approx(expected.z, abs=1e-6)  # Z-Score of measurement
    assert in_sr["121415"] == pytest.approx(expected.centile, abs=1e-6)  # Percentile Ranking

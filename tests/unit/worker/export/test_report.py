from __future__ import annotations

import io

from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Measurement, Result, Series, Study
from worker.export.report import print_study


def test_show_lists_jobs_measurements_and_a_brain_volume_summary(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as session:
        study = Study(study_instance_uid="1.2.3")
        for i, volume in enumerate((100.0, 104.0), start=1):
            series = Series(study=study, series_instance_uid=f"1.2.3.{i}", modality="MR")
            job = Job(
                series=series,
                model_name="fetal-brain-unet",
                model_version="1.0.0",
                queue="gpu",
                state=JobState.SUCCEEDED,
                attempts=1,
            )
            job.results.append(
                Result(
                    model_name="fetal-brain-unet",
                    model_version="1.0.0",
                    validation="phantom-only",
                    measurements=[
                        Measurement(
                            key="brain_volume_ml", label="Brain volume", value=volume, unit="mL"
                        )
                    ],
                )
            )
            session.add(job)
    out = io.StringIO()
    assert print_study(session_factory, "1.2.3", out)
    text = out.getvalue()
    assert text.count("fetal-brain-unet 1.0.0  succeeded") == 2
    assert text.count("validation: phantom-only (NOT FOR CLINICAL USE)") == 2
    assert "fetal brain volume 102.0 mL over 2 stack(s) (range 4.0 mL)" in text
    assert not print_study(session_factory, "9.9.9", io.StringIO())

from __future__ import annotations

import io

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Measurement, Result, Series, SeriesStatus, Study
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


def test_show_and_the_results_table_write_measurements_as_clinicians_read_them(
    session_factory: sessionmaker[Session],
) -> None:
    from worker.export.report import print_results

    with session_factory.begin() as session:
        series = Series(
            study=Study(study_instance_uid="7.7.7"), series_instance_uid="7.7.7.1", modality="US"
        )
        job = Job(
            series=series,
            model_name="fetal-head-unet",
            model_version="2.0.0",
            queue="gpu",
            state=JobState.SUCCEEDED,
            attempts=1,
        )
        values = (
            ("head_circumference_mm", "Head circumference", 330.04, "mm"),
            ("gestational_age_days", "Gestational age (Hadlock 1984 HC)", 264.29, "d"),
            ("measured_frame", "Measured frame number", 3.0, "{frame}"),
            ("cephalic_index", "Cephalic index (BPD/OFD x 100; normal 74-83)", 78.34, "{index}"),
            ("max_slice_area_mm2", "Largest brain slice area", 1234.0, "mm2"),
        )
        job.results.append(
            Result(
                model_name="fetal-head-unet",
                model_version="2.0.0",
                measurements=[
                    Measurement(key=k, label=label, value=v, unit=u) for k, label, v, u in values
                ],
            )
        )
        session.add(job)
    out = io.StringIO()
    assert print_study(session_factory, "7.7.7", out)
    text = out.getvalue()
    words = " ".join(text.split())
    assert "Gestational age (Hadlock 1984 HC) 37w5d" in words
    assert "Head circumference 330.0 mm" in words
    assert "Cephalic index (BPD/OFD x 100; normal 74-83) 78.3" in words
    assert "Measured frame number 3" in words and "Largest brain slice area 12.3 cm²" in words
    assert "{frame}" not in text and " d\n" not in text and "mm2" not in text
    table = io.StringIO()
    print_results(session_factory, table)
    assert "gestational_age=37w5d" in table.getvalue()  # no "_days" beside weeks and days
    assert "max_slice_area=12.3 cm²" in table.getvalue() and "_mm2" not in table.getvalue()
    assert "measured_frame=3," in table.getvalue() and "{frame}" not in table.getvalue()
    assert "cephalic_index=78.3," in table.getvalue() and "{index}" not in table.getvalue()


def test_the_results_table_says_why_a_series_was_not_processed(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's table: a fetal MR left unrouted because its model is off says so."""
    from worker.core.settings import get_settings
    from worker.export.report import print_results

    with session_factory.begin() as session:
        session.add(
            Series(
                study=Study(study_instance_uid="7.7.8"),
                series_instance_uid="7.7.8.1",
                modality="MR",
                series_description="Fetal brain HASTE SAG",
                status=SeriesStatus.UNROUTED,
            )
        )
    monkeypatch.delenv("MEDSEG_RESEARCH_MODELS", raising=False)  # the shipped default
    get_settings.cache_clear()
    table = io.StringIO()
    try:
        print_results(session_factory, table)
    finally:
        get_settings.cache_clear()
    row = table.getvalue().splitlines()[-1]
    assert "unrouted" in row and "not processed: fetal-brain-unet 1.0.0 is off" in row

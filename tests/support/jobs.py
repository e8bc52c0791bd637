"""Job rows for tests: a queued job over real DICOM files, a bare job, field updates."""

from __future__ import annotations

from pathlib import Path

import pydicom
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, Series, Study


def queue_test_job(
    session_factory: sessionmaker[Session], paths: list[Path], max_attempts: int = 3
) -> int:
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    with session_factory.begin() as session:
        study = Study(study_instance_uid=str(header.StudyInstanceUID))
        series = Series(
            study=study, series_instance_uid=str(header.SeriesInstanceUID), modality="CT"
        )
        session.add_all([study, series])
        for path in paths:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            session.add(
                Instance(
                    series=series,
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    path=str(path),
                    size_bytes=path.stat().st_size,
                )
            )
        job = Job(
            series=series,
            model_name="lung-ct-threshold",
            model_version="1.0.0",
            queue="cpu",
            max_attempts=max_attempts,
        )
        session.add(job)
        session.flush()
        return job.id


def add_job(session_factory: sessionmaker[Session], queue: str, **fields: object) -> int:
    with session_factory.begin() as session:
        uid = f"1.2.3.{session.query(Series).count() + 1}"
        series = Series(study=Study(study_instance_uid=uid), series_instance_uid=uid)
        job = Job(series=series, model_name="m", model_version="1", queue=queue, **fields)
        session.add(job)
        session.flush()
        return job.id


def set_job(session_factory: sessionmaker[Session], job_id: int, **fields: object) -> None:
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        for key, value in fields.items():
            setattr(job, key, value)

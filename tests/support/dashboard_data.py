"""A database filled by the real pipeline on phantoms, for the dashboard tests: a chest CT that
succeeds, an obstetric US cine that succeeds (measured frame) and a CT without lungs that fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow
from dicom_gateway.completion import complete_quiet_series
from dicom_gateway.records import instance_info, record_instance
from tests.support.factories import chest_series
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PID-777-SECRET"
ACCESSION = "ACC9911"


@dataclass
class Filled:
    ct_job: int
    us_job: int
    failed_job: int
    identifiers: list[str]  # UIDs, names, IDs that must never appear in a URL


def identify(paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, ACCESSION
        ds.save_as(path)


def unusable(paths: list[Path]) -> None:
    """Soft tissue everywhere and no slice positions: whichever lung model the CT routes to
    (threshold or U-Net), it finds no lungs or no geometry and fails the job for good."""
    for path in paths:
        ds = pydicom.dcmread(path)
        body = np.full((int(ds.Rows), int(ds.Columns)), 1064, dtype=np.uint16)  # 40 HU
        ds.PixelData = body.tobytes()
        del ds.ImagePositionPatient
        ds.save_as(path)


def _record(session_factory: sessionmaker[Session], paths: list[Path]) -> None:
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        record_instance(
            session_factory,
            instance_info(
                ds,
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                calling_ae="MODALITY",
                path=str(path),
                size_bytes=path.stat().st_size,
            ),
        )


def fill(session_factory: sessionmaker[Session], incoming: Path, results: Path) -> Filled:
    from worker.models.fetal_head.us_dicom import write_us_phantom

    ct = chest_series(incoming / "ct", 0, slices=8)
    bad = chest_series(incoming / "bad", 1, slices=4)
    us = [write_us_phantom(incoming / "us" / "cine.dcm", 500002, frames=3).path]
    unusable(bad)
    for paths in (ct, bad, us):
        identify(paths)
        _record(session_factory, paths)
    complete_quiet_series(session_factory, 0.0, 1, now=utcnow() + timedelta(seconds=1))
    models = ModelCache("cpu")
    with session_factory() as session:
        jobs = {j.series.series_instance_uid: j.id for j in session.scalars(select(Job))}
    for job_id in jobs.values():
        execute_job(session_factory, models, results, job_id)
    uid = {
        name: str(pydicom.dcmread(p[0]).SeriesInstanceUID)
        for name, p in (("ct", ct), ("bad", bad), ("us", us))
    }
    with session_factory() as session:
        failed = session.get_one(Job, jobs[uid["bad"]])
        assert failed.state is JobState.FAILED, failed.error
    identifiers = [PATIENT_NAME, PATIENT_ID, ACCESSION, "DOE"]
    for paths in (ct, bad, us):
        ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
        identifiers += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]
    return Filled(jobs[uid["ct"]], jobs[uid["us"]], jobs[uid["bad"]], identifiers)

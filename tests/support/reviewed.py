"""Reviewed results for tests: real DICOM with patient data in it, a SEG written from known
masks, and the rows a reviewed result has (study with its Patient ID, job, result,
measurements, the SEG as an output, the reviewer's account)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    Account,
    Instance,
    Job,
    JobState,
    Measurement,
    OutputFile,
    Result,
    Series,
    Study,
    utcnow,
)
from worker.core.registry import get_spec
from worker.export.outputs import ModelOutput, Segment, SegmentKind
from worker.export.seg import write_seg
from worker.models.lung_ct.serve import DEFAULT_WEIGHTS
from worker.pipeline.loading import load_series

#: Patient data stamped into the test series; none of it may leave in an export.
PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-4711-XYZ",
    "PatientBirthDate": "19850612",
    "StudyDate": "20240315",
    "SeriesDate": "20240315",
    "AccessionNumber": "ACC99887766",
}


def stamp_phi(paths: list[Path], patient_id: str = PHI["PatientID"]) -> None:
    """Write the patient data of ``PHI`` (with ``patient_id``) into every file."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.PatientID = patient_id
        ds.save_as(path)


def reviewed_result(
    session_factory: sessionmaker[Session],
    paths: list[Path],
    model: str,
    kind: SegmentKind,
    mask: npt.NDArray[np.bool_],
    measurements: dict[str, tuple[float, str]],
    out_dir: Path,
    *,
    decision: str | None = "accepted",
    reviewer: str = "alice",
) -> int:
    """A flagged result of ``model`` with ``mask`` as its SEG, decided ``decision`` by
    ``reviewer`` (an account with the reviewer role); returns the result id."""
    spec = get_spec(model)
    series = load_series(paths)
    output = ModelOutput(segments=[Segment(kind, mask)])
    seg_path = out_dir / "seg.dcm"
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = write_seg(series, output, spec, seg_path)
    header = series.datasets[0]
    with session_factory.begin() as session:
        study = session.scalar(
            select(Study).where(Study.study_instance_uid == str(header.StudyInstanceUID))
        ) or Study(
            study_instance_uid=str(header.StudyInstanceUID), patient_id=str(header.PatientID)
        )
        row = Series(
            study=study,
            series_instance_uid=str(header.SeriesInstanceUID),
            modality=str(header.Modality),
        )
        for path in paths:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            row.instances.append(
                Instance(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    path=str(path),
                    size_bytes=path.stat().st_size,
                )
            )
        job = Job(
            series=row,
            model_name=spec.name,
            model_version=spec.version,
            queue=spec.queue,
            state=JobState.NEEDS_REVIEW,
        )
        result = Result(
            job=job,
            model_name=spec.name,
            model_version=spec.version,
            review="test gate: look",
            review_decision=decision,
            reviewed_by=reviewer if decision else None,
            reviewed_at=utcnow() if decision else None,
            measurements=[
                Measurement(key=k, label=k, value=v, unit=u) for k, (v, u) in measurements.items()
            ],
            outputs=[
                OutputFile(kind="seg", path=str(seg_path), sop_instance_uid=seg.SOPInstanceUID)
            ],
        )
        if session.scalar(select(Account).where(Account.name == reviewer)) is None:
            session.add(Account(name=reviewer, role="reviewer"))
        session.add_all([study, row, job, result])
        session.flush()
        return result.id


def copied_checkpoint(folder: Path) -> Path:
    """The shipped lung CT weights under another name (the .json travels with the .pt)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "lung_ct_unet_v2.pt"
    shutil.copy(DEFAULT_WEIGHTS, target)
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), target.with_suffix(".json"))
    return target

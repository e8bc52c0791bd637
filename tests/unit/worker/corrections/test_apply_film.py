"""A chest film's lung fields corrected by a SEG (issue 34): the reviewer's SEG is medseg's own
SEG with a mask edited (written by worker.export.seg), or one a viewer writes with highdicom,
which keeps the film's PixelSpacing in a Pixel Measures group without SliceThickness (highdicom's
own reader refused it: the correction ended ``failed``). The frames are read by their Segment
Identification and source image references; the lung areas are measured again and the new SEG
and SR pass dciodvfy."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Correction, CorrectionState, Job, JobState
from tests.support.corrections import write_corrected_seg
from tests.support.jobs import queue_test_job, set_job
from tests.support.tools import dciodvfy_errors
from worker.core.registry import get_spec
from worker.corrections.apply import execute_correction
from worker.corrections.segments import kind_of
from worker.export.outputs import ModelOutput, Segment
from worker.export.seg import write_seg
from worker.export.seg_read import read_seg_masks
from worker.models.lung_cxr.cr_dicom import write_cxr
from worker.models.lung_cxr.phantoms import make_chest_xray
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import decode_series, read_series
from worker.runtime.jobs import execute_job

RIGHT = hd.sr.CodedConcept("3341006", "SCT", "Right lung")
LEFT = hd.sr.CodedConcept("44029006", "SCT", "Left lung")


def _latest(
    session_factory: sessionmaker[Session], job_id: int
) -> tuple[dict[str, float], dict[str, str]]:
    with session_factory() as session:
        result = session.get_one(Job, job_id).results[-1]
        return {m.key: m.value for m in result.measurements}, {
            o.kind: o.path for o in result.outputs
        }


@pytest.mark.parametrize(
    ("modality", "writer"), [("CR", "medseg"), ("DX", "viewer"), ("CR", "viewer")]
)
def test_a_corrected_seg_of_a_chest_film_is_applied(
    session_factory: sessionmaker[Session], tmp_path: Path, modality: str, writer: str
) -> None:
    film = write_cxr(make_chest_xray(7), tmp_path / "film.dcm", modality=modality)  # type: ignore[arg-type]
    job_id = queue_test_job(session_factory, [film])
    set_job(session_factory, job_id, model_name="lung-cxr", model_version="2.0.0")
    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id)
    assert state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)
    before, outputs = _latest(session_factory, job_id)
    assert before["lung_area_cm2"] > 0

    # The reviewer trims the right lung field's lower half and leaves the left one.
    sop = str(pydicom.dcmread(film, stop_before_pixels=True).SOPInstanceUID)
    ours = read_seg_masks(Path(outputs["seg"]))
    labels = {label: number for number, label in ours.labels.items()}
    right = ours.frames[(sop, 1)][labels["Right lung"]].copy()
    left = ours.frames[(sop, 1)][labels["Left lung"]]
    rows = np.flatnonzero(right.any(axis=1))
    right[(rows[0] + rows[-1]) // 2 :] = False
    reviewer = tmp_path / "viewer" / "seg.dcm"
    if writer == "medseg":
        header = pydicom.dcmread(outputs["seg"], stop_before_pixels=True)
        edited = ModelOutput(
            [
                Segment(kind_of(header, labels["Right lung"]), right[None]),
                Segment(kind_of(header, labels["Left lung"]), left[None]),
            ],
            [],
        )
        write_seg(decode_series(read_series([film])), edited, get_spec("lung-cxr"), reviewer)
    else:
        write_corrected_seg(
            [film], [("Right lung", RIGHT, right[None]), ("Left lung", LEFT, left[None])], reviewer
        )
        measures = pydicom.dcmread(reviewer).SharedFunctionalGroupsSequence[0]
        assert "SliceThickness" not in measures.PixelMeasuresSequence[0]  # what failed
    with session_factory.begin() as session:
        row = Correction(kind="seg", by="VIEWER", source="dicom", path=str(reviewer))
        session.add(row)
        session.flush()
        correction_id = row.id
    assert execute_correction(session_factory, correction_id, tmp_path / "r") is (
        CorrectionState.APPLIED
    ), _reason(session_factory, correction_id)

    after, new_outputs = _latest(session_factory, job_id)
    pixel_cm2 = before["right_lung_area_cm2"] / float(
        ours.frames[(sop, 1)][labels["Right lung"]].sum()
    )
    assert after["right_lung_area_cm2"] == pytest.approx(float(right.sum()) * pixel_cm2)
    assert after["right_lung_area_cm2"] < 0.8 * before["right_lung_area_cm2"]
    assert after["left_lung_area_cm2"] == pytest.approx(before["left_lung_area_cm2"])
    assert after["lung_area_cm2"] == pytest.approx(
        after["left_lung_area_cm2"] + after["right_lung_area_cm2"]
    )
    assert dciodvfy_errors(Path(new_outputs["seg"])) == []
    assert dciodvfy_errors(Path(new_outputs["sr"])) == []
    written = read_seg_masks(Path(new_outputs["seg"]))
    new_labels = {label: number for number, label in written.labels.items()}
    assert (written.frames[(sop, 1)][new_labels["Right lung"]] == right).all()


def _reason(session_factory: sessionmaker[Session], correction_id: int) -> str:
    with session_factory() as session:
        return str(session.get_one(Correction, correction_id).reason)

"""Corrections applied end to end on SQLite with real files: a corrected SEG matched to its
lung result with volumes recomputed, a SEG that matches nothing kept with the reason, and a
fetal head ellipse; every written SEG and SR passes dciodvfy, the SR names its predecessor."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, CorrectionState, DeliveryState, Job, JobState
from tests.support.corrections import LUNG, seg_correction, write_corrected_seg
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job, set_job
from tests.support.tools import dciodvfy_errors
from worker.core.settings import DicomDestination
from worker.corrections.apply import execute_correction
from worker.corrections.segments import masks_on_series
from worker.export.seg_read import read_seg_masks
from worker.ops.audit import Actor
from worker.ops.corrections import list_corrections, request_ellipse
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import decode_series, read_series
from worker.runtime.jobs import DeliverTo, execute_job

PACS = DeliverTo([DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=1)])


def _latest(
    session_factory: sessionmaker[Session], job_id: int
) -> tuple[dict[str, float], dict[str, str], list[str]]:
    with session_factory() as session:
        result = session.get_one(Job, job_id).results[-1]
        return (
            {m.key: m.value for m in result.measurements},
            {o.kind: o.path for o in result.outputs},
            [d.state.value for d in result.deliveries],
        )


def _check_outputs(outputs: dict[str, str], replaced_sr: str) -> None:
    seg, sr = pydicom.dcmread(outputs["seg"]), pydicom.dcmread(outputs["sr"])
    assert dciodvfy_errors(Path(outputs["seg"])) == []
    assert dciodvfy_errors(Path(outputs["sr"])) == []
    assert "corrected" in seg.SeriesDescription and "corrected" in sr.SeriesDescription
    old = pydicom.dcmread(replaced_sr)
    (item,) = sr.PredecessorDocumentsSequence
    ref = item.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert item.ReferencedSeriesSequence[0].SeriesInstanceUID == old.SeriesInstanceUID
    assert sr.SeriesInstanceUID != old.SeriesInstanceUID


def test_a_corrected_seg_replaces_the_lung_result(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    paths = chest_series(tmp_path / "ct", 3, slices=6)
    job_id = queue_test_job(session_factory, paths)
    assert execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id, PACS) in (
        JobState.SUCCEEDED,
        JobState.NEEDS_REVIEW,
    )
    before, outputs, _ = _latest(session_factory, job_id)
    series = decode_series(read_series(paths))
    masks = masks_on_series(read_seg_masks(Path(outputs["seg"])), series, [1, 2])
    left, right = masks[..., 0].copy(), masks[..., 1]
    left[: len(left) // 2] = False  # the reviewer removed the upper half of the left lung
    corrected = write_corrected_seg(
        [Path(ds.filename) for ds in series.datasets],
        [("left LUNG", LUNG, left), ("Right lung", LUNG, right)],
        tmp_path / "slicer" / "seg.dcm",
    )
    correction_id = seg_correction(session_factory, corrected, "SLICER")
    assert execute_correction(session_factory, correction_id, tmp_path / "r", PACS) is (
        CorrectionState.APPLIED
    )
    after, new_outputs, deliveries = _latest(session_factory, job_id)
    assert after["left_lung_volume_ml"] < 0.75 * before["left_lung_volume_ml"]
    assert after["right_lung_volume_ml"] == pytest.approx(before["right_lung_volume_ml"])
    assert after["lung_volume_ml"] == pytest.approx(
        after["left_lung_volume_ml"] + after["right_lung_volume_ml"]
    )
    assert deliveries == ["pending"]
    _check_outputs(new_outputs, outputs["sr"])
    (view,) = list_corrections(session_factory)
    assert view.by == "Reviewer^Dana" and view.job_id == job_id
    assert set(view.changes) >= {"left_lung_volume_ml", "lung_volume_ml"}
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        old, new = job.results
        assert new.review_decision == "corrected" and new.reviewed_by == "Reviewer^Dana"
        assert all(d.state is DeliveryState.WITHHELD for d in old.deliveries)
        assert "replaced by correction" in (old.deliveries[0].error or "")
        event = session.query(AuditEvent).filter_by(action="correct").one()
    assert event.source == "dicom" and "left_lung_volume_ml" in (event.detail or "")


def test_a_seg_of_an_unknown_series_is_kept_unmatched_with_the_reason(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    paths = chest_series(tmp_path / "other", 4, slices=6)
    series = decode_series(read_series(paths))
    mask = series.frames > 0  # anything
    seg = write_corrected_seg(paths, [("Left lung", LUNG, mask)], tmp_path / "s" / "seg.dcm")
    correction_id = seg_correction(session_factory, seg, "OHIF")
    assert execute_correction(session_factory, correction_id, tmp_path / "r") is (
        CorrectionState.UNMATCHED
    )
    (view,) = list_corrections(session_factory, state="unmatched")
    assert "no series received here is the SEG's source" in (view.reason or "")
    assert Path(seg).exists()


def test_a_fetal_head_ellipse_correction(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from worker.models.fetal_head.biometry import hadlock_ga_days, ramanujan_perimeter
    from worker.models.fetal_head.us_dicom import write_us_phantom

    phantom = write_us_phantom(tmp_path / "us" / "us.dcm", 100000)  # flagged (docs/fetal-head.md)
    job_id = queue_test_job(session_factory, [phantom.path])
    set_job(session_factory, job_id, model_name="fetal-head-unet", model_version="2.0.0")
    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id, PACS)
    assert state is JobState.NEEDS_REVIEW
    _, outputs, deliveries = _latest(session_factory, job_id)
    assert deliveries == ["withheld"]
    truth = phantom.truth
    values = {"cx": 60.0, "cy": 45.0, "a": truth.ofd_mm / 2, "b": truth.bpd_mm / 2, "angle": 0.0}
    correction_id = request_ellipse(
        session_factory, job_id, values, by="dr a", actor=Actor("dr a", "cli")
    )
    assert execute_correction(session_factory, correction_id, tmp_path / "r", PACS) is (
        CorrectionState.APPLIED
    )
    after, new_outputs, deliveries = _latest(session_factory, job_id)
    hc = ramanujan_perimeter(values["a"], values["b"])
    assert after["head_circumference_mm"] == pytest.approx(hc)
    assert after["biparietal_diameter_mm"] == pytest.approx(truth.bpd_mm)
    assert after["gestational_age_days"] == pytest.approx(hadlock_ga_days(hc) or 0)
    assert deliveries == ["pending"]  # a reviewer's ellipse is not flagged: delivered
    _check_outputs(new_outputs, outputs["sr"])
    report = json.loads(Path(new_outputs["json"]).read_text())
    assert report["status"] == "corrected" and report["ellipse"]["a"] == values["a"]

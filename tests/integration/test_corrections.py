"""Corrections on the real stack (storescu → gateway → Redis → Celery worker, PostgreSQL,
DCMTK storescp as the PACS): a flagged fetal head phantom result corrected with
``medseg review JOB correct`` is delivered as a new SR naming the one it replaces; a
corrected SEG sent with storescu is recognised, not processed as a study, and matched to its
lung result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from db.models import Correction, CorrectionState, DeliveryState, Job, JobState, Series
from tests.support.corrections import LUNG, write_corrected_seg
from tests.support.factories import chest_series
from tests.support.stack import PacsStack, finished_job, medseg_cli
from tests.support.tools import dciodvfy_errors, wait_until
from worker.corrections.segments import masks_on_series
from worker.devtools.localstack import dcmtk_env, dcmtk_tool, storescu
from worker.export.seg_read import read_seg_masks
from worker.pipeline.loading import decode_series, read_series

pytestmark = pytest.mark.integration


def test_a_corrected_fetal_head_is_delivered_with_its_predecessor(
    pacs_stack: PacsStack, tmp_path: Path
) -> None:
    from worker.models.fetal_head.us_dicom import write_us_phantom

    phantom = write_us_phantom(tmp_path / "us" / "us.dcm", 100000)  # flagged by the gate
    assert storescu(tmp_path / "us", pacs_stack.port, "MEDSEG").returncode == 0
    job = finished_job(pacs_stack, str(pydicom.dcmread(phantom.path).SeriesInstanceUID))
    assert job.state is JobState.NEEDS_REVIEW, job.error
    with pacs_stack.session_factory() as session:
        flagged = session.get_one(Job, job.id).results[-1]
        old_sr = next(o.sop_instance_uid for o in flagged.outputs if o.kind == "sr")
        assert [d.state for d in flagged.deliveries] == [DeliveryState.WITHHELD]
    a, b = phantom.truth.ofd_mm / 2, phantom.truth.bpd_mm / 2
    done = medseg_cli(
        pacs_stack.env,
        *("review", str(job.id), "correct", f"cx=60,cy=45,a={a},b={b},angle=0", "--by", "dr-a"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    def delivered() -> bool:
        with pacs_stack.session_factory() as session:
            result = session.get_one(Job, job.id).results[-1]
            return result.review_decision == "corrected" and all(
                d.state is DeliveryState.SENT for d in result.deliveries
            )

    wait_until(delivered, 120)
    with pacs_stack.session_factory() as session:
        result = session.get_one(Job, job.id).results[-1]
        new_sr = next(o for o in result.outputs if o.kind == "sr")
    at_pacs = pacs_stack.pacs.sop_instance_uids()
    assert str(new_sr.sop_instance_uid) in at_pacs
    assert str(old_sr) not in at_pacs, "the flagged result was never sent"
    sr = pydicom.dcmread(new_sr.path)
    ref = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == old_sr
    assert dciodvfy_errors(Path(new_sr.path)) == []


def test_a_corrected_seg_sent_over_c_store_is_matched_to_its_result(
    pacs_stack: PacsStack, tmp_path: Path
) -> None:
    paths = chest_series(tmp_path / "ct", 5, slices=6)
    series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    assert storescu(tmp_path / "ct", pacs_stack.port, "MEDSEG").returncode == 0
    job = finished_job(pacs_stack, series_uid)
    assert job.state is JobState.SUCCEEDED, job.error
    with pacs_stack.session_factory() as session:
        seg_path = next(
            o.path for o in session.get_one(Job, job.id).results[-1].outputs if o.kind == "seg"
        )
    loaded = decode_series(read_series(paths))
    masks = masks_on_series(read_seg_masks(Path(seg_path)), loaded, [1, 2])
    left = masks[..., 0].copy()
    left[:3] = False
    corrected = write_corrected_seg(
        [Path(ds.filename) for ds in loaded.datasets],
        [("Left lung", LUNG, left), ("Right lung", LUNG, masks[..., 1])],
        tmp_path / "slicer" / "seg.dcm",
    )
    # -R: propose the files' own SOP class (Segmentation Storage is not in storescu's
    # default list; Slicer and OHIF propose it themselves).
    sent = subprocess.run(
        [
            *(dcmtk_tool("storescu"), "-R", "-aet", "SLICER", "-aec", "MEDSEG"),
            *("127.0.0.1", str(pacs_stack.port), str(corrected)),
        ],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0 and "Failed" not in sent.stderr, sent.stderr

    def applied() -> Correction | None:
        with pacs_stack.session_factory() as session:
            row = session.scalar(
                select(Correction).where(
                    Correction.sop_instance_uid == str(pydicom.dcmread(corrected).SOPInstanceUID)
                )
            )
            return row if row is not None and row.state is not CorrectionState.RECEIVED else None

    wait_until(applied, 120)
    row = applied()
    assert row is not None and row.state is CorrectionState.APPLIED, row and row.reason
    assert row.job_id == job.id and row.by == "Reviewer^Dana"
    assert "left_lung_volume_ml" in json.loads(row.changes or "{}")
    with pacs_stack.session_factory() as session:
        seg_series = session.scalar(select(Series).where(Series.id == row.series_id))
        assert seg_series is not None and not seg_series.jobs, "a SEG is not a study to process"

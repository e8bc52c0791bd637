"""Corrections on the real stack (storescu → gateway → Redis → Celery worker, PostgreSQL,
DCMTK storescp as the PACS): a flagged fetal head phantom result corrected with
``medseg review JOB correct`` is delivered as a new SR naming the one it replaces; a
corrected SEG sent with storescu is recognised, not processed as a study, and matched to its
lung result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import TERMINAL
from db.models import Correction, CorrectionState, DeliveryState, Job, JobState, Series
from db.session import make_engine, make_session_factory
from tests.support.corrections import LUNG, write_corrected_seg
from tests.support.factories import chest_series
from tests.support.tools import dciodvfy_errors, need_tool, wait_until
from worker.corrections.segments import masks_on_series
from worker.devtools.localstack import (
    dcmtk_env,
    dcmtk_tool,
    free_port,
    start_medseg,
    stop,
    storescu,
    wait_for_port,
)
from worker.export.seg_read import read_seg_masks
from worker.pipeline.loading import decode_series, read_series

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    port: int
    env: dict[str, str]
    logs: Path
    pacs: Path
    session_factory: sessionmaker[Session]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("corrections")
    pacs_port, port = free_port(), free_port()
    received = root / "pacs"
    received.mkdir()
    pacs = subprocess.Popen(
        [need_tool("storescp"), "-aet", "PACS", "-od", str(received), str(pacs_port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    destination = {"type": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1"}
    env = {
        "MEDSEG_DATA_DIR": str(root / "data"),
        "MEDSEG_DATABASE_URL": postgres_url,
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-test-{uuid.uuid4().hex[:8]}:",
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(port),
        "MEDSEG_AE_TITLE": "MEDSEG",
        "MEDSEG_SERIES_QUIET_SECONDS": "1.0",
        "MEDSEG_COMPLETION_POLL_SECONDS": "0.2",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_LUNG_CT_MODEL": "threshold",
        "MEDSEG_DESTINATIONS": json.dumps([{**destination, "port": pacs_port}]),
    }
    gateway = start_medseg(["gateway"], env, root / "gateway.log")
    worker = start_medseg(["worker", "--concurrency", "1"], env, root / "worker.log")
    engine = make_engine(postgres_url)
    try:
        wait_for_port(pacs_port, process=pacs)  # type: ignore[arg-type]
        wait_for_port(port, process=gateway)
        yield Stack(port, env, root, received, make_session_factory(engine))
    finally:
        stop(gateway)
        stop(worker)
        stop(pacs)  # type: ignore[arg-type]
        engine.dispose()


def _logs(stack: Stack) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in stack.logs.glob("*.log")
    )


def _job_of(stack: Stack, series_uid: str, timeout: float = 180.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.session_factory() as session:
            job = session.scalar(
                select(Job).join(Series).where(Series.series_instance_uid == series_uid)
            )
            if job is not None and job.state in TERMINAL:
                return job
        time.sleep(0.3)
    raise AssertionError(f"no finished job in {timeout} s\n{_logs(stack)}")


def _pacs_has(stack: Stack, uid: str) -> bool:
    return any(
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) == uid
        for p in stack.pacs.iterdir()
    )


def test_a_corrected_fetal_head_is_delivered_with_its_predecessor(
    stack: Stack, tmp_path: Path
) -> None:
    from worker.models.fetal_head.us_dicom import write_us_phantom

    phantom = write_us_phantom(tmp_path / "us" / "us.dcm", 100000)  # flagged by the gate
    assert storescu(tmp_path / "us", stack.port, "MEDSEG").returncode == 0
    job = _job_of(stack, str(pydicom.dcmread(phantom.path).SeriesInstanceUID))
    assert job.state is JobState.NEEDS_REVIEW, job.error
    with stack.session_factory() as session:
        flagged = session.get_one(Job, job.id).results[-1]
        old_sr = next(o.sop_instance_uid for o in flagged.outputs if o.kind == "sr")
        assert [d.state for d in flagged.deliveries] == [DeliveryState.WITHHELD]
    a, b = phantom.truth.ofd_mm / 2, phantom.truth.bpd_mm / 2
    done = subprocess.run(
        [
            *(sys.executable, "-m", "worker.cli", "review", str(job.id), "correct"),
            *(f"cx=60,cy=45,a={a},b={b},angle=0", "--by", "dr-a"),
        ],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    def delivered() -> bool:
        with stack.session_factory() as session:
            result = session.get_one(Job, job.id).results[-1]
            return result.review_decision == "corrected" and all(
                d.state is DeliveryState.SENT for d in result.deliveries
            )

    wait_until(delivered, 120)
    with stack.session_factory() as session:
        result = session.get_one(Job, job.id).results[-1]
        new_sr = next(o for o in result.outputs if o.kind == "sr")
    assert _pacs_has(stack, str(new_sr.sop_instance_uid))
    assert not _pacs_has(stack, str(old_sr)), "the flagged result was never sent"
    sr = pydicom.dcmread(new_sr.path)
    ref = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == old_sr
    assert dciodvfy_errors(Path(new_sr.path)) == []


def test_a_corrected_seg_sent_over_c_store_is_matched_to_its_result(
    stack: Stack, tmp_path: Path
) -> None:
    paths = chest_series(tmp_path / "ct", 5, slices=6)
    series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    assert storescu(tmp_path / "ct", stack.port, "MEDSEG").returncode == 0
    job = _job_of(stack, series_uid)
    assert job.state is JobState.SUCCEEDED, job.error
    with stack.session_factory() as session:
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
            *("127.0.0.1", str(stack.port), str(corrected)),
        ],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0 and "Failed" not in sent.stderr, sent.stderr

    def applied() -> Correction | None:
        with stack.session_factory() as session:
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
    with stack.session_factory() as session:
        seg_series = session.scalar(select(Series).where(Series.id == row.series_id))
        assert seg_series is not None and not seg_series.jobs, "a SEG is not a study to process"

"""Issue 34 end to end on the real stack (gateway, worker, Redis, PostgreSQL): a phantom the
fetal head gate flags, its ellipse corrected by a reviewer on the dashboard's study page, the
correction applied by the worker, and ``medseg export-training --decision corrected`` (a
subprocess) writing the reviewer's ellipse in the HC18 layout that ``medseg train`` reads."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from db.models import Correction, CorrectionState, Job, JobState
from tests.support.dashboard_client import csrf_token
from tests.support.stack import PacsStack, finished_job, medseg_cli
from tests.support.tools import wait_until
from worker.core.settings import Settings
from worker.dashboard.app import create_app
from worker.devtools.localstack import storescu
from worker.models.fetal_head.biometry import fit_ellipse_mm, ramanujan_perimeter
from worker.ops import people
from worker.trainset.deid import Pseudonyms

pytestmark = pytest.mark.integration

SECRET = "an export secret for the loop test"
PW = "a long enough password"


def _dashboard(settings: Settings, factory: sessionmaker[Session]) -> tuple[TestClient, str]:
    name = f"rev{uuid.uuid4().hex[:8]}"
    people.add(factory, name, "reviewer", PW)
    app = create_app(settings.model_copy(update={"dashboard_password_hash": ""}), factory)
    client = TestClient(app, follow_redirects=False)
    data = {"username": name, "password": PW, "csrf": csrf_token(client.get("/login").text)}
    assert client.post("/login", data=data).status_code == 303
    return client, name


def test_flagged_corrected_on_the_dashboard_exported_and_read_by_training(
    pacs_stack: PacsStack,
    settings: Settings,
    tmp_path: Path,
) -> None:
    from worker.models.fetal_head.frames import from_folder
    from worker.models.fetal_head.hc18 import load_mask, read_index
    from worker.models.fetal_head.us_dicom import write_us_phantom

    phantom = write_us_phantom(tmp_path / "us" / "us.dcm", 100000)  # flagged by the gate
    header = pydicom.dcmread(phantom.path)
    assert storescu(tmp_path / "us", pacs_stack.port, "MEDSEG").returncode == 0
    job = finished_job(pacs_stack, str(header.SeriesInstanceUID))
    assert job.state is JobState.NEEDS_REVIEW, job.error

    client, reviewer = _dashboard(settings, pacs_stack.session_factory)
    with pacs_stack.session_factory() as session:
        study_id = session.get_one(Job, job.id).series.study_id
    page = client.get(f"/studies/{study_id}").text
    form = re.search(rf'<form[^>]*id="correct-{job.id}".*?</form>', page, re.S)
    assert form, "no correction form on the study page"
    truth, mm = phantom.truth, phantom.truth.pixel_mm
    drawn = {
        "cx": truth.cx * mm,
        "cy": truth.cy * mm,
        "a": truth.ofd_mm / 2,
        "b": truth.bpd_mm / 2,
        "angle": truth.angle_deg,
    }
    response = client.post(
        f"/jobs/{job.id}/correct",
        data={"csrf": csrf_token(page), **{k: f"{v:.3f}" for k, v in drawn.items()}},
    )
    assert response.status_code == 303

    def applied() -> Correction | None:
        with pacs_stack.session_factory() as session:
            row = session.query(Correction).filter_by(job_id=job.id, by=reviewer).one_or_none()
            return row if row is not None and row.state is not CorrectionState.RECEIVED else None

    wait_until(applied, 120)
    row = applied()
    assert row is not None and row.state is CorrectionState.APPLIED, row and row.reason

    out = tmp_path / "export"
    done = medseg_cli(
        {**pacs_stack.env, "MEDSEG_TRAINING_EXPORT_SECRET": SECRET},
        *("export-training", "fetal-head", "--out", str(out), "--decision", "corrected"),
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    ours = [
        c
        for c in manifest["cases"]
        if c["study"] == Pseudonyms(SECRET).uid(str(header.StudyInstanceUID))
    ]
    assert len(ours) == 1 and ours[0]["decision"] == "corrected"
    assert ours[0]["reviewer_role"] == "reviewer"
    items = read_index(out)  # the readers `medseg train fetal-head` uses
    (item,) = [i for i in items if i.image.name == ours[0]["files"][0]]
    hc = ramanujan_perimeter(drawn["a"], drawn["b"])
    assert item.hc_mm == pytest.approx(hc, abs=0.01)
    refitted = fit_ellipse_mm(load_mask(item.annotation), (item.pixel_mm, item.pixel_mm))
    assert refitted is not None and refitted.circumference == pytest.approx(hc, rel=0.01)
    frames = from_folder(out, (64, 96))
    k = frames.names.index(item.image.name)
    assert frames.images.shape[1:] == frames.masks.shape[1:] == (64, 96)
    assert frames.masks[k].max() == 255

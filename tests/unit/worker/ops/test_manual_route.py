"""Send a series to a model by hand (issue 32 item 8): `medseg route`, the study page's form
and preview, the audit trail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Instance, Job, JobState, Series, SeriesStatus, Study
from tests.support.dashboard_client import csrf_token, logged_in_client
from tests.support.factories import chest_series
from worker.core.settings import Settings
from worker.ops.audit import Actor
from worker.ops.manual_route import route_by_hand
from worker.ops.operations import OperationError

MODEL = "lung-ct-threshold"


def unrouted_series(
    factory: sessionmaker[Session],
    folder: Path,
    seed: int = 0,
    status: SeriesStatus = SeriesStatus.UNROUTED,
) -> tuple[int, str]:
    """A series as the gateway records one no model accepts (a CT tagged OT): (id, UID)."""
    paths = chest_series(folder, seed, slices=4)
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    with factory.begin() as session:
        series = Series(
            study=Study(study_instance_uid=str(header.StudyInstanceUID)),
            series_instance_uid=str(header.SeriesInstanceUID),
            modality="OT",
            status=status,
            calling_ae="CR_ROOM",
        )
        for number, path in enumerate(paths, start=1):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            series.instances.append(
                Instance(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    instance_number=number,
                    path=str(path),
                    size_bytes=path.stat().st_size,
                )
            )
        session.add(series)
        session.flush()
        return series.id, series.series_instance_uid


def test_a_series_goes_to_the_model_named_and_it_is_audited(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    series_id, uid = unrouted_series(session_factory, tmp_path / "a")
    ann = Actor("ann", "cli")
    job_id = route_by_hand(session_factory, uid, MODEL, actor=ann)
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert (job.series_id, job.model_name, job.state) == (series_id, MODEL, JobState.QUEUED)
        assert session.get_one(Series, series_id).status is SeriesStatus.COMPLETE
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "route")).all()
        assert (event.actor, event.job_id, event.outcome) == ("ann", job_id, "done")
        assert event.study_id == job.series.study_id and "sent to lung-ct-threshold" in (
            event.detail or ""
        )
    with pytest.raises(OperationError, match="identical lung-ct-threshold job"):
        route_by_hand(session_factory, series_id, MODEL, actor=ann)
    assert route_by_hand(session_factory, str(series_id), MODEL, force=True) != job_id
    with pytest.raises(OperationError, match="no model named nope"):
        route_by_hand(session_factory, series_id, "nope")
    with pytest.raises(OperationError, match=r"no series 1\.2\.404"):
        route_by_hand(session_factory, "1.2.404", MODEL)
    receiving, _ = unrouted_series(session_factory, tmp_path / "b", 1, SeriesStatus.RECEIVING)
    with pytest.raises(OperationError, match="still receiving"):
        route_by_hand(session_factory, receiving, MODEL)
    with session_factory() as session:
        outcomes = session.scalars(
            select(AuditEvent.outcome).where(AuditEvent.action == "route")
        ).all()
    assert outcomes.count("refused") == 1  # the one with an actor


def test_medseg_route_from_the_command_line(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _, uid = unrouted_series(session_factory, tmp_path / "a")
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}

    def medseg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = medseg("route", uid, "--model", MODEL, "--user", "ann")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("job ") and f"series {uid} sent to {MODEL}" in done.stdout
    again = medseg("route", uid, "--model", MODEL)
    assert again.returncode == 1 and "identical" in again.stderr and again.stdout == ""


def test_the_study_page_previews_the_series_and_sends_it(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    series_id, _ = unrouted_series(session_factory, tmp_path / "a")
    with session_factory() as session:
        study_id = session.get_one(Series, series_id).study_id
    client = logged_in_client(settings, session_factory)
    page = client.get(f"/studies/{study_id}").text
    assert f'src="/series/{series_id}/preview.png"' in page and f'id="route-{series_id}"' in page
    preview = client.get(f"/series/{series_id}/preview.png")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert preview.content.startswith(b"\x89PNG") and len(preview.content) > 1000
    assert client.get("/series/424242/preview.png").status_code == 404
    sent = client.post(
        f"/series/{series_id}/route", data={"csrf": csrf_token(page), "model": MODEL}
    )
    assert sent.status_code == 303 and sent.headers["location"].endswith(f"#series-{series_id}")
    after = client.get(f"/studies/{study_id}").text
    assert f"series {series_id} sent to {MODEL}: job" in after
    assert f'id="route-{series_id}"' not in after  # routed now, nothing failed
    with session_factory() as session:
        assert session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "route")
        ).all() == ["op"]

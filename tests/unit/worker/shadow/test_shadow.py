"""A version installed in shadow runs beside the live one: its result is stored and linked,
never delivered; compare reads both; promote makes it live, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Delivery, Job, JobState, Result
from db.shadow_models import LIVE, ShadowResult
from tests.support.dashboard_client import logged_in_client
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job, set_job
from tests.support.reviewed import copied_checkpoint
from worker.core.enqueue import queue_job
from worker.core.registry import get_spec
from worker.core.settings import DicomDestination, Settings
from worker.ops.audit import Actor
from worker.ops.operations import OperationError
from worker.ops.reruns import rerun
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import DeliverTo, execute_job
from worker.shadow.compare import compare, report_lines
from worker.shadow.installs import install_shadow, installs, promote
from worker.shadow.run import run_shadows

ADMIN = Actor("root-admin", "cli")


def test_install_refuses_what_cannot_run_and_audits_what_it_installs(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    weights = copied_checkpoint(tmp_path)
    with pytest.raises(OperationError, match="cannot load other weights"):
        install_shadow(session_factory, "lung-ct-threshold", "2", weights, actor=ADMIN)
    with pytest.raises(OperationError, match="ships as"):
        install_shadow(session_factory, "lung-ct-unet", "1.0.0", weights, actor=ADMIN)
    with pytest.raises(OperationError, match="no such checkpoint"):
        install_shadow(session_factory, "lung-ct-unet", "2", tmp_path / "none.pt", actor=ADMIN)
    done = install_shadow(session_factory, "lung-ct-unet", "1.1.0-shadow", weights, actor=ADMIN)
    assert done.role == "shadow" and len(done.weights_sha256) == 64
    with pytest.raises(OperationError, match="already installed"):
        install_shadow(session_factory, "lung-ct-unet", "1.1.0-shadow", weights, actor=ADMIN)
    with session_factory() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.outcome) for e in events] == [("shadow", "refused")] * 3 + [
        ("shadow", "done"),
        ("shadow", "refused"),
    ]


def test_shadow_runs_beside_live_is_stored_not_delivered_then_promoted(
    session_factory: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    weights = copied_checkpoint(tmp_path / "w")
    install_shadow(session_factory, "lung-ct-unet", "1.1.0-shadow", weights, actor=ADMIN)
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 3, slices=8))
    set_job(session_factory, job_id, model_name="lung-ct-unet", queue="gpu")
    models = ModelCache("cpu")
    pacs = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)
    execute_job(session_factory, models, tmp_path / "results", job_id, DeliverTo([pacs]))

    (shadow_id,) = run_shadows(session_factory, models, tmp_path / "results", job_id)

    with session_factory() as session:
        job = session.get_one(Job, job_id)
        (live,) = job.results  # the shadow is not one of the job's results
        shadow = session.get_one(ShadowResult, shadow_id)
        deliveries = session.scalars(select(Delivery)).all()
        assert shadow.result_id == live.id and shadow.status == "succeeded"
        assert shadow.model_version == "1.1.0-shadow" and live.model_version == "1.0.0"
        assert [d.result_id for d in deliveries] == [live.id]  # only the live result's
        assert shadow.seg_path and Path(shadow.seg_path).parent.name == "shadow-1.1.0-shadow"
        live_values = {m.key: m.value for m in live.measurements}
        shadow_values = {k: v[0] for k, v in json.loads(shadow.measurements).items()}
        assert shadow_values == pytest.approx(live_values)

    comparison = compare(session_factory, "lung-ct-unet", "1.0.0", "1.1.0-shadow")
    assert len(comparison.pairs) == 1
    summary = comparison.dice_summary()
    assert summary is not None and summary[1] == pytest.approx(1.0)
    assert all(abs(ba.mean_difference) < 1e-6 for ba in comparison.agreement().values())
    text = "\n".join(report_lines(comparison))
    assert "Dice live vs shadow: mean 1.000" in text and "Bland-Altman" in text

    # The dashboard's page shows the same comparison.
    client = logged_in_client(settings, session_factory)
    listing = client.get("/shadow")
    assert listing.status_code == 200 and "1.1.0-shadow" in listing.text
    assert "/shadow?model=lung-ct-unet&amp;live=1.0.0&amp;version=1.1.0-shadow" in listing.text
    page = client.get(
        "/shadow", params={"model": "lung-ct-unet", "live": "1.0.0", "version": "1.1.0-shadow"}
    )
    assert page.status_code == 200
    assert "live 1.0.0 vs shadow 1.1.0-shadow, 1 series" in page.text
    assert "Dice live vs shadow: mean 1.000" in page.text
    assert "left_lung_volume_ml" in page.text

    done = promote(session_factory, "lung-ct-unet", "1.1.0-shadow", actor=ADMIN)
    assert done.role == LIVE
    with pytest.raises(OperationError, match="already live"):
        promote(session_factory, "lung-ct-unet", "1.1.0-shadow", actor=ADMIN)
    # The next job runs the promoted version as the live one, and no shadow is left.
    job2 = queue_test_job(session_factory, chest_series(tmp_path / "in2", 4, slices=8))
    set_job(session_factory, job2, model_name="lung-ct-unet", queue="gpu")
    execute_job(session_factory, models, tmp_path / "results", job2, DeliverTo([pacs]))
    assert run_shadows(session_factory, models, tmp_path / "results", job2) == []
    with session_factory() as session:
        assert (
            session.scalars(select(Result.model_version).where(Result.job_id == job2)).one()
            == "1.1.0-shadow"
        )
        assert (
            session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "promote")).first()
            == "lung-ct-unet 1.1.0-shadow live (was 1.0.0 (shipped))"
        )
    assert [i.role for i in installs(session_factory, "lung-ct-unet")] == [LIVE]


def _queued(session_factory: sessionmaker[Session], series_id: int) -> int | None:
    """A job of lung-ct-unet queued as the gateway and ``medseg route`` queue one."""
    with session_factory.begin() as session:
        return queue_job(session, series_id, get_spec("lung-ct-unet"), 3)


def _version(session_factory: sessionmaker[Session], job_id: int) -> str:
    with session_factory() as session:
        return session.get_one(Job, job_id).model_version


def test_jobs_queued_after_a_promotion_name_the_promoted_version(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Once a version is promoted, a job queued records it (not the version the model ships
    as), and a rerun queues the series the version before ran on again, for the new one."""
    done = _queued(session_factory, _series_of(session_factory, tmp_path / "a", 3))
    assert done is not None and _version(session_factory, done) == "1.0.0"
    set_job(session_factory, done, state=JobState.SUCCEEDED)
    weights = copied_checkpoint(tmp_path / "w")
    install_shadow(session_factory, "lung-ct-unet", "1.1.0-shadow", weights, actor=ADMIN)
    in_shadow = _queued(session_factory, _series_of(session_factory, tmp_path / "b", 4))
    assert in_shadow is not None and _version(session_factory, in_shadow) == "1.0.0"

    promote(session_factory, "lung-ct-unet", "1.1.0-shadow", actor=ADMIN)

    after = _queued(session_factory, _series_of(session_factory, tmp_path / "c", 5))
    assert after is not None and _version(session_factory, after) == "1.1.0-shadow"
    rerun_jobs = rerun(session_factory, "lung-ct-unet", actor=ADMIN)
    # ``done``'s series (run by 1.0.0) and ``in_shadow``'s get a job of the promoted version;
    # ``after``'s is covered already.
    assert len(rerun_jobs) == 2
    assert {_version(session_factory, job) for job in rerun_jobs} == {"1.1.0-shadow"}


def _series_of(session_factory: sessionmaker[Session], folder: Path, seed: int) -> int:
    job_id = queue_test_job(session_factory, chest_series(folder, seed, slices=4))
    with session_factory() as session:
        return session.get_one(Job, job_id).series_id

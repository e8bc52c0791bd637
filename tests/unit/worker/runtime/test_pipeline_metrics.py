"""Per-stage timings by model after a real job; the queue wait of re-runs and retries measured
from their own queueing, not from their series' completion long before."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow
from dicom_gateway.outbox import dispatch_pending
from tests.support.factories import chest_series
from tests.support.gateway import RecordingPublisher
from tests.support.jobs import queue_test_job, set_job
from worker.ops import operations, reruns
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job
from worker.runtime.metrics import MULTIPROC_ENV, record_job

MODEL = "lung-ct-threshold"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "prom"))


def test_a_real_job_observes_each_of_its_stages_by_model(
    session_factory: sessionmaker[Session], tmp_path: Path, metrics_on: None
) -> None:
    stages = ("load", "load_model", "infer", "export")
    name = "medseg_pipeline_stage_seconds"
    before = {s: _value(f"{name}_count", model=MODEL, stage=s) for s in stages}
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=8))
    assert execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id) is (
        JobState.SUCCEEDED
    )
    for stage in stages:
        assert _value(f"{name}_count", model=MODEL, stage=stage) == before[stage] + 1, stage
    assert _value(f"{name}_sum", model=MODEL, stage="infer") > 0
    # lung-ct-threshold does not split predict: no preprocess/postprocess samples of its own
    assert _value(f"{name}_count", model=MODEL, stage="preprocess") == 0


def test_nothing_is_observed_when_metrics_are_off(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    name = "medseg_pipeline_stage_seconds_count"
    before = _value(name, model=MODEL, stage="infer")
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 1, slices=6))
    execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id)
    assert _value(name, model=MODEL, stage="infer") == before


def _wait_observed(
    session_factory: sessionmaker[Session], tmp_path: Path, job_id: int
) -> tuple[float, float]:
    """Publish ``job_id`` (the gateway's outbox), run it, record it: the count and sum of
    ``complete_to_queued`` it added."""
    name = "medseg_job_stage_seconds"
    count, total = (_value(f"{name}_{k}", stage="complete_to_queued") for k in ("count", "sum"))
    assert dispatch_pending(session_factory, RecordingPublisher()) >= 1
    assert execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id) is (
        JobState.SUCCEEDED
    )
    record_job(session_factory, job_id)
    return (
        _value(f"{name}_count", stage="complete_to_queued") - count,
        _value(f"{name}_sum", stage="complete_to_queued") - total,
    )


def _completed_two_hours_ago(session_factory: sessionmaker[Session], job_id: int) -> None:
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.series.completed_at = utcnow() - timedelta(hours=2)


def test_a_rerun_waits_from_its_own_queueing(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    first = queue_test_job(session_factory, chest_series(tmp_path / "in", 2, slices=6))
    _completed_two_hours_ago(session_factory, first)
    set_job(session_factory, first, state=JobState.SUCCEEDED)
    (rerun,) = reruns.rerun(session_factory, MODEL, force=True)
    added, seconds = _wait_observed(session_factory, tmp_path, rerun)
    assert added == 1
    assert 0 <= seconds < 60, "measured from the series' completion two hours ago"


def test_a_retried_job_waits_from_the_retry(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 3, slices=6))
    _completed_two_hours_ago(session_factory, job_id)
    set_job(
        session_factory,
        job_id,
        state=JobState.FAILED,
        attempts=3,
        queued_at=utcnow() - timedelta(hours=2),
    )
    assert operations.retry(session_factory, [job_id]) == [job_id]
    added, seconds = _wait_observed(session_factory, tmp_path, job_id)
    assert added == 1
    assert 0 <= seconds < 60, "measured from the first queueing or the completion"


def test_a_staged_model_has_its_preprocess_infer_and_postprocess_timed_apart(
    tmp_path: Path,
) -> None:
    from worker.core.registry import get_spec
    from worker.models.fetal_head.us_dicom import write_us_phantom
    from worker.pipeline.run import run_series

    path = write_us_phantom(tmp_path / "us" / "cine.dcm", 500007, frames=1).path
    result = run_series([path], ModelCache("cpu"), tmp_path / "out", get_spec("fetal-head-unet"))
    assert set(result.timings) == {
        "load", "load_model", "preprocess", "infer", "postprocess", "export",
    }  # fmt: skip
    assert all(seconds >= 0 for seconds in result.timings.values())
    assert "head_circumference_mm" in {m.key for m in result.measurements}

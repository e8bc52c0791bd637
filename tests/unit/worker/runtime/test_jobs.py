"""execute_job: the DB side of a task, run directly (no Celery, no eager mode)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import transition
from db.models import Job, JobState, Result
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from tests.support.tools import dciodvfy_errors
from worker.core.registry import Model, ModelSpec
from worker.export.outputs import ModelOutput
from worker.pipeline.cache import ModelCache
from worker.pipeline.loading import LoadedSeries
from worker.runtime.jobs import backoff_seconds, execute_job


def test_success_records_result_measurements_and_a_valid_seg(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=12))
    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "results", job_id)
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.SUCCEEDED and job.attempts == 1 and job.error is None
        assert job.started_at is not None and job.finished_at is not None
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one()
        measures = {m.key: (m.value, m.unit) for m in result.measurements}
        assert set(measures) == {"left_lung_volume_ml", "right_lung_volume_ml", "lung_volume_ml"}
        assert all(unit == "mL" and value > 100 for value, unit in measures.values())
        assert result.model_name == "lung-ct-threshold" and result.model_version == "1.0.0"
        assert result.validation == "reference-only"  # its card, weightless, covers every run
        outputs = {o.kind: (o.path, o.sop_instance_uid) for o in result.outputs}
    assert set(outputs) == {"seg", "sr", "json"}
    report = json.loads(Path(outputs.pop("json")[0]).read_text())
    assert report["measurements"].keys() == measures.keys()
    for path, uid in outputs.values():
        assert Path(path).is_relative_to(tmp_path / "results")
        assert pydicom.dcmread(path).SOPInstanceUID == uid
        assert dciodvfy_errors(Path(path)) == []


def test_redelivery_of_a_finished_job_is_a_no_op(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 1, slices=8))
    models = ModelCache("cpu")
    assert execute_job(session_factory, models, tmp_path / "r", job_id) is JobState.SUCCEEDED
    assert execute_job(session_factory, models, tmp_path / "r", job_id) is None
    with session_factory() as session:
        assert len(session.scalars(select(Result)).all()) == 1
        assert session.get_one(Job, job_id).attempts == 1


def test_bad_input_fails_at_once_with_its_reason(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    paths = chest_series(tmp_path / "in", 0, slices=4)
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    job_id = queue_test_job(session_factory, paths)
    assert (
        execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id) is JobState.FAILED
    )
    with session_factory() as session:
        job = session.get_one(Job, job_id)
    assert job.attempts == 1
    assert job.error is not None and "InputError" in job.error and "PixelSpacing" in job.error


def test_unexpected_errors_back_off_then_quarantine(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queue_test_job(
        session_factory, chest_series(tmp_path / "in", 0, slices=4), max_attempts=2
    )

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("worker.runtime.jobs.run_series", broken)
    models = ModelCache("cpu")
    assert execute_job(session_factory, models, tmp_path / "r", job_id) is JobState.QUEUED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.not_before is not None and job.enqueued_at is None
        assert "CUDA out of memory" in (job.error or "")
    assert execute_job(session_factory, models, tmp_path / "r", job_id) is JobState.QUARANTINED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
    assert job.attempts == 2 and "RuntimeError" in (job.error or "")


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert backoff_seconds(50) == 600.0


class _Flagging:
    """The real model, with its output refused by a (test) quality gate."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner

    def predict(self, series: LoadedSeries) -> ModelOutput:
        output = self.inner.predict(series)
        output.review = ["test gate: lungs implausible"]
        return output


class _FlaggingCache(ModelCache):
    def get(self, spec: ModelSpec) -> Model:
        return _Flagging(super().get(spec))


def _sr_codes(items: Sequence[pydicom.Dataset]) -> set[str]:
    found: set[str] = set()
    for item in items:
        for key in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            found.update(str(c.CodeValue) for c in item.get(key, []))
        found |= _sr_codes(item.get("ContentSequence", []))
    return found


def test_a_flagged_result_is_needs_review_and_says_so_everywhere(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=8))
    state = execute_job(session_factory, _FlaggingCache("cpu"), tmp_path / "results", job_id)
    assert state is JobState.NEEDS_REVIEW
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.NEEDS_REVIEW and job.error is None
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one()
        assert result.review == "test gate: lungs implausible"
        assert result.measurements  # still recorded and shown
        outputs = {o.kind: Path(o.path) for o in result.outputs}
    report = json.loads(outputs["json"].read_text())
    assert report["status"] == "needs_review"
    assert report["review"] == ["test gate: lungs implausible"]
    seg, sr = pydicom.dcmread(outputs["seg"]), pydicom.dcmread(outputs["sr"])
    assert str(seg.SeriesDescription).endswith("NEEDS REVIEW")
    assert str(sr.SeriesDescription).endswith("NEEDS REVIEW")
    # Quality Assessment (DCM 111050) = For Physician Review (DCM 128201)
    assert {"111050", "128201"} <= _sr_codes(sr.ContentSequence)
    assert dciodvfy_errors(outputs["seg"]) == [] and dciodvfy_errors(outputs["sr"]) == []
    # a needs-review job is finished: a redelivery does nothing, a rerun may queue it again
    assert execute_job(session_factory, ModelCache("cpu"), tmp_path / "results", job_id) is None
    with session_factory.begin() as session:
        transition(session.get_one(Job, job_id), JobState.QUEUED)


def _sr_texts(items: Sequence[pydicom.Dataset]) -> set[str]:
    found: set[str] = set()
    for item in items:
        if "TextValue" in item:
            found.add(str(item.TextValue))
        found |= _sr_texts(item.get("ContentSequence", []))
    return found


def test_a_phantom_only_result_says_not_for_clinical_use_everywhere(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ModelSpec, "validation_for", lambda self, sha: "phantom-only")
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=8))
    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "results", job_id)
    assert state is JobState.SUCCEEDED  # the status marks a result, it does not flag it
    with session_factory() as session:
        result = session.scalars(select(Result).where(Result.job_id == job_id)).one()
        assert result.validation == "phantom-only"
        outputs = {o.kind: Path(o.path) for o in result.outputs}
    report = json.loads(outputs["json"].read_text())
    assert report["validation"] == "phantom-only" and report["not_for_clinical_use"] is True
    seg, sr = pydicom.dcmread(outputs["seg"]), pydicom.dcmread(outputs["sr"])
    assert str(seg.SeriesDescription).endswith("NOT FOR CLINICAL USE")
    assert str(sr.SeriesDescription).endswith("NOT FOR CLINICAL USE")
    texts = _sr_texts(sr.ContentSequence)
    assert {"validation status: phantom-only", "NOT FOR CLINICAL USE"} <= texts
    assert dciodvfy_errors(outputs["seg"]) == [] and dciodvfy_errors(outputs["sr"]) == []


def test_one_slice_for_a_volume_model_is_skipped_with_its_reason_and_counted(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    import fakeredis

    from db.models import Series, SeriesStatus
    from worker.ops.operations import status

    (path,) = chest_series(tmp_path / "in", 0, slices=1)
    job_id = queue_test_job(session_factory, [path])
    assert (
        execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id) is JobState.SKIPPED
    )
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        assert job.error is not None and "needs a volume" in job.error
        assert "Error" not in job.error  # a routing summary, not a traceback's class
        session.add(
            Series(
                study=job.series.study,
                series_instance_uid="1.2.3.4",
                modality="SR",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
                status=SeriesStatus.UNROUTED,
            )
        )
    summary = status(session_factory, fakeredis.FakeRedis(), None).skipped_reasons_day
    assert summary[job.error] == 1
    assert any(r.startswith("not an image: Comprehensive SR Storage") for r in summary)


def test_no_finding_is_an_answer_with_its_own_reason() -> None:
    """Issue 28 item 9: a job whose model found nothing ends ``skipped`` (a SkippedError),
    with a reason that says it is an answer, not a fault."""
    from worker.core.errors import NothingFoundError, SkippedError
    from worker.runtime.jobs import describe_failure

    found_nothing = NothingFoundError("no fetal head found in any frame")
    assert isinstance(found_nothing, SkippedError)
    assert describe_failure(found_nothing) == "no finding: no fetal head found in any frame"

"""Failures an operator can triage (issue 32 item 7): who and where on every failure row,
failed deliveries by destination with a C-ECHO test, "Retry all" leaves failures caused by
bad input, and reruns do not pile identical failed jobs on a study."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, DeliveryState, Job, JobState
from tests.support.dashboard_client import csrf_token, logged_in_client
from tests.support.factories import chest_series
from tests.support.history import with_result
from tests.support.jobs import add_job, queue_test_job, set_job
from worker.core.errors import InputError, PermanentError, RetryableError, SkippedError
from worker.core.settings import DicomDestination, Settings
from worker.devtools.localstack import free_port
from worker.ops.operations import retry
from worker.ops.reruns import rerun
from worker.runtime.jobs import failure_kind


def _identify(factory: sessionmaker[Session], job_id: int, patient: str, ae: str) -> None:
    with factory.begin() as session:
        series = session.get_one(Job, job_id).series
        series.modality, series.calling_ae = "CT", ae
        series.study.patient_id, series.study.accession_number = patient, f"ACC-{patient}"


def test_failure_kinds() -> None:
    assert failure_kind(InputError("no geometry")) == "input"
    assert failure_kind(PermanentError("no model")) == "permanent"
    assert failure_kind(RetryableError("disk full")) == "retryable"
    assert failure_kind(ValueError("x")) == "retryable"
    assert failure_kind(SkippedError("not for us")) is None


def test_retry_all_leaves_failures_caused_by_bad_input(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    bad = add_job(session_factory, "cpu", state=JobState.FAILED, error_kind="input", error="x")
    tired = add_job(session_factory, "cpu", state=JobState.QUARANTINED, error_kind="retryable")
    old = add_job(session_factory, "cpu", state=JobState.FAILED)  # before error_kind: retried
    client = logged_in_client(settings, session_factory)
    page = client.get("/failures").text
    assert "Retry all 2" in page and "1 failed on their input and are left" in page
    assert "<b>bad input</b>" in page.split(f'id="failure-{bad}"')[1].split("</tr>")[0]
    done = client.post("/failures/retry-all", data={"csrf": csrf_token(page)})
    assert done.status_code == 303
    assert "2 job(s) queued again; 1 left: they failed on their input" in client.get("/").text
    with session_factory() as session:
        states = {j: session.get_one(Job, j).state for j in (bad, tired, old)}
    assert states == {bad: JobState.FAILED, tired: JobState.QUEUED, old: JobState.QUEUED}
    assert retry(session_factory, [bad]) == [bad]  # named, it is retried


def test_jobs_and_failures_say_whose_study_and_from_where(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    failed = add_job(session_factory, "cpu", state=JobState.FAILED, error="boom")
    _identify(session_factory, failed, "PAT-7", "CT_ROOM1")
    sent, delivery = with_result(session_factory, JobState.SUCCEEDED, DeliveryState.FAILED)
    _identify(session_factory, sent, "PAT-8", "CT_ROOM2")
    client = logged_in_client(settings, session_factory)
    jobs = client.get("/jobs").text.split(f'id="job-row-{failed}"')[1].split("</tr>")[0]
    assert "PAT-7 · ACC-PAT-7" in jobs and "<td>CT_ROOM1</td>" in jobs
    failures = client.get("/failures").text
    row = failures.split(f'id="failure-{failed}"')[1].split("</tr>")[0]
    assert "PAT-7 · ACC-PAT-7" in row and "<td>CT</td>" in row and "CT_ROOM1" in row
    group = failures.split('id="destination-pacs"')[1].split("</section>")[0]
    assert "pacs: 1 failed" in group and f'id="delivery-failure-{delivery}"' in group
    assert "PAT-8 · ACC-PAT-8" in group and "(no longer configured)" in group

    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}
    listed = subprocess.run(
        [sys.executable, "-m", "worker.cli", "jobs", "--state", "failed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert re.search(
        rf"^ *{failed} +failed .* PAT-7 +ACC-PAT-7 +CT +CT_ROOM1 +boom", listed.stdout, re.M
    )
    with session_factory() as session:
        uid = session.get_one(Job, failed).series.study.study_instance_uid
    shown = subprocess.run(
        [sys.executable, "-m", "worker.cli", "show", uid],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "patient ID PAT-7  accession ACC-PAT-7" in shown.stdout, shown.stderr


def test_test_destination_echoes_it_and_records_it(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    with_result(session_factory, JobState.SUCCEEDED, DeliveryState.FAILED)
    port = free_port()
    node = AE(ae_title="PACS")
    node.add_supported_context(Verification)
    server = node.start_server(("127.0.0.1", port), block=False)
    try:
        up = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port)
        client = logged_in_client(settings, session_factory, destinations=[up])
        page = client.get("/failures").text
        assert 'id="echo-pacs"' in page and f"PACS@127.0.0.1:{port}" in page
        done = client.post("/destinations/pacs/echo", data={"csrf": csrf_token(page)})
        assert done.status_code == 303 and done.headers["location"] == "/failures#destination-pacs"
        assert (
            f"pacs (PACS@127.0.0.1:{port}) answered C-ECHO: status 0x0000"
            in client.get("/failures").text
        )
    finally:
        server.shutdown()
    closed = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    client = logged_in_client(settings, session_factory, destinations=[closed])
    token = csrf_token(client.get("/failures").text)
    client.post("/destinations/pacs/echo", data={"csrf": token})
    assert "did not answer C-ECHO" in client.get("/failures").text
    with session_factory() as session:
        details = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "echo")
        ).all()
    assert len(details) == 2 and "answered" in details[0] and "did not answer" in details[1]


def test_a_rerun_retries_the_identical_failed_job_instead_of_piling_a_new_one(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from worker.core.enqueue import input_key
    from worker.core.registry import get_spec

    spec = get_spec("lung-ct-threshold")

    def failed_job(name: str, seed: int, kind: str) -> int:
        job_id = queue_test_job(session_factory, chest_series(tmp_path / name, seed, slices=2))
        with session_factory() as session:
            uids = [i.sop_instance_uid for i in session.get_one(Job, job_id).series.instances]
        key = input_key(uids, spec.name, spec.version)
        set_job(
            session_factory,
            job_id,
            state=JobState.FAILED,
            error_kind=kind,
            input_key=key,
            model_version=spec.version,
            attempts=3,
        )
        return job_id

    flaky = failed_job("a", 0, "retryable")
    bad = failed_job("b", 1, "input")
    with session_factory() as session:
        before = session.scalar(select(func.count()).select_from(Job))
    assert rerun(session_factory, "lung-ct-threshold") == [flaky]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before  # no new job
        job = session.get_one(Job, flaky)
        assert (job.state, job.attempts, job.error_kind) == (JobState.QUEUED, 0, None)
        assert session.get_one(Job, bad).state is JobState.FAILED
    forced = rerun(session_factory, "lung-ct-threshold", force=True)
    assert len(forced) == 2 and flaky not in forced and bad not in forced

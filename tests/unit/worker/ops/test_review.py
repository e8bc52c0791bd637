"""A reviewer's decision on a needs_review result: recorded once (unless forced), only for
flagged results, and the result's withheld deliveries follow it."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, Job, JobState, Result, Series, Study
from worker.cli import main
from worker.core.settings import DicomDestination, Settings
from worker.ops.operations import OperationError
from worker.ops.review import decide

PACS = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
RESEARCH = DicomDestination(
    name="research", ae_title="R", host="127.0.0.1", port=105, send_not_validated=True
)
DESTINATIONS = [PACS, RESEARCH]
NEEDS_REVIEW = "withheld: needs review (the destination has send_needs_review off)"


def _job(
    session_factory: sessionmaker[Session],
    state: JobState = JobState.NEEDS_REVIEW,
    validation: str = "validated-real",
    deliveries: tuple[str, ...] = ("pacs", "research"),
) -> int:
    with session_factory.begin() as session:
        uid = f"1.2.9.{session.query(Series).count() + 1}"
        series = Series(study=Study(study_instance_uid=uid), series_instance_uid=uid)
        job = Job(series=series, model_name="m", model_version="1", queue="cpu", state=state)
        job.results.append(
            Result(
                model_name="m",
                model_version="1",
                validation=validation,
                review="gate: odd (0.5 < 0.9)" if state is JobState.NEEDS_REVIEW else None,
                deliveries=[
                    Delivery(destination=d, state=DeliveryState.WITHHELD, error=NEEDS_REVIEW)
                    for d in deliveries
                ],
            )
        )
        session.add(job)
        session.flush()
        return job.id


def _deliveries(session_factory: sessionmaker[Session], job_id: int) -> dict[str, Delivery]:
    with session_factory() as session:
        result = session.get_one(Job, job_id).results[-1]
        return {d.destination: d for d in result.deliveries}


def test_accepting_records_who_when_why_and_releases_the_deliveries(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _job(session_factory)
    done = decide(
        session_factory, job_id, "accepted", by="dr x", note="fine", destinations=DESTINATIONS
    )
    assert done.released == ["pacs", "research"] and done.withheld == []
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        result = job.results[-1]
        assert job.state is JobState.NEEDS_REVIEW  # the run's outcome; the decision is beside it
        assert (result.review_decision, result.reviewed_by, result.review_note) == (
            "accepted",
            "dr x",
            "fine",
        )
        assert result.reviewed_at is not None
    deliveries = _deliveries(session_factory, job_id)
    assert {d.state for d in deliveries.values()} == {DeliveryState.PENDING}
    assert all(d.error is None and d.enqueued_at is None for d in deliveries.values())


def test_an_accepted_phantom_result_still_goes_only_where_not_validated_is_allowed(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _job(session_factory, validation="phantom-only")
    done = decide(session_factory, job_id, "accepted", by="dr x", destinations=DESTINATIONS)
    assert done.released == ["research"] and done.withheld == ["pacs"]
    pacs = _deliveries(session_factory, job_id)["pacs"]
    assert pacs.state is DeliveryState.WITHHELD and "send_not_validated" in (pacs.error or "")


def test_rejecting_withholds_for_good_and_deciding_twice_needs_force(
    session_factory: sessionmaker[Session],
) -> None:
    job_id = _job(session_factory)
    decide(session_factory, job_id, "rejected", by="dr y", destinations=DESTINATIONS)
    assert all(
        d.state is DeliveryState.WITHHELD and "rejected" in (d.error or "")
        for d in _deliveries(session_factory, job_id).values()
    )
    with pytest.raises(OperationError, match="already rejected by dr y"):
        decide(session_factory, job_id, "accepted", by="dr z", destinations=DESTINATIONS)
    decide(session_factory, job_id, "accepted", by="dr z", force=True, destinations=DESTINATIONS)
    assert {d.state for d in _deliveries(session_factory, job_id).values()} == {
        DeliveryState.PENDING
    }


def test_only_needs_review_results_are_decided(session_factory: sessionmaker[Session]) -> None:
    job_id = _job(session_factory, state=JobState.SUCCEEDED)
    with pytest.raises(OperationError, match="only needs_review"):
        decide(session_factory, job_id, "accepted", by="dr x")
    with pytest.raises(OperationError, match="no job"):
        decide(session_factory, 999, "accepted", by="dr x")
    with pytest.raises(OperationError, match="--by"):
        decide(session_factory, job_id, "accepted", by=" ")


def test_medseg_review_command(
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("worker.cli.ops._session_factory", lambda: session_factory)
    job_id = _job(session_factory, deliveries=("pacs",))
    argv = ["review", str(job_id), "accept", "--by", "dr x", "--note", "checked"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"job {job_id} accepted by dr x" in out
    assert main(argv) == 1
    assert "already accepted" in capsys.readouterr().err
    assert main([*argv[:2], "reject", "--by", "dr x", "--force"]) == 0
    with session_factory() as session:
        assert session.get_one(Job, job_id).results[-1].review_decision == "rejected"


def test_the_worklist_lists_undecided_results_oldest_first_with_their_reasons(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Issue 32 item 6: accepted and rejected results leave the worklist; the dashboard's
    /review page (the overview's "awaiting review" link) and `medseg review --pending` show it."""
    import os
    import subprocess
    import sys
    from datetime import timedelta

    from db.models import utcnow
    from tests.support.dashboard_client import logged_in_client
    from tests.support.jobs import set_job
    from worker.ops.review import pending_reviews

    newer, older, accepted, rejected = (_job(session_factory) for _ in range(4))
    set_job(session_factory, older, finished_at=utcnow() - timedelta(hours=2))
    set_job(session_factory, newer, finished_at=utcnow() - timedelta(minutes=5))
    decide(session_factory, accepted, "accepted", by="dr x")
    decide(session_factory, rejected, "rejected", by="dr x")
    pending = pending_reviews(session_factory)
    assert [p.job_id for p in pending] == [older, newer]
    assert pending[0].reasons == ["gate: odd (0.5 < 0.9)"] and pending[0].waiting_s >= 7199

    client = logged_in_client(settings, session_factory)
    assert 'href="/review">awaiting review</a>' in client.get("/").text
    page = client.get("/review").text
    assert "2 result(s) awaiting review" in page
    assert page.index(f'id="pending-{older}"') < page.index(f'id="pending-{newer}"')
    assert f'id="pending-{accepted}"' not in page and f'id="pending-{rejected}"' not in page
    assert "gate: odd (0.5 &lt; 0.9)" in page

    listed = subprocess.run(
        [sys.executable, "-m", "worker.cli", "review", "--pending"],
        env={**os.environ, "MEDSEG_DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert rows == [str(older), str(newer)]
    assert "2 h 0 min" in listed.stdout and "gate: odd (0.5 < 0.9)" in listed.stdout
    bare = subprocess.run(
        [sys.executable, "-m", "worker.cli", "review"],
        env={**os.environ, "MEDSEG_DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bare.returncode == 2 and "--pending" in bare.stderr

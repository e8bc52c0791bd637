"""Migration 0008 (audit trail, job attempts, job log lines) on PostgreSQL: up from 0007 with
jobs that already ran (one attempt each is kept from the job row), down and up again, and an
audited retry under PostgreSQL's row locks."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import select, text

from db.jobstate import transition
from db.migrate import alembic_config, current, head, upgrade
from db.models import AuditEvent, Job, JobAttempt, JobState
from db.session import make_engine, make_session_factory
from tests.conftest import fresh_postgres_database
from worker.ops.audit import Actor
from worker.ops.operations import retry

pytestmark = pytest.mark.integration


def test_migration_0008_on_postgres_keeps_what_jobs_ran_and_records_a_retry(
    postgres_url: str,  # PostgreSQL is there (else skipped); this test makes its own database
) -> None:
    with fresh_postgres_database("medseg_audit") as url:
        command.downgrade(alembic_config(url), "0007")
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO study (id, study_instance_uid, created_at)"
                        " VALUES (1, '1.2.3', now());"
                        "INSERT INTO series (id, study_id, series_instance_uid, modality,"
                        " body_part_examined, series_description, image_type, sop_class_uid,"
                        " calling_ae, status, first_received_at, last_received_at)"
                        " VALUES (1, 1, '1.2.3.1', 'CT', '', '', '', '', '', 'complete',"
                        " now(), now());"
                        "INSERT INTO job (id, series_id, model_name, model_version, queue, state,"
                        " attempts, max_attempts, error, worker, created_at, started_at,"
                        " finished_at) VALUES"
                        " (1, 1, 'm', '1', 'cpu', 'failed', 1, 3, 'no lungs', 'medseg@a', now(),"
                        " now(), now()),"
                        " (2, 1, 'm', '1', 'cpu', 'queued', 0, 3, NULL, NULL, now(), NULL, NULL)"
                    )
                )
            upgrade(url)
            assert current(url) == head()
            factory = make_session_factory(engine)
            with factory() as session:
                [kept] = session.scalars(select(JobAttempt)).all()
            assert (kept.job_id, kept.number, kept.outcome) == (1, 1, "failed")
            assert (kept.error, kept.worker) == ("no lungs", "medseg@a")

            assert retry(factory, [1], actor=Actor("alice", "dashboard")) == [1]
            with factory.begin() as session:
                job = session.get_one(Job, 1)
                job.worker = "medseg@b"
                transition(job, JobState.RUNNING)
            with factory() as session:
                numbers = session.scalars(
                    select(JobAttempt.number).where(JobAttempt.job_id == 1)
                ).all()
                [event] = session.scalars(select(AuditEvent)).all()
            assert sorted(numbers) == [1, 2]
            assert (event.actor, event.action, event.job_id, event.study_id) == (
                "alice",
                "retry",
                1,
                1,
            )

            command.downgrade(alembic_config(url), "0007")
            upgrade(url)
            assert current(url) == head()
        finally:
            engine.dispose()

"""Rows for the audit and history tests: a job with a result and one delivery."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, JobState, Result
from tests.support.jobs import add_job


def with_result(
    factory: sessionmaker[Session],
    state: JobState,
    delivery: DeliveryState,
    review: str | None = None,
) -> tuple[int, int]:
    """A job in ``state`` with one result and one delivery to pacs: (job id, delivery id)."""
    job_id = add_job(factory, "cpu", state=state, attempts=1)
    with factory.begin() as session:
        row = Delivery(destination="pacs", state=delivery, attempts=5, error="PACS down")
        session.add(
            Result(
                job_id=job_id,
                model_name="m",
                model_version="1",
                validation="validated-real",
                review=review,
                deliveries=[row],
            )
        )
        session.flush()
        return job_id, row.id

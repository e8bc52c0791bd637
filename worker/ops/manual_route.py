"""Send a series to a model by hand (``medseg route``, the study page's "Send to model"): for
a series no model accepts (a CR tagged OT, a CT without a body part) or whose job failed, an
operator names the model, as mercure allows. The model's own routing rule is not asked; the
job is queued like any other and audited (``route``)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Series, SeriesStatus
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import OperationError, model_to_run

logger = logging.getLogger(__name__)


def find_series(session: Session, key: str | int) -> Series | None:
    """A series by our ID (an int, or digits) or by its Series Instance UID."""
    if isinstance(key, int) or key.isdigit():
        found = session.get(Series, int(key))
        if found is not None or isinstance(key, int):
            return found
    return session.scalars(select(Series).where(Series.series_instance_uid == str(key))).first()


def route_by_hand(
    session_factory: sessionmaker[Session],
    series_key: str | int,
    model_name: str,
    *,
    force: bool = False,
    max_attempts: int = 3,
    actor: Actor | None = None,
) -> int:
    """Queue a job of ``model_name`` for the series; returns its ID. Refused while the series
    is still receiving, and when an identical job waits, runs or succeeded (unless
    ``force``)."""
    with refusals(session_factory, actor, "route"):
        return _route(
            session_factory, series_key, model_name, force=force, attempts=max_attempts, actor=actor
        )


def _route(
    session_factory: sessionmaker[Session],
    series_key: str | int,
    model_name: str,
    *,
    force: bool,
    attempts: int,
    actor: Actor | None,
) -> int:
    from worker.core.enqueue import queue_job

    spec = model_to_run(model_name)
    with session_factory.begin() as session:
        series = find_series(session, series_key)
        if series is None:
            raise OperationError(f"no series {series_key}")
        if series.status is SeriesStatus.RECEIVING:
            raise OperationError(
                f"series {series.id} is still receiving: send it to a model once it is complete"
            )
        job_id = queue_job(session, series.id, spec, attempts, force=force)
        if job_id is None:
            raise OperationError(
                f"series {series.id} already has an identical {model_name} job waiting, running "
                "or done (force to run it again)"
            )
        was = series.status.value
        series.status = SeriesStatus.COMPLETE  # routed now: no longer "no model accepts it"
        record(
            session,
            actor,
            "route",
            job_id=job_id,
            detail=f"series {series.id} ({was}, {series.modality or 'no modality'}) sent to "
            f"{spec.name} {spec.version} by hand" + (" (forced)" if force else ""),
        )
    logger.info("series sent to %s by hand: job %s", model_name, job_id)
    return job_id

"""The study page's charts, each as PNG (the page) or PDF (a report): the HC on the
INTERGROWTH-21st chart, the fetal brain volume against its reference, and a patient's lung
volumes over all their studies. 404 where the data for one is missing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from worker.dashboard import deps
from worker.dashboard.plotting import FORMATS

router = APIRouter()

User = Annotated[str, Depends(deps.require_user)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]
T = TypeVar("T")


def _chart(data: T | None, draw: Callable[[T, str], bytes], fmt: str, missing: str) -> Response:
    """``draw(data, fmt)`` as the response; 404 for a format other than png or pdf, and with
    ``missing`` where there is no ``data``."""
    if fmt not in FORMATS:
        raise HTTPException(404, f"no chart as {fmt!r}: png or pdf")
    if data is None:
        raise HTTPException(404, missing)
    return Response(draw(data, fmt), media_type=FORMATS[fmt])


@router.get("/jobs/{job_id}/growth.{fmt}")
def growth_chart(user: User, factory: Factory, job_id: int, fmt: str) -> Response:
    """The job's HC on the INTERGROWTH-21st chart."""
    from worker.dashboard.growth_chart import hc_chart, job_point

    missing = f"job {job_id} has no HC with a gestational age by dates"
    return _chart(job_point(factory, job_id), hc_chart, fmt, missing)


@router.get("/jobs/{job_id}/brain-growth.{fmt}")
def brain_growth_chart(user: User, factory: Factory, job_id: int, fmt: str) -> Response:
    """The job's fetal brain volume against the intracranial volume reference."""
    from worker.dashboard.brain_chart import brain_chart, job_point

    missing = f"job {job_id} has no brain volume with a GA by dates"
    return _chart(job_point(factory, job_id), brain_chart, fmt, missing)


@router.get("/studies/{study_id}/lung-volumes.{fmt}")
def lung_volumes_chart(user: User, factory: Factory, study_id: int, fmt: str) -> Response:
    """The lung volumes of the study's patient over all their studies."""
    from worker.dashboard.lung_trend import lung_chart, patient_rows

    with factory() as session:
        rows = patient_rows(session, study_id)
    missing = f"no lung volumes for the patient of study {study_id}"
    return _chart(rows or None, lung_chart, fmt, missing)

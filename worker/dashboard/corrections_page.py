"""Corrections on the dashboard: a reviewer moves a fetal head result's ellipse on the study
page (POST /jobs/{id}/correct, CSRF and role checked as the review form is; recorded by
``worker.ops.corrections.request_ellipse`` and applied by the worker), and /corrections lists
every correction: its state, who, when, what it changed, and why a received SEG is unmatched
or a correction failed."""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from db.models import CorrectionState, Job
from worker.corrections.ellipse import FIELDS, EllipseError, checked
from worker.dashboard import deps
from worker.dashboard.actions import _actor, _allow, _check_csrf
from worker.models.fetal_head.biometry import Ellipse
from worker.ops import operations
from worker.ops.corrections import CORRECTABLE, list_corrections, request_ellipse
from worker.ops.people import Person

logger = logging.getLogger(__name__)

router = APIRouter()

User = Annotated[Person, Depends(deps.require_person)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]
Value = Annotated[str, Form()]


def ellipses(session: Session, jobs: list[Job]) -> dict[int, dict[str, float]]:
    """For each job a reviewer may correct an ellipse of now (a finished fetal head result):
    its latest result's ellipse, keyed by result ID, as the form's five values (rounded)."""
    from worker.corrections.current import current_ellipse

    found: dict[int, dict[str, float]] = {}
    for job in jobs:
        if job.state not in CORRECTABLE or not job.results:
            continue
        result = job.results[-1]
        ellipse = current_ellipse(session, result, job.series)
        if ellipse is not None:
            found[result.id] = _values(ellipse)
    return found


def _values(ellipse: Ellipse) -> dict[str, float]:
    shown = (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle_deg)
    return {name: round(value, 2) for name, value in zip(FIELDS, shown, strict=True)}


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EllipseError(f"{name}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise EllipseError(f"{name} must be a finite number")
    return value


@router.post("/jobs/{job_id}/correct")
def correct(
    request: Request,
    *,
    user: User,
    factory: Factory,
    job_id: int,
    csrf: Annotated[str, Form()],
    cx: Value,
    cy: Value,
    a: Value,
    b: Value,
    angle: Value,
    note: Value = "",
) -> Response:
    """Record the logged-in reviewer's ellipse for job ``job_id``'s fetal head result."""
    _check_csrf(request, csrf)
    _allow(request, user, "correct", job_id=job_id)
    try:
        raw = {"cx": cx, "cy": cy, "a": a, "b": b, "angle": angle}
        ellipse = checked({name: _number(name, text) for name, text in raw.items()})
        correction = request_ellipse(
            factory,
            job_id,
            _exact(ellipse),
            by=user.name,
            note=note.strip()[:500] or None,
            actor=_actor(user),
        )
    except (EllipseError, operations.OperationError) as exc:
        request.session["flash"] = f"not corrected: {exc}"
    else:
        request.session["flash"] = (
            f"correction {correction} of job {job_id} recorded: the worker recomputes the "
            "measurements and delivers the corrected result"
        )
        logger.info("dashboard: %s corrected job %s (%s)", user.name, job_id, correction)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _exact(ellipse: Ellipse) -> dict[str, float]:
    shown = (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle_deg)
    return dict(zip(FIELDS, shown, strict=True))


@router.get("/corrections")
def corrections(
    request: Request,
    *,
    user: User,
    factory: Factory,
    state: str = "",
) -> Response:
    states = [s.value for s in CorrectionState]
    if state and state not in states:
        raise HTTPException(400, f"state is one of {', '.join(states)}")
    return deps.page(
        request,
        "corrections.html",
        rows=list_corrections(factory, state=state or None),
        states=states,
        state=state,
    )

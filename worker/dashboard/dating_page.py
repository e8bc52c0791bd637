"""The study page's "GA by dates" form: a reviewer enters the last menstrual period or the
GA on the study date, or clears it (POST /studies/{id}/ga, CSRF and role checked as the
review form is; stored and audited by ``worker.ops.dating.set_dating``)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from worker.dashboard import deps
from worker.dashboard.actions import _actor, _check_csrf
from worker.ops import operations, people
from worker.ops.dating import DatingError, parse_ga, parse_lmp, set_dating
from worker.ops.people import Person

logger = logging.getLogger(__name__)

router = APIRouter()

User = Annotated[Person, Depends(deps.require_person)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]
KINDS = ("lmp", "ga", "clear")


@router.post("/studies/{study_id}/ga")
def enter_ga(
    request: Request,
    *,
    user: User,
    factory: Factory,
    study_id: int,
    csrf: Annotated[str, Form()],
    kind: Annotated[str, Form()],
    value: Annotated[str, Form()] = "",
) -> Response:
    """Store the logged-in reviewer's GA by dates for study ``study_id``."""
    _check_csrf(request, csrf)
    if kind not in KINDS:
        raise HTTPException(400, f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    try:
        people.authorize(factory, user, "set_ga", _actor(user), study_id=study_id)
    except people.NotAllowedError as exc:
        raise HTTPException(403, f"not allowed: {exc} (ask an admin for another role)") from exc
    try:
        found = set_dating(
            factory,
            study_id,
            lmp=parse_lmp(value) if kind == "lmp" else None,
            ga_days=parse_ga(value) if kind == "ga" else None,
            actor=_actor(user),
        )
    except (DatingError, operations.OperationError) as exc:
        request.session["flash"] = f"GA by dates not saved: {exc}"
    else:
        request.session["flash"] = (
            "GA by dates cleared: the DICOM LMP is used"
            if found is None
            else f"GA by dates {int(found.days) // 7}w{int(found.days) % 7}d saved"
        )
        logger.info("dashboard: %s set the GA by dates of study %s", user.name, study_id)
    return RedirectResponse(f"/studies/{study_id}", status_code=303)


@router.get("/studies/{study_id}/ga")
def ga_form(user: User, study_id: int) -> Response:
    """The form lives on the study page: a GET of its address goes there."""
    return RedirectResponse(f"/studies/{study_id}#study-ga", status_code=303)

"""/audit: the audit trail (``worker.ops.audit``) on the dashboard, filtered by user, action,
study and period, newest first. Filters are operators' names, action names and our integer
study IDs: nothing that names a patient goes into the URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, utcnow
from worker.dashboard import deps
from worker.dashboard.views import SINCE
from worker.ops.audit import ACTIONS, list_events

router = APIRouter()

User = Annotated[str, Depends(deps.require_user)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]
LIMIT = 500


@router.get("/audit")
def audit(
    request: Request,
    *,
    user: User,
    factory: Factory,
    who: str = "",
    action: str = "",
    study: str = "",
    since: str = "",
) -> Response:
    problems = []
    study_id: int | None = None
    if study.strip():
        try:
            study_id = int(study)
        except ValueError:
            problems.append(f"study: {study!r} is not a study number")
    if since and since not in SINCE:
        problems.append(f"unknown period {since!r}")
    with factory() as session:
        actors = sorted(session.scalars(select(AuditEvent.actor).distinct()).all())
        recorded = set(session.scalars(select(AuditEvent.action).distinct()).all())
    events = (
        []
        if problems
        else list_events(
            factory,
            since=utcnow() - SINCE[since] if since else None,
            user=who or None,
            action=action or None,
            study_id=study_id,
            limit=LIMIT,
        )
    )
    return deps.page(
        request,
        "audit.html",
        status_code=400 if problems else 200,
        events=events,
        problems=problems,
        actors=actors,
        actions=sorted(set(ACTIONS) | recorded),
        periods=list(SINCE),
        selected={"who": who, "action": action, "study": study, "since": since},
        limit=LIMIT,
    )

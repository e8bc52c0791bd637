"""The study browser: /studies lists studies, searched and paged (``worker.ops.studies``).

The search form is a POST: its values (a patient ID, an accession number) are kept
server-side with the login's session (``auth.SessionRegistry``), never in a URL or in the
cookie (signed, but readable), so neither the access log, the browser's history nor a
copied cookie holds them. The URL carries only the page and the sort, which name no one."""

from __future__ import annotations

import logging
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from worker.dashboard import deps
from worker.dashboard.actions import _check_csrf
from worker.dashboard.auth import SessionRegistry
from worker.ops import studies

logger = logging.getLogger(__name__)

router = APIRouter()

User = Annotated[str, Depends(deps.require_user)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]
Field = Annotated[str, Form()]

#: The session key holding the current search (form field -> value, all strings).
SEARCH_KEY = "study_search"
PER_PAGE = 50


def _sessions(request: Request) -> SessionRegistry:
    registry: SessionRegistry = request.app.state.sessions
    return registry


def _sid(request: Request) -> str:
    return str(request.session.get("sid", ""))


def _date(name: str, text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise studies.SearchError(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from exc


def _filters(values: dict[str, str]) -> studies.StudyFilter:
    return studies.StudyFilter(
        patient_id=values.get("patient_id", ""),
        accession=values.get("accession", ""),
        since=_date("from", values.get("since", "")),
        until=_date("to", values.get("until", "")),
        modality=values.get("modality", ""),
        calling_ae=values.get("calling_ae", ""),
        state=values.get("state", ""),
        model=values.get("model", ""),
    )


@router.get("/studies")
def browse(
    request: Request,
    *,
    user: User,
    factory: Factory,
    page: int = 1,
    sort: str = "received",
    order: str = "desc",
) -> Response:
    from worker.core.registry import all_specs

    saved = _sessions(request).get(_sid(request), SEARCH_KEY)
    values = {str(k): str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}
    problems: list[str] = []
    result = None
    try:
        if sort not in studies.SORTS:
            raise studies.SearchError(f"unknown sort {sort!r}")
        result = studies.search(
            factory,
            _filters(values),
            sort=sort,
            descending=order != "asc",
            page=page,
            per_page=PER_PAGE,
        )
    except studies.SearchError as exc:
        problems.append(str(exc))
    return deps.page(
        request,
        "studies.html",
        status_code=400 if problems else 200,
        result=result,
        problems=problems,
        search=values,
        states=studies.STATES,
        models=sorted(spec.name for spec in all_specs()),
        sorts=studies.SORTS,
        sort=sort,
        order="asc" if order == "asc" else "desc",
        date_text=studies.study_date_text,
    )


@router.post("/studies")
def set_search(
    request: Request,
    *,
    user: User,
    csrf: Field,
    patient_id: Field = "",
    accession: Field = "",
    since: Field = "",
    until: Field = "",
    modality: Field = "",
    calling_ae: Field = "",
    state: Field = "",
    model: Field = "",
    clear: Field = "",
) -> Response:
    """Keep the search in the session and show its first page (Post/Redirect/Get)."""
    _check_csrf(request, csrf)
    given = {
        "patient_id": patient_id,
        "accession": accession,
        "since": since,
        "until": until,
        "modality": modality,
        "calling_ae": calling_ae,
        "state": state,
        "model": model,
    }
    if clear:
        _sessions(request).discard(_sid(request), SEARCH_KEY)
    else:
        kept = {k: v.strip() for k, v in given.items() if v.strip()}
        _sessions(request).put(_sid(request), SEARCH_KEY, kept)
    return RedirectResponse("/studies", status_code=303)

"""/shadow: the model versions installed in shadow or promoted, and for a model, a live and a
shadow version the comparison ``medseg compare`` prints (worker.shadow.compare): Dice,
Bland-Altman per measurement, gate flag rates, error against the reviewers. Read-only;
installing and promoting are CLI commands (audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from worker.core.registry import get_spec
from worker.dashboard import deps
from worker.shadow.compare import compare
from worker.shadow.installs import installs

router = APIRouter()

User = Annotated[str, Depends(deps.require_user)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]


def _shipped(model: str) -> str:
    try:
        return get_spec(model).version
    except KeyError:
        return ""


@router.get("/shadow")
def shadow(
    request: Request,
    *,
    user: User,
    factory: Factory,
    model: str = "",
    live: str = "",
    version: str = "",
) -> Response:
    installed = installs(factory)
    comparison = compare(factory, model, live, version) if model and live and version else None
    return deps.page(
        request,
        "shadow.html",
        installed=installed,
        shipped={i.model: _shipped(i.model) for i in installed},
        comparison=comparison,
        agreement=comparison.agreement() if comparison else {},
        rates=comparison.flag_rates() if comparison else {},
        errors=comparison.reviewer_errors() if comparison else {},
        dice=comparison.dice_summary() if comparison else None,
        reviewer_dice=comparison.reviewer_dice() if comparison else None,
        decisions=comparison.decisions() if comparison else {},
    )

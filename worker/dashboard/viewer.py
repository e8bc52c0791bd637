"""The study page's image viewer: per job, the bounds of its slice/frame scroller, its window
presets and its legend (worker.dashboard.overlay), the site's "open in viewer" links, and
the small script of our own that drives the controls (served from this package)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, Study
from worker.core.viewer_link import viewer_url
from worker.dashboard import deps
from worker.dashboard.overlay import OverlayView, overlay_view

logger = logging.getLogger(__name__)

router = APIRouter()

SCRIPT = Path(__file__).parent / "static" / "viewer.js"


@router.get("/static/viewer.js")
def script(user: Annotated[str, Depends(deps.require_user)]) -> Response:
    """The viewer's controls: our own script, no library, no network."""
    return Response(
        SCRIPT.read_bytes(),
        media_type="text/javascript",
        headers={"Cache-Control": "private, max-age=300"},
    )


def study_viewers(
    session_factory: sessionmaker[Session], jobs: Iterable[Job]
) -> dict[int, OverlayView]:
    """Job ID -> its viewer, for the jobs whose latest result has a readable SEG. A SEG that
    cannot be read leaves its job without a viewer (logged), never the page without a body."""
    views: dict[int, OverlayView] = {}
    for job in jobs:
        if not job.results:
            continue
        try:
            view = overlay_view(session_factory, job.id)
        except Exception as exc:  # any unreadable file: that one viewer is left out
            logger.warning("job %d: overlay unreadable (%s)", job.id, type(exc).__name__)
            continue
        if view is not None:
            views[job.id] = view
    return views


def viewer_links(template: str, study: Study) -> dict[int, str]:
    """Series ID -> the site viewer's URL for it; empty when no template is configured."""
    links: dict[int, str] = {}
    for series in study.series:
        url = viewer_url(template, study.study_instance_uid, series.series_instance_uid)
        if url is not None:
            links[series.id] = url
    return links

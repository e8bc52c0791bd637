"""What every page needs: the logged-in user, the shared objects, the template context."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from worker.core.settings import Settings
from worker.dashboard.auth import csrf_token, logged_in_user


def require_user(request: Request) -> str:
    from worker.dashboard.app import LoginRequiredError

    user = logged_in_user(request)
    if user is None:
        raise LoginRequiredError
    return user


def session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """Render ``template`` with the user, the CSRF token and a one-time flash message."""
    from worker.dashboard.app import TEMPLATES

    # A live page's poll (static/live.js) leaves the flash to the page the user loads.
    live = request.headers.get("x-medseg-live") == "1"
    flash = None if live else request.session.pop("flash", None)
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "user": logged_in_user(request),
            "csrf": csrf_token(request),
            "flash": flash,
            **context,
        },
        status_code=status_code,
    )


def safe_next(target: str, default: str) -> str:
    """Only our own paths: no scheme, no host, no protocol-relative ``//``."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default

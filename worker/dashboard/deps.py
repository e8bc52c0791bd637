"""What every page needs: the logged-in user, the shared objects, the template context."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from worker.core.settings import Settings
from worker.dashboard.auth import (
    ACCOUNT,
    csrf_token,
    log_out,
    logged_in_user,
    session_kind,
)
from worker.ops import people
from worker.ops.people import Person


def logged_in_person(request: Request) -> Person | None:
    """Who is logged in now: the bootstrap admin (role admin), or a named account read again
    on each request (a disabled account's sessions end, a changed role applies at once)."""
    cached = getattr(request.state, "person", None)
    if isinstance(cached, Person):
        return cached
    name = logged_in_user(request)
    if name is None:
        return None
    if session_kind(request) == ACCOUNT:
        person = people.current(request.app.state.session_factory, name)
        if person is None:
            log_out(request)
            return None
    else:
        config: Settings = request.app.state.settings
        if name != config.dashboard_user or not config.dashboard_password_hash:
            return None
        person = Person(name, "admin")
    request.state.person = person
    return person


def require_person(request: Request) -> Person:
    from worker.dashboard.app import LoginRequiredError

    person = logged_in_person(request)
    if person is None:
        raise LoginRequiredError
    return person


def require_user(request: Request) -> str:
    """The logged-in person's name (any role: every page is readable by a viewer)."""
    return require_person(request).name


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
    config: Settings = request.app.state.settings
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "user": logged_in_user(request),
            "person": logged_in_person(request),
            "csrf": csrf_token(request),
            "flash": flash,
            "sso_label": config.oidc_label if config.oidc_issuer else None,
            "live_period": f"{config.dashboard_live_seconds:g}",
            **context,
        },
        status_code=status_code,
    )


def safe_next(target: str, default: str) -> str:
    """Only our own paths: no scheme, no host, no protocol-relative ``//``."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default

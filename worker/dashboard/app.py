"""The dashboard's FastAPI application: settings and dependencies in, routes and middleware."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.sessions import SessionMiddleware

from worker.core.broker_probe import BrokerProbe
from worker.core.settings import Settings
from worker.dashboard import sso
from worker.dashboard.auth import SessionRegistry, check_hash_format
from worker.dashboard.throttle import LoginThrottle

logger = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
STATIC_DIR = Path(__file__).parent / "static"
SESSION_MAX_AGE_S = 12 * 3600

_HEADERS = {
    # Everything is served by us: no CDN, no inline script (only our static/viewer.js and
    # static/live.js), inline CSS only.
    "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DashboardConfigError(RuntimeError):
    """The dashboard cannot start as configured; the message says what to set."""


class LoginRequiredError(Exception):
    """Raised by pages when nobody is logged in: answered with a redirect to /login."""


async def _security_headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
    response = await call_next(request)
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.broker_probe.stop()  # its thread ends with the server


_TITLES = {400: "Bad request", 403: "Refused", 404: "Not found", 422: "Bad request"}


async def _error_page(request: Request, exc: Exception) -> Response:
    """An error as a page with one line saying what is wrong, not FastAPI's JSON."""
    from worker.dashboard.deps import page

    if isinstance(exc, RequestValidationError):
        status_code = 422
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
    elif isinstance(exc, StarletteHTTPException):
        status_code, message = exc.status_code, str(exc.detail)
    else:  # registered for the two classes above only
        raise exc
    response = page(
        request,
        "error.html",
        status_code=status_code,
        title=_TITLES.get(status_code, f"Error {status_code}"),
        message=message,
    )
    for name, value in (getattr(exc, "headers", None) or {}).items():
        response.headers[name] = value
    return response


def _has_accounts(session_factory: sessionmaker[Session]) -> bool:
    """Whether an enabled account exists; no when the database cannot say (unreachable, not
    migrated): with no bootstrap admin and no single sign-on nobody could log in."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from db.models import Account

    try:
        with session_factory() as session:
            query = select(func.count(Account.id)).where(Account.disabled_at.is_(None))
            return bool(session.scalar(query))
    except SQLAlchemyError:
        logger.warning("dashboard: database unreachable or not migrated: no accounts read")
        return False


def create_app(
    settings: Settings,
    session_factory: sessionmaker[Session],
    redis_client: Any | None = None,
    celery_app: Any | None = None,
) -> FastAPI:
    """The dashboard for ``settings``; refuses to build without a way to log in: the
    bootstrap admin's valid password hash, single sign-on or a named account."""
    if settings.dashboard_password_hash:
        try:
            check_hash_format(settings.dashboard_password_hash)
        except ValueError as exc:
            raise DashboardConfigError(str(exc)) from exc
    elif not settings.oidc_issuer and not _has_accounts(session_factory):
        raise DashboardConfigError(
            "MEDSEG_DASHBOARD_PASSWORD_HASH is not set: make one with "
            "`medseg dashboard hash-password` and set it, or add an account with "
            "`medseg users add NAME --role admin`, or configure single sign-on "
            "(MEDSEG_OIDC_ISSUER); the dashboard has no open mode"
        )
    secret = settings.dashboard_secret_key
    if not secret:
        secret = secrets.token_urlsafe(32)
        logger.info("no MEDSEG_DASHBOARD_SECRET_KEY: sessions last until this process stops")

    app = FastAPI(
        title="medseg dashboard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.redis = redis_client
    app.state.celery = celery_app
    # Queue depths and workers read in the background: the overview never waits on the broker.
    app.state.broker_probe = BrokerProbe(
        redis_client, celery_app, settings.broker_key_prefix
    ).start()
    app.state.login_throttle = LoginThrottle()
    app.state.sessions = SessionRegistry(SESSION_MAX_AGE_S)
    app.state.oidc = sso.make_client(settings) if settings.oidc_issuer else None
    app.add_middleware(BaseHTTPMiddleware, dispatch=_security_headers)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="medseg_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=settings.dashboard_secure_cookie,
    )

    async def _to_login(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    app.add_exception_handler(LoginRequiredError, _to_login)
    app.add_exception_handler(StarletteHTTPException, _error_page)
    app.add_exception_handler(RequestValidationError, _error_page)

    from fastapi.staticfiles import StaticFiles

    from worker.dashboard import (
        actions,
        audit_page,
        browser,
        charts,
        corrections_page,
        dating_page,
        preview,
        shadow_page,
        viewer,
        views,
    )

    app.include_router(views.router)
    app.include_router(actions.router)
    app.include_router(viewer.router)  # /static/viewer.js behind the login, before the mount
    app.include_router(browser.router)
    app.include_router(charts.router)
    app.include_router(audit_page.router)
    app.include_router(shadow_page.router)
    app.include_router(corrections_page.router)
    app.include_router(dating_page.router)
    app.include_router(preview.router)
    app.include_router(sso.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    from worker.corrections.reference import install

    install()  # /shadow compares against reviewers' corrections too
    return app

"""Single sign-on through the hospital's OpenID Connect provider (Authlib's Starlette client):
authorization code flow with PKCE, the ID token checked (signature, issuer, audience, nonce),
the person named by MEDSEG_OIDC_USERNAME_CLAIM and given the highest role their
MEDSEG_OIDC_ROLE_CLAIM values map to in MEDSEG_OIDC_ROLE_MAP; no role, no login.

The session cookie is SameSite=Strict, so a browser coming back from a provider on another
site sends none with the callback: ``/auth/callback`` answers a page that moves on to
``/auth/complete`` with the same query, a navigation from our own site that carries it."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from worker.core.settings import Settings
from worker.dashboard.auth import ACCOUNT, log_in
from worker.ops import people
from worker.ops.people import ROLES, Role

logger = logging.getLogger(__name__)

router = APIRouter()


def make_client(settings: Settings) -> Any:
    """The Authlib client for the configured provider (its metadata read on first use)."""
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register(
        "oidc",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret or None,
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"},
    )
    return oauth.create_client("oidc")


def role_for(claims: dict[str, Any], claim: str, mapping: dict[str, str]) -> Role | None:
    """The highest role any value of ``claims[claim]`` (a string or a list) maps to."""
    value = claims.get(claim)
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    matched = {mapping[v] for v in values if isinstance(v, str) and v in mapping}
    return next((role for role in reversed(ROLES) if role in matched), None)


def _client(request: Request) -> Any:
    client = request.app.state.oidc
    if client is None:
        raise HTTPException(404, "single sign-on is not configured (MEDSEG_OIDC_ISSUER)")
    return client


@router.get("/auth/login")
async def sso_login(request: Request) -> Response:
    client = _client(request)
    settings: Settings = request.app.state.settings
    redirect_uri = settings.oidc_redirect_url or str(request.url_for("sso_callback"))
    response: Response = await client.authorize_redirect(request, redirect_uri)
    return response


@router.get("/auth/callback", name="sso_callback")
def sso_callback(request: Request) -> Response:
    """Back from the provider (maybe without our cookie): on to /auth/complete from here."""
    from worker.dashboard.app import TEMPLATES

    _client(request)
    target = "/auth/complete?" + "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in request.query_params.multi_items()
    )
    return TEMPLATES.TemplateResponse(request, "sso_bounce.html", {"target": target})


@router.get("/auth/complete")
async def sso_complete(request: Request) -> Response:
    from authlib.integrations.base_client import OAuthError

    client = _client(request)
    settings: Settings = request.app.state.settings
    try:
        token = await client.authorize_access_token(request)
        claims: dict[str, Any] = dict(token.get("userinfo") or {})
        if settings.oidc_role_claim not in claims or settings.oidc_username_claim not in claims:
            claims = {**dict(await client.userinfo(token=token)), **claims}
    except OAuthError as exc:
        logger.warning("dashboard: single sign-on failed: %s", exc.error)
        raise HTTPException(403, f"single sign-on failed: {exc.error}") from exc
    name = claims.get(settings.oidc_username_claim)
    if not isinstance(name, str) or not name:
        raise HTTPException(403, f"the provider sent no {settings.oidc_username_claim} claim")
    role = role_for(claims, settings.oidc_role_claim, settings.oidc_role_map)
    if role is None:
        logger.warning("dashboard: single sign-on of %s refused: no role mapped", name)
        raise HTTPException(
            403,
            f"{name} has no role here: none of their {settings.oidc_role_claim} is in "
            "MEDSEG_OIDC_ROLE_MAP",
        )
    try:
        person = people.sso_login(request.app.state.session_factory, name, role)
    except people.AccountError as exc:
        logger.warning("dashboard: single sign-on refused: %s", exc)
        raise HTTPException(403, f"single sign-on refused: {exc}") from exc
    log_in(request, person.name, ACCOUNT)
    logger.info("dashboard: %s (%s) signed in through single sign-on", person.name, person.role)
    return RedirectResponse("/", status_code=303)

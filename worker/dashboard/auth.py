"""Logins: signed-session users (their name and role) and CSRF tokens; the password hashes
are worker.core.passwords'."""

from __future__ import annotations

import hmac
import secrets
import threading
import time

from starlette.requests import Request

from worker.core.passwords import (
    PasswordHashError,
    check_hash_format,
    check_user,
    hash_password,
    verify_password,
)

__all__ = [
    "ACCOUNT",
    "BOOTSTRAP",
    "PasswordHashError",
    "SessionRegistry",
    "check_hash_format",
    "check_user",
    "csrf_ok",
    "csrf_token",
    "hash_password",
    "log_in",
    "log_out",
    "logged_in_user",
    "session_kind",
    "verify_password",
]


def csrf_token(request: Request) -> str:
    """This session's CSRF token, made on first use; every form posts it back."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, submitted: str) -> bool:
    token = request.session.get("csrf")
    return isinstance(token, str) and hmac.compare_digest(token.encode(), submitted.encode())


class SessionRegistry:
    """The logins this dashboard process has opened and not closed.

    The session cookie is signed, not stored: a copy saved before logout would stay valid
    until it expires. So a login also records a random session id here, the cookie carries
    it, and logout (or expiry) removes it: a saved cookie then no longer logs anyone in. A
    restart of the dashboard ends every session.
    """

    def __init__(self, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._open: dict[str, float] = {}
        #: What a session keeps server-side (its saved search: patient IDs stay out of the
        #: cookie, which is signed but readable), removed with the session.
        self._data: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()

    def get(self, sid: str, key: str) -> object:
        with self._lock:
            return self._data.get(sid, {}).get(key)

    def put(self, sid: str, key: str, value: object) -> None:
        with self._lock:
            if sid in self._open:
                self._data.setdefault(sid, {})[key] = value

    def discard(self, sid: str, key: str) -> None:
        with self._lock:
            self._data.get(sid, {}).pop(key, None)

    def open(self) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._open = {k: t for k, t in self._open.items() if t > now}  # drop expired
            self._data = {k: v for k, v in self._data.items() if k in self._open}
            self._open[sid] = now + self._max_age_s
        return sid

    def is_open(self, sid: str) -> bool:
        with self._lock:
            expires = self._open.get(sid)
        return expires is not None and expires > time.monotonic()

    def close(self, sid: str) -> None:
        with self._lock:
            self._open.pop(sid, None)
            self._data.pop(sid, None)


#: How a session logged in: the bootstrap admin of the settings, or a named account (a local
#: password or single sign-on), whose row is read again on every request.
BOOTSTRAP, ACCOUNT = "bootstrap", "account"


def log_in(request: Request, user: str, kind: str = BOOTSTRAP) -> None:
    """A fresh session (new CSRF token) for ``user``, recorded in the app's registry."""
    registry: SessionRegistry = request.app.state.sessions
    request.session.clear()
    request.session["user"] = user
    request.session["kind"] = kind
    request.session["sid"] = registry.open()


def log_out(request: Request) -> None:
    sid = request.session.get("sid")
    if isinstance(sid, str):
        registry: SessionRegistry = request.app.state.sessions
        registry.close(sid)
    request.session.clear()


def logged_in_user(request: Request) -> str | None:
    user = request.session.get("user")
    sid = request.session.get("sid")
    registry: SessionRegistry = request.app.state.sessions
    if not isinstance(user, str) or not isinstance(sid, str) or not registry.is_open(sid):
        return None
    return user


def session_kind(request: Request) -> str:
    kind = request.session.get("kind")
    return kind if isinstance(kind, str) else BOOTSTRAP

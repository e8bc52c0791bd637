"""The admin login: scrypt password hashes, signed-session users and CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time

from starlette.requests import Request

#: scrypt cost: 16 MiB of memory and about 90 ms per check on our 2-core x86_64 machine.
_N, _R, _P = 2**14, 8, 1
_PREFIX = "scrypt"


class PasswordHashError(ValueError):
    """The configured hash was not made by ``medseg dashboard hash-password``."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$key`` (salt and key in base64) for ``password``."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{_PREFIX}${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def check_hash_format(encoded: str) -> None:
    """Raise PasswordHashError unless ``encoded`` is a hash this module can verify."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise PasswordHashError(
            "MEDSEG_DASHBOARD_PASSWORD_HASH must be made by `medseg dashboard hash-password` "
            "(scrypt$N$r$p$salt$key)"
        )
    try:
        n, r, p = (int(v) for v in parts[1:4])
        base64.b64decode(parts[4], validate=True)
        base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise PasswordHashError(f"MEDSEG_DASHBOARD_PASSWORD_HASH is damaged: {exc}") from exc
    if n < 2**10 or n & (n - 1) or r < 1 or p < 1:
        raise PasswordHashError("MEDSEG_DASHBOARD_PASSWORD_HASH has invalid scrypt parameters")


def verify_password(password: str, encoded: str) -> bool:
    check_hash_format(encoded)
    _, n, r, p, salt, key = encoded.split("$")
    expected = base64.b64decode(key)
    got = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
        maxmem=256 * 1024 * 1024,
    )
    return hmac.compare_digest(got, expected)


def check_user(user: str, password: str, expected_user: str, encoded: str) -> bool:
    """Both compared in constant time; the hash is computed even for a wrong user name."""
    good_password = verify_password(password, encoded)
    good_user = hmac.compare_digest(user.encode(), expected_user.encode())
    return good_user and good_password


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


def log_in(request: Request, user: str) -> None:
    """A fresh session (new CSRF token) for ``user``, recorded in the app's registry."""
    registry: SessionRegistry = request.app.state.sessions
    request.session.clear()
    request.session["user"] = user
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

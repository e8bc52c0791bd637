"""Password hashes (scrypt, from the standard library): the bootstrap admin's
MEDSEG_DASHBOARD_PASSWORD_HASH and the named accounts' hashes in the database alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

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

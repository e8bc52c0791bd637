"""The dummy hash a login without an account verifies (``worker.ops.people``)."""

from __future__ import annotations

from worker.core.passwords import hash_password, verify_password
from worker.ops.people import DUMMY_HASH


def test_the_dummy_hash_costs_what_a_real_one_does() -> None:
    """Written out (no scrypt at import), in the parameters ``hash_password`` uses now: so
    verifying it takes as long as verifying an account's hash."""
    assert verify_password("not anyone's password", DUMMY_HASH)
    parameters = hash_password("any password").split("$")[:4]
    assert DUMMY_HASH.split("$")[:4] == parameters

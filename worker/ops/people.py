"""People and roles: named accounts, what each role may do, and the check every dashboard
action and CLI action makes (a refusal is recorded in the audit trail as ``refused``).

Roles, each with everything it lists and read access to every page:

- ``viewer``: reads only;
- ``operator``: retries, cancels, re-runs jobs and sends deliveries again;
- ``reviewer``: accepts, rejects and corrects results (a quality gate flagged), and enters a
  study's GA by dates (``set_ga``: it changes clinical z-scores and centiles);
- ``admin``: everything, and manages accounts (``medseg users``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Account, utcnow
from worker.core.passwords import hash_password, verify_password
from worker.ops.audit import Actor, record_refused

logger = logging.getLogger(__name__)

Role = Literal["viewer", "operator", "reviewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "reviewer", "admin")
#: Who may do what (worker.ops.audit.ACTIONS, and ``users``: account management).
OPERATE = frozenset(
    {"retry", "retry_all", "cancel", "rerun", "redeliver", "redeliver_all", "echo", "route"}
)
REVIEW = frozenset({"accept", "reject", "correct", "set_ga"})
PERMISSIONS: dict[Role, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": OPERATE,
    "reviewer": REVIEW,
    # Which weights make clinical results: an administrator's call.
    "admin": OPERATE | REVIEW | {"users", "shadow", "promote"},
}
_BY_NAME: dict[str, frozenset[str]] = {str(k): v for k, v in PERMISSIONS.items()}
#: A name: letters, digits and ``.-_@`` (an e-mail address is one), 1 to 64 characters.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

#: Verified when a name has no account, so a wrong name takes as long as a wrong password.
#: ``hash_password("not anyone's password", salt=b"medseg-no-person")``, written out: made at
#: import it cost every ``medseg`` command a scrypt (the parser imports ``ROLES``); made on
#: first use, the first wrong name of a process would take twice as long. Its parameters are
#: the current ones (a test checks), so verifying it costs what verifying a real hash does.
DUMMY_HASH = (
    "scrypt$16384$8$1$bWVkc2VnLW5vLXBlcnNvbg==$UasOnwm6CxSU4TCws2UB9CvK0Wlj5HZsh6TddWbd+a4="
)


class AccountError(ValueError):
    """An account operation that cannot apply; the message says why."""


class NotAllowedError(PermissionError):
    """The acting person's role does not allow the action (answered 403, recorded refused)."""


@dataclass(frozen=True)
class Person:
    """Who is logged in (or acts from the CLI) and with which role."""

    name: str
    role: Role

    def can(self, action: str) -> bool:
        return can(self.role, action)


def can(role: str, action: str) -> bool:
    return action in _BY_NAME.get(role, frozenset())


def as_role(text: str) -> Role:
    for role in ROLES:
        if role == text:
            return role
    raise AccountError(f"unknown role {text!r}: one of {', '.join(ROLES)}")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise AccountError(
            f"invalid name {name!r}: 1-64 letters, digits or . _ @ -, starting with a letter "
            "or digit"
        )
    return name


def authorize(
    session_factory: sessionmaker[Session],
    person: Person,
    action: str,
    actor: Actor,
    *,
    job_id: int | None = None,
    delivery_id: int | None = None,
    study_id: int | None = None,
) -> None:
    """Raise NotAllowedError, after recording a ``refused`` audit row, unless ``person``'s
    role allows ``action``."""
    if not person.can(action):
        _refuse(
            session_factory,
            actor,
            action,
            f"role {person.role} may not {action}",
            job_id=job_id,
            delivery_id=delivery_id,
            study_id=study_id,
        )


def authorize_cli(
    session_factory: sessionmaker[Session],
    actor: Actor,
    action: str,
    *,
    require_account: bool,
    job_id: int | None = None,
    delivery_id: int | None = None,
    study_id: int | None = None,
) -> None:
    """The CLI's check. The CLI runs on the server with the database's credentials, so it is
    trusted: a name that is no account acts as admin (unless ``require_account``,
    MEDSEG_CLI_REQUIRE_ACCOUNT). A name that is an account acts with its role, and not at all
    when disabled. Refusals are recorded like the dashboard's."""
    account = find(session_factory, actor.user)
    if account is None:
        if require_account:
            _refuse(
                session_factory,
                actor,
                action,
                f"{actor.user} is not an account (MEDSEG_CLI_REQUIRE_ACCOUNT)",
                job_id=job_id,
                delivery_id=delivery_id,
                study_id=study_id,
            )
        return
    if account.disabled_at is not None:
        _refuse(
            session_factory,
            actor,
            action,
            f"account {actor.user} is disabled",
            job_id=job_id,
            delivery_id=delivery_id,
            study_id=study_id,
        )
    authorize(
        session_factory,
        Person(account.name, as_role(account.role)),
        action,
        actor,
        job_id=job_id,
        delivery_id=delivery_id,
        study_id=study_id,
    )


def _refuse(
    session_factory: sessionmaker[Session],
    actor: Actor,
    action: str,
    reason: str,
    *,
    job_id: int | None,
    delivery_id: int | None,
    study_id: int | None = None,
) -> None:
    record_refused(
        session_factory,
        actor,
        action,
        reason,
        job_id=job_id,
        delivery_id=delivery_id,
        study_id=study_id,
    )
    logger.warning("%s %s refused: %s", actor.source, action, reason)
    raise NotAllowedError(reason)


# --- accounts ---------------------------------------------------------------------------


def find(session_factory: sessionmaker[Session], name: str) -> Account | None:
    with session_factory() as session:
        return session.scalar(select(Account).where(Account.name == name))


def list_accounts(session_factory: sessionmaker[Session]) -> list[Account]:
    with session_factory() as session:
        return list(session.scalars(select(Account).order_by(Account.name)))


def add(
    session_factory: sessionmaker[Session],
    name: str,
    role: Role,
    password: str | None,
    *,
    origin: str = "local",
) -> Account:
    """A new enabled account; a local one needs a password of 8 characters or more."""
    check_name(name)
    if origin == "local":
        _check_password(password)
    account = Account(
        name=name,
        role=role,
        origin=origin,
        password_hash=hash_password(password) if password else None,
        created_at=utcnow(),
    )
    try:
        with session_factory.begin() as session:
            session.add(account)
    except IntegrityError as exc:
        raise AccountError(f"{name} exists already") from exc
    return account


def _check_password(password: str | None) -> None:
    if not password or len(password) < 8:
        raise AccountError("use a password of 8 characters or more")


def _change(session_factory: sessionmaker[Session], name: str, **values: object) -> Account:
    with session_factory.begin() as session:
        account = session.scalar(select(Account).where(Account.name == name))
        if account is None:
            raise AccountError(f"no account {name!r} (medseg users list)")
        for key, value in values.items():
            setattr(account, key, value)
        return account


def disable(session_factory: sessionmaker[Session], name: str) -> Account:
    """The account can no longer log in; its open dashboard sessions end at their next page."""
    return _change(session_factory, name, disabled_at=utcnow())


def enable(session_factory: sessionmaker[Session], name: str) -> Account:
    return _change(session_factory, name, disabled_at=None)


def set_role(session_factory: sessionmaker[Session], name: str, role: Role) -> Account:
    return _change(session_factory, name, role=role)


def set_password(session_factory: sessionmaker[Session], name: str, password: str) -> Account:
    _check_password(password)
    account = find(session_factory, name)
    if account is not None and account.origin != "local":
        raise AccountError(f"{name} signs in through single sign-on: no password here")
    return _change(session_factory, name, password_hash=hash_password(password))


def check_login(session_factory: sessionmaker[Session], name: str, password: str) -> Person | None:
    """The person when ``name`` is an enabled local account and ``password`` its password.
    A hash is verified in every case, so timing does not tell which names exist."""
    account = find(session_factory, name)
    encoded = account.password_hash if account and account.password_hash else DUMMY_HASH
    good = verify_password(password, encoded)
    if account is None or not account.password_hash or account.disabled_at is not None or not good:
        return None
    _change(session_factory, name, last_login_at=utcnow())
    return Person(account.name, as_role(account.role))


def waste_a_check(password: str) -> None:
    """Verify ``password`` against nobody's hash: as long as a real check."""
    verify_password(password, DUMMY_HASH)


def current(session_factory: sessionmaker[Session], name: str) -> Person | None:
    """The person now (their role may have changed), or None when the account is gone or
    disabled."""
    account = find(session_factory, name)
    if account is None or account.disabled_at is not None:
        return None
    return Person(account.name, as_role(account.role))


def sso_login(session_factory: sessionmaker[Session], name: str, role: Role) -> Person:
    """An identity provider vouched for ``name`` with ``role``: its account is made or its
    role updated. Refused (AccountError) for a disabled account or a local account of the
    same name (the provider may not take over a local login)."""
    check_name(name)
    with session_factory.begin() as session:
        account = session.scalar(select(Account).where(Account.name == name))
        if account is None:
            account = Account(name=name, role=role, origin="oidc", created_at=utcnow())
            session.add(account)
        elif account.origin != "oidc":
            raise AccountError(f"{name} is a local account: single sign-on may not use it")
        elif account.disabled_at is not None:
            raise AccountError(f"{name} is disabled")
        account.role = role
        account.last_login_at = utcnow()
    return Person(name, role)

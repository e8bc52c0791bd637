"""The POSTs: log in and out, retry and cancel jobs, send deliveries again, review results.
Each checks the session's CSRF token, then the person's role (worker.ops.people): a refusal
answers 403 and is recorded in the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Series, utcnow
from worker.core.settings import Settings
from worker.dashboard import deps
from worker.dashboard.auth import ACCOUNT, BOOTSTRAP, check_user, csrf_ok, log_in, log_out
from worker.dashboard.throttle import LoginThrottle
from worker.ops import deliveries, operations, people, reruns
from worker.ops.audit import Actor
from worker.ops.people import Person

logger = logging.getLogger(__name__)

router = APIRouter()

#: How long the Failures page's "Test destination" waits for the node's answer.
ECHO_TIMEOUT_S = 5.0

User = Annotated[Person, Depends(deps.require_person)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]
Csrf = Annotated[str, Form()]


def _actor(user: Person) -> Actor:
    """The logged-in person, as the audit trail records them."""
    return Actor(user.name, "dashboard")


def _allow(
    request: Request,
    user: Person,
    action: str,
    *,
    job_id: int | None = None,
    delivery_id: int | None = None,
) -> None:
    """403 (recorded as refused in the audit trail) unless ``user``'s role may ``action``."""
    try:
        people.authorize(
            request.app.state.session_factory,
            user,
            action,
            _actor(user),
            job_id=job_id,
            delivery_id=delivery_id,
        )
    except people.NotAllowedError as exc:
        raise HTTPException(403, f"not allowed: {exc} (ask an admin for another role)") from exc


def _check_csrf(request: Request, token: str) -> None:
    if not csrf_ok(request, token):
        logger.warning("dashboard: POST %s refused (bad CSRF token)", request.url.path)
        raise HTTPException(403, "invalid or missing CSRF token: reload the page and try again")


@router.post("/login")
def login(
    request: Request,
    settings: Annotated[Settings, Depends(deps.settings)],
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf: Csrf,
) -> Response:
    _check_csrf(request, csrf)
    client = request.client.host if request.client else "?"
    throttle: LoginThrottle = request.app.state.login_throttle
    wait = throttle.retry_after(client)
    if wait > 0:
        logger.warning("dashboard: login from %s refused unchecked (locked out)", client)
        response = deps.page(
            request,
            "login.html",
            status_code=429,
            error=f"too many failed logins: try again in {wait:.0f} s",
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    factory: sessionmaker[Session] = request.app.state.session_factory
    checked = _check_login(factory, settings, username, password)
    if checked is None:
        locked = throttle.failed(client)
        logger.warning(
            "dashboard: login refused from %s%s", client, " (now locked out)" if locked else ""
        )
        return deps.page(request, "login.html", status_code=401, error="wrong user or password")
    throttle.succeeded(client)
    person, kind = checked
    log_in(request, person.name, kind)  # a fresh session id and CSRF token
    logger.info("dashboard: %s (%s) logged in from %s", person.name, person.role, client)
    return RedirectResponse("/", status_code=303)


def _check_login(
    factory: sessionmaker[Session], settings: Settings, name: str, password: str
) -> tuple[Person, str] | None:
    """A named account by its password; else the bootstrap admin of the settings
    (MEDSEG_DASHBOARD_USER / _PASSWORD_HASH, role admin) unless an account has its name."""
    try:
        if people.find(factory, name) is not None:
            person = people.check_login(factory, name, password)
            return None if person is None else (person, ACCOUNT)
    except SQLAlchemyError:  # the bootstrap admin still logs in to see "database unreachable"
        logger.warning("dashboard: database unreachable: only the bootstrap admin can log in")
        if not settings.dashboard_password_hash:
            return None
    if settings.dashboard_password_hash and check_user(
        name, password, settings.dashboard_user, settings.dashboard_password_hash
    ):
        return Person(settings.dashboard_user, "admin"), BOOTSTRAP
    if not settings.dashboard_password_hash:
        people.waste_a_check(password)  # a wrong name takes as long as a wrong password
    return None


@router.post("/logout")
def logout(request: Request, csrf: Csrf) -> Response:
    _check_csrf(request, csrf)
    log_out(request)  # a copy of the cookie saved before is no longer a login
    return RedirectResponse("/login", status_code=303)


_DONE = {"retried": "queued again"}  # what the operator reads after a successful action


def _on_job(
    request: Request,
    user: Person,
    job_id: int,
    *,
    back: str,
    act: Callable[[], object],
    verb: str,
) -> Response:
    """Run one job action; the outcome is flashed, the operator sent back where they were."""
    try:
        act()
    except operations.OperationError as exc:
        request.session["flash"] = f"not {verb}: {exc}"
    else:
        request.session["flash"] = f"job {job_id} {_DONE.get(verb, verb)}"
        logger.info("dashboard: %s %s job %s", user.name, verb, job_id)
    return RedirectResponse(deps.safe_next(back, "/failures"), status_code=303)


@router.post("/jobs/{job_id}/retry")
def retry(
    request: Request,
    *,
    user: User,
    factory: Factory,
    job_id: int,
    csrf: Csrf,
    back: Annotated[str, Form()] = "/failures",
) -> Response:
    _check_csrf(request, csrf)
    _allow(request, user, "retry", job_id=job_id)
    return _on_job(
        request,
        user,
        job_id,
        back=back,
        act=lambda: operations.retry(factory, [job_id], actor=_actor(user)),
        verb="retried",
    )


@router.post("/failures/retry-all")
def retry_all(request: Request, user: User, factory: Factory, csrf: Csrf) -> Response:
    _check_csrf(request, csrf)
    _allow(request, user, "retry_all")
    queued = operations.retry(factory, None, actor=_actor(user))
    left = operations.count_bad_input(factory)
    request.session["flash"] = f"{len(queued)} job(s) queued again" + (
        f"; {left} left: they failed on their input and would fail again (retry one by one "
        "if the cause is fixed)"
        if left
        else ""
    )
    logger.info("dashboard: %s retried %d job(s)", user.name, len(queued))
    return RedirectResponse("/failures", status_code=303)


@router.post("/deliveries/{delivery_id}/retry")
def retry_delivery(
    request: Request,
    *,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    delivery_id: int,
    csrf: Csrf,
    back: Annotated[str, Form()] = "/failures",
) -> Response:
    """Send a failed delivery again; the model does not run (worker.ops.deliveries)."""
    _check_csrf(request, csrf)
    _allow(request, user, "redeliver", delivery_id=delivery_id)
    try:
        done = deliveries.resend(factory, [delivery_id], settings.destinations, actor=_actor(user))
    except operations.OperationError as exc:
        request.session["flash"] = f"not sent again: {exc}"
    else:
        request.session["flash"] = (
            f"delivery {delivery_id} queued again"
            if done.queued
            else f"delivery {delivery_id} {done.withheld.get(delivery_id, 'not queued')}"
        )
        logger.info("dashboard: %s sent delivery %s again", user.name, delivery_id)
    return RedirectResponse(deps.safe_next(back, "/failures"), status_code=303)


@router.post("/failures/retry-deliveries")
def retry_deliveries(
    request: Request,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    csrf: Csrf,
) -> Response:
    _check_csrf(request, csrf)
    _allow(request, user, "redeliver_all")
    done = deliveries.resend(factory, None, settings.destinations, actor=_actor(user))
    left = f", {len(done.left)} left failed" if done.left else ""
    held = f", {len(done.withheld)} withheld now" if done.withheld else ""
    request.session["flash"] = f"{len(done.queued)} delivery(ies) queued again{held}{left}"
    logger.info("dashboard: %s sent %d delivery(ies) again", user.name, len(done.queued))
    return RedirectResponse("/failures", status_code=303)


@router.post("/destinations/{name}/echo")
def echo_destination(
    request: Request,
    *,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    name: str,
    csrf: Csrf,
) -> Response:
    """C-ECHO a configured destination (is it there before sending again?); recorded."""
    from worker.ops.audit import record

    _check_csrf(request, csrf)
    _allow(request, user, "echo")
    destination = next((d for d in settings.destinations if d.name == name), None)
    if destination is None:
        request.session["flash"] = f"no destination named {name} is configured"
        return RedirectResponse("/failures#deliveries", status_code=303)
    node = f"{destination.ae_title}@{destination.host}:{destination.port}"
    try:
        from worker.delivery.echo import echo

        status = echo(
            destination.host,
            destination.port,
            destination.ae_title,
            destination.calling_ae,
            timeout=ECHO_TIMEOUT_S,
        )
    except ImportError:
        outcome = "C-ECHO needs pynetdicom (install the gateway or worker extra)"
    except (ConnectionError, OSError) as exc:
        outcome = f"{name} ({node}) did not answer C-ECHO: {exc}"
    else:
        verdict = "answered" if status == 0 else "refused"
        outcome = f"{name} ({node}) {verdict} C-ECHO: status 0x{status:04X}"
    with factory.begin() as session:
        record(session, _actor(user), "echo", detail=outcome)
    request.session["flash"] = outcome
    logger.info("dashboard: %s echoed destination %s", user.name, name)
    return RedirectResponse(f"/failures#destination-{name}", status_code=303)


@router.post("/series/{series_id}/route")
def route_series(
    request: Request,
    *,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    series_id: int,
    model: Annotated[str, Form()],
    csrf: Csrf,
) -> Response:
    """Send a series to the chosen model by hand (worker.ops.manual_route); audited."""
    from worker.ops.manual_route import route_by_hand

    _check_csrf(request, csrf)
    _allow(request, user, "route")
    with factory() as session:
        series = session.get(Series, series_id)
        study_id = series.study_id if series is not None else None
    try:
        job_id = route_by_hand(
            factory,
            series_id,
            model,
            max_attempts=settings.job_max_attempts,
            actor=_actor(user),
        )
    except operations.OperationError as exc:
        request.session["flash"] = f"not sent: {exc}"
    else:
        request.session["flash"] = f"series {series_id} sent to {model}: job {job_id} queued"
        logger.info("dashboard: %s sent series %s to %s", user.name, series_id, model)
    back = f"/studies/{study_id}#series-{series_id}" if study_id is not None else "/studies"
    return RedirectResponse(back, status_code=303)


@router.post("/jobs/{job_id}/cancel")
def cancel(
    request: Request,
    *,
    user: User,
    factory: Factory,
    job_id: int,
    csrf: Csrf,
    back: Annotated[str, Form()] = "/failures",
) -> Response:
    _check_csrf(request, csrf)
    _allow(request, user, "cancel", job_id=job_id)
    return _on_job(
        request,
        user,
        job_id,
        back=back,
        act=lambda: operations.cancel(factory, job_id, actor=_actor(user)),
        verb="cancelled",
    )


@router.post("/rerun")
def rerun(
    request: Request,
    *,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    csrf: Csrf,
    model: Annotated[str, Form()] = "",
    since: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
    confirmed: Annotated[bool, Form()] = False,
) -> Response:
    """New jobs with the model's current version for the series it ran on (reruns.rerun),
    once the operator has confirmed on a page that says how many series that is."""
    from worker.dashboard.views import SINCE

    _check_csrf(request, csrf)
    _allow(request, user, "rerun")
    if since and since not in SINCE:
        raise HTTPException(400, f"unknown period {since!r}")
    if not model:
        request.session["flash"] = "not rerun: choose a model"
        return RedirectResponse("/jobs", status_code=303)
    if not confirmed:
        scope = reruns.rerun_scope(factory, model, utcnow() - SINCE[since] if since else None)
        return deps.page(
            request,
            "rerun_confirm.html",
            model=model,
            since=since,
            force=force,
            series=scope,
            csrf=csrf,
        )
    try:
        created = reruns.rerun(
            factory,
            model,
            since=utcnow() - SINCE[since] if since else None,
            force=force,
            max_attempts=settings.job_max_attempts,
            actor=_actor(user),
        )
    except operations.OperationError as exc:
        request.session["flash"] = f"not rerun: {exc}"
    else:
        request.session["flash"] = f"{model}: {len(created)} job(s) queued"
        logger.info("dashboard: %s reran %s: %d job(s)", user.name, model, len(created))
    return RedirectResponse(f"/jobs?model={quote(model)}", status_code=303)


@router.post("/jobs/{job_id}/review")
def review(
    request: Request,
    *,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    job_id: int,
    csrf: Csrf,
    decision: Annotated[str, Form()],
    note: Annotated[str, Form()] = "",
    force: Annotated[bool, Form()] = False,
) -> Response:
    """Accept or reject a needs_review result as the logged-in user (worker.ops.review)."""
    from worker.ops.review import DECISIONS, decide

    _check_csrf(request, csrf)
    chosen = next((d for d in DECISIONS if d == decision), None)
    if chosen is None:
        raise HTTPException(400, f"unknown decision {decision!r}")
    _allow(request, user, "accept" if chosen == "accepted" else "reject", job_id=job_id)
    try:
        done = decide(
            factory,
            job_id,
            chosen,
            by=user.name,
            note=note.strip()[:500] or None,
            force=force,
            destinations=settings.destinations,
            actor=_actor(user),
        )
    except operations.OperationError as exc:
        request.session["flash"] = f"not reviewed: {exc}"
    else:
        sent = f"; queued for {', '.join(done.released)}" if done.released else ""
        request.session["flash"] = f"job {job_id} {done.decision}{sent}"
        logger.info("dashboard: %s %s job %s", user.name, done.decision, job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)

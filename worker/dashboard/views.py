"""The pages: overview, jobs (filters), a study with overlays, failures. All GET, login needed.

URLs carry only our integer IDs (job, study): never a UID, name or accession number.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, JobState, utcnow
from worker.core.broker_probe import BrokerView
from worker.core.settings import Settings
from worker.dashboard import deps
from worker.ops import deliveries, operations, running

logger = logging.getLogger(__name__)

router = APIRouter()

User = Annotated[str, Depends(deps.require_user)]
Factory = Annotated[sessionmaker[Session], Depends(deps.session_factory)]

#: What the jobs page filters on: the job states and the delivery_failed condition.
FILTER_STATES = [s.value for s in JobState] + [deliveries.DELIVERY_FAILED]
#: How long the first overview after the dashboard starts waits for the broker's first view.
FIRST_LOOK_WAIT_S = 2.0
#: Shown until the probe's first look answers: nothing known, nothing claimed.
UNKNOWN_BROKER = BrokerView({}, None, None)
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (no dependency asked): for liveness probes."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request, factory: Factory) -> Response:
    """200 when the database and the broker answer, else 503: for readiness probes. Says
    which is down, never why (no login needed: no error text, no address)."""
    from worker.ops.health import broker_error, database_error

    checks = {
        "database": database_error(factory) is None,
        "broker": broker_error(request.app.state.redis) is None,
    }
    ready = all(checks.values())
    body = {name: "ok" if ok else "unreachable" for name, ok in checks.items()}
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **body}, status_code=200 if ready else 503
    )


@router.get("/login")
def login_page(request: Request) -> Response:
    if request.session.get("user"):
        return RedirectResponse("/", status_code=303)
    return deps.page(request, "login.html")


@router.get("/")
def overview(
    request: Request,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
) -> Response:
    from worker.ops.health import database_error, problems

    state = request.app.state
    database = database_error(factory)
    status = None
    if database is None:
        # The background probe's view; only the first page after start waits for it.
        broker = state.broker_probe.latest(wait_s=FIRST_LOOK_WAIT_S) or UNKNOWN_BROKER
        status = operations.status(
            factory, state.redis, state.celery, settings.broker_key_prefix, broker=broker
        )
    return deps.page(
        request,
        "overview.html",
        status=status,
        health=problems(status, database),
        states=[s.value for s in JobState],
    )


@router.get("/jobs")
def jobs(
    request: Request,
    *,
    user: User,
    factory: Factory,
    state: str = "",
    model: str = "",
    since: str = "",
) -> Response:
    from worker.core.registry import all_specs

    models = sorted(spec.name for spec in all_specs())
    problems = []
    if state and state not in FILTER_STATES:
        problems.append(f"unknown state {state!r}")
    if since and since not in SINCE:
        problems.append(f"unknown period {since!r}")
    rows: list[Job] = []
    if not problems:
        failed_delivery = state == deliveries.DELIVERY_FAILED
        rows = operations.list_jobs(
            factory,
            state=JobState(state) if state and not failed_delivery else None,
            since=utcnow() - SINCE[since] if since else None,
            model=model or None,
            delivery_failed=failed_delivery,
        )
    return deps.page(
        request,
        "jobs.html",
        status_code=400 if problems else 200,
        jobs=rows,
        runs=_runs(request, rows),
        problems=problems,
        states=FILTER_STATES,
        delivery_failed={j.id for j in rows if deliveries.has_failed_delivery(j)},
        models=models,
        periods=list(SINCE),
        selected={"state": state, "model": model, "since": since},
    )


def _runs(request: Request, rows: list[Job]) -> dict[int, running.Run]:
    """The running jobs' worker and time, flagged when the broker's latest view (never asked
    on the request) does not list their worker."""
    if not any(j.state is JobState.RUNNING for j in rows):
        return {}
    broker = request.app.state.broker_probe.latest(wait_s=FIRST_LOOK_WAIT_S) or UNKNOWN_BROKER
    return running.runs(rows, broker.workers)


@router.get("/jobs/{job_id}")
def job(request: Request, user: User, factory: Factory, job_id: int) -> Response:
    with factory() as session:
        row = session.get(Job, job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id}")
        study_id = row.series.study_id
    return RedirectResponse(f"/studies/{study_id}#job-{job_id}", status_code=303)


@router.get("/jobs/{job_id}/overlay.png")
def overlay(
    *,
    user: User,
    factory: Factory,
    job_id: int,
    size: int = 512,
    position: Annotated[int | None, Query(alias="slice")] = None,
    window: str = "",
    legend: bool = False,
) -> Response:
    from worker.dashboard.overlay import OverlayRequestError, render_job_overlay

    try:
        png = render_job_overlay(
            factory,
            job_id,
            max_side=min(max(size, 64), 1024),
            position=position,
            window=window or None,
            legend=legend,
        )
    except OverlayRequestError as exc:
        raise HTTPException(exc.status_code, str(exc)) from exc
    if png is None:
        raise HTTPException(404, f"job {job_id} has no segmentation")
    return Response(png, media_type="image/png")


@router.get("/studies/{study_id}")
def study(
    request: Request,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
    study_id: int,
) -> Response:
    from worker.core.clinical_format import format_measurement
    from worker.core.registry import all_specs, off_reason
    from worker.dashboard.corrections_page import ellipses
    from worker.dashboard.growth_standing import recomputed, result_dating
    from worker.dashboard.lung_trend import patient_rows
    from worker.dashboard.reports import findings_by_result
    from worker.dashboard.viewer import study_viewers, viewer_links
    from worker.export.report import load_study
    from worker.ops.corrections import list_corrections
    from worker.ops.dating import BY_DATES_KEYS, entered
    from worker.ops.history import job_histories
    from worker.ops.studies import not_processed_reason

    with factory() as session:
        found = load_study(session, study_id=study_id)
        if found is None:
            raise HTTPException(404, f"no study {study_id}")
        jobs = [job for series in found.series for job in series.jobs]
        results = [r for job in jobs for r in job.results]
        return deps.page(
            request,
            "study.html",
            study=found,
            findings=findings_by_result(results),
            delivery_failed={j.id for j in jobs if deliveries.has_failed_delivery(j)},
            runs=_runs(request, jobs),
            job_history=job_histories(session, [j.id for j in jobs]),
            viewers=study_viewers(factory, jobs),
            viewer_links=viewer_links(settings.viewer_url_template, found),
            measure=format_measurement,
            not_processed=not_processed_reason,
            # "Send to model" offers the models that run here (off ones would be refused).
            models=sorted(spec.name for spec in all_specs() if off_reason(spec) is None),
            lung_rows=patient_rows(session, study_id),
            ellipses=ellipses(session, jobs),
            corrections=list_corrections(factory, study_id=study_id),
            entered_ga=entered(found),
            standing={r.id: recomputed(found, r) for r in results},
            dating={r.id: result_dating(found, r) for r in results},
            by_dates_keys=BY_DATES_KEYS,
        )


@router.get("/review")
def review_worklist(request: Request, user: User, factory: Factory) -> Response:
    """The flagged results no reviewer has decided, oldest first, with the gate's reasons."""
    from worker.ops.review import pending_reviews

    return deps.page(request, "review.html", pending=pending_reviews(factory), ago=running.duration)


@router.get("/failures")
def failures(
    request: Request,
    user: User,
    factory: Factory,
    settings: Annotated[Settings, Depends(deps.settings)],
) -> Response:
    rows = operations.list_jobs(factory, state=JobState.FAILED) + operations.list_jobs(
        factory, state=JobState.QUARANTINED
    )
    rows.sort(key=lambda j: j.id, reverse=True)
    failed = deliveries.failed_deliveries(factory)
    by_destination: dict[str, list[Delivery]] = {}
    for delivery in failed:
        by_destination.setdefault(delivery.destination, []).append(delivery)
    return deps.page(
        request,
        "failures.html",
        jobs=rows,
        bad_input=sum(1 for j in rows if j.error_kind == "input"),
        deliveries=failed,
        by_destination=sorted(by_destination.items(), key=lambda item: -len(item[1])),
        configured={d.name: d for d in settings.destinations},
    )

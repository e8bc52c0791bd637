"""Run one queued job: the DB side of a task (state, attempts, result rows), no Celery here."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import TERMINAL, transition
from db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Measurement,
    OutputFile,
    Result,
    utcnow,
)
from db.retry import with_db_retry
from worker.core.errors import InputError, NothingFoundError, PermanentError, SkippedError
from worker.core.paths import safe_component
from worker.core.registry import get_spec
from worker.core.settings import DeliveryPolicy, DicomDestination
from worker.core.timelimits import TimeLimit
from worker.delivery.policy import SENDER, withhold_reason
from worker.ops.dating import Dating, entered
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import SeriesResult, run_series
from worker.runtime.deadline import TimeLimitExceededError, deadline
from worker.runtime.joblog import RunLog
from worker.runtime.joblog import capture as capture_log
from worker.runtime.joblog import store as store_log
from worker.runtime.metrics import observe_pipeline
from worker.shadow.installs import live_spec

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 600.0


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff after ``attempt`` failed attempts (1 → 10 s, 2 → 20 s, ...)."""
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Claimed:
    """A job this worker moved to RUNNING: what running it needs, read in the claim."""

    job_id: int
    paths: list[Path]
    model_name: str
    out_dir: Path
    entered_ga: Dating | None = None  # the study's, read here (worker.ops.dating)


def job_dir(results_root: Path, job: Job) -> Path:
    """Where a job's outputs go: RESULTS/STUDY_UID/SERIES_UID/job-ID (the job's series and
    study loaded); shadow runs and corrections write in folders below it."""
    series = job.series
    return (
        results_root
        / safe_component(series.study.study_instance_uid)
        / safe_component(series.series_instance_uid)
        / f"job-{job.id}"
    )


def instance_paths(job: Job) -> list[Path]:
    """The stored files of the job's series, in a stable order."""
    return sorted(Path(i.path) for i in job.series.instances)


def claim(
    session_factory: sessionmaker[Session],
    job_id: int,
    results_root: Path,
    running_window_s: float,
    worker: str | None,
) -> Claimed | None:
    """Job ``job_id`` moved to RUNNING for this worker; None when there is nothing to run
    (no such job, already finished, running elsewhere: a duplicate message)."""
    with session_factory.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            logger.error("job %s does not exist; message dropped", job_id)
            return None
        if job.state in TERMINAL:
            logger.info("job %s already %s; duplicate delivery ignored", job_id, job.state.value)
            return None
        started = job.started_at
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=UTC)  # SQLite returns naive UTC
        if (
            job.state is JobState.RUNNING
            and started is not None
            and utcnow() - started < timedelta(seconds=running_window_s)
        ):
            logger.warning("job %s is running elsewhere; duplicate delivery ignored", job_id)
            return None
        return take(job, results_root, worker)


def take(job: Job, results_root: Path, worker: str | None, note: str = "") -> Claimed:
    """Move ``job`` (locked in the caller's transaction) to RUNNING for ``worker``."""
    job.worker = worker  # before the transition: the attempt it opens names the worker
    transition(job, JobState.RUNNING)
    paths = instance_paths(job)
    logger.info(
        "job %s running (attempt %d, %d instances)%s", job.id, job.attempts, len(paths), note
    )
    return Claimed(
        job_id=job.id,
        paths=paths,
        model_name=job.model_name,
        out_dir=job_dir(results_root, job),
        entered_ga=entered(job.series.study),
    )


def _record_success(
    session: Session, job: Job, result: SeriesResult, deliver_to: DeliverTo
) -> None:
    if job.state is not JobState.RUNNING:  # a retried commit that had gone through
        logger.warning("job %s is %s, result not recorded again", job.id, job.state.value)
        return
    # Flagged results are written like any other, marked in the SEG's series description,
    # the SR's qualitative evaluation, report.json and here; each destination's policy says
    # whether it gets them now, after a reviewer's acceptance, or never (worker.delivery.policy).
    transition(job, JobState.NEEDS_REVIEW if result.review else JobState.SUCCEEDED)
    if job.model_version != result.spec.version:
        logger.warning(
            "job %s queued for %s %s, ran %s",
            job.id,
            job.model_name,
            job.model_version,
            result.spec.version,
        )
    row = Result(
        job_id=job.id,
        model_name=result.spec.name,
        model_version=result.spec.version,
        weights_sha256=result.weights_sha256,
        inference_seconds=result.timings.get("infer", 0.0),
        review="\n".join(result.review) or None,
        validation=result.validation,
        measurements=[
            Measurement(key=m.key, label=m.label, value=m.value, unit=m.unit)
            for m in result.measurements
        ],
        outputs=[
            OutputFile(kind=o.kind, path=str(o.path), sop_instance_uid=o.sop_instance_uid)
            for o in result.outputs
        ],
    )
    row.deliveries = deliveries_for(
        job, deliver_to, flagged=bool(result.review), validation=result.validation
    )
    session.add(row)


def deliveries_for(
    job: Job,
    deliver_to: DeliverTo,
    *,
    flagged: bool,
    validation: str | None,
    decision: str | None = None,
) -> list[Delivery]:
    """One delivery of a new result of ``job`` per destination (and the sender when results
    go back to it), pending or withheld as the destination's policy says."""
    policies: list[tuple[str, DeliveryPolicy]] = [(d.name, d) for d in deliver_to.destinations]
    if deliver_to.return_to_sender and job.series.calling_host:
        policies.append((SENDER, DeliveryPolicy()))  # the sender gets the defaults
    deliveries = []
    for name, policy in policies:
        delivery = Delivery(destination=name, max_attempts=deliver_to.max_attempts)
        reason = withhold_reason(
            policy,
            flagged=flagged,
            validation=validation,
            decision=decision,
            superseded=job.superseded_at is not None,
        )
        if reason is not None:
            delivery.state, delivery.error = DeliveryState.WITHHELD, reason
            logger.info("job %s: delivery to %s %s", job.id, name, reason)
        deliveries.append(delivery)
    return deliveries


def _record_failure(
    session_factory: sessionmaker[Session], job_id: int, exc: Exception, run: RunLog
) -> JobState:
    with session_factory.begin() as session:
        job = session.get(Job, job_id, with_for_update=True)
        assert job is not None
        if job.state is not JobState.RUNNING:  # a retried commit that had gone through
            return job.state
        reason = describe_failure(exc)
        job.error_kind = failure_kind(exc)
        store_log(session, job_id, run, {})
        if isinstance(exc, SkippedError):
            transition(job, JobState.SKIPPED, error=reason)
            logger.info("job %s skipped: %s", job_id, reason)
        elif isinstance(exc, PermanentError):
            transition(job, JobState.FAILED, error=reason)
            logger.warning("job %s failed: %s", job_id, reason)
        elif job.attempts >= job.max_attempts:
            transition(job, JobState.QUARANTINED, error=reason)
            logger.error("job %s quarantined after %d attempts: %s", job_id, job.attempts, reason)
        else:
            transition(job, JobState.QUEUED, error=reason)
            job.not_before = utcnow() + timedelta(seconds=backoff_seconds(job.attempts))
            logger.warning("job %s will be retried: %s", job_id, reason)
        return job.state


def failure_kind(exc: BaseException) -> str | None:
    """``Job.error_kind``: input (bad input: it fails again), permanent, retryable; None for
    a skipped series (not a failure)."""
    if isinstance(exc, SkippedError):
        return None
    if isinstance(exc, InputError):
        return "input"
    return "permanent" if isinstance(exc, PermanentError) else "retryable"


def describe_failure(exc: BaseException) -> str:
    """The reason an operator reads: the error class and message, the time limit named."""
    if isinstance(exc, TimeLimitExceededError):  # ours: names the limit and its setting
        return str(exc)
    if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery's backstop, inside the model
        return (
            "time limit exceeded: Celery's soft limit fired (the worker's longest model limit "
            "+ 30 s, or a limit carried in an old job message)"
        )
    if isinstance(exc, NothingFoundError):  # an answer: the model found nothing to measure
        return redact_values(f"no finding: {exc}")[:2000]
    if isinstance(exc, SkippedError):
        return redact_values(str(exc))[:2000]  # a routing summary, not an error
    return redact_values(f"{type(exc).__name__}: {exc}")[:2000]


_QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
_UID = re.compile(r"^[0-9.]*$")


def redact_values(message: str) -> str:
    """``message`` with every quoted value that is not a UID replaced by ``'…'``: error
    messages of DICOM libraries quote the offending value, which may be patient data
    (``job.error`` is shown in the CLI and on the dashboard)."""

    def keep_uid(match: re.Match[str]) -> str:
        value = match.group(1) if match.group(1) is not None else match.group(2)
        return match.group(0) if _UID.match(value) else "'…'"

    return _QUOTED.sub(keep_uid, message)


@dataclass(frozen=True)
class DeliverTo:
    destinations: Sequence[DicomDestination] = ()
    max_attempts: int = 5
    return_to_sender: bool = False


def execute_job(
    session_factory: sessionmaker[Session],
    models: ModelCache,
    results_root: Path,
    job_id: int,
    deliver_to: DeliverTo = DeliverTo(),
    *,
    running_window_s: float = 0.0,
    worker: str | None = None,
    db_wait_s: float = 300.0,
    time_limit: Callable[[str], TimeLimit] | None = None,
) -> JobState | None:
    """Run job ``job_id`` to its next state; None when there was nothing to do.

    A job RUNNING since less than ``running_window_s`` is being run by another worker (a
    duplicate message): it is left alone. Older, it is a redelivery after a worker died.
    ``worker`` (the Celery node name) is recorded so that node's restart can hand the job
    back. Once the model has run, its outcome is recorded even across a database outage of
    up to ``db_wait_s``. ``time_limit(model name)``: the limit the model runs under, from
    this worker's settings (``worker.runtime.deadline``); None: no limit of its own.
    """
    claimed = claim(session_factory, job_id, results_root, running_window_s, worker)
    if claimed is None:
        return None
    with capture_log() as run:
        return run_claimed(
            session_factory,
            models,
            claimed,
            job_id,
            deliver_to=deliver_to,
            db_wait_s=db_wait_s,
            run=run,
            limit=time_limit(claimed.model_name) if time_limit is not None else None,
            worker=worker,
        )


def run_claimed(
    session_factory: sessionmaker[Session],
    models: ModelCache,
    claimed: Claimed,
    job_id: int,
    *,
    deliver_to: DeliverTo,
    db_wait_s: float,
    run: RunLog,
    limit: TimeLimit | None = None,
    worker: str | None = None,
) -> JobState:
    """Run a claimed job alone, under ``limit``, and record its outcome."""
    try:
        # The promoted version when an operator promoted one (worker.shadow.installs).
        spec = live_spec(session_factory, get_spec(claimed.model_name))
    except KeyError as exc:
        return record_failure(session_factory, job_id, PermanentError(exc.args[0]), run, db_wait_s)
    try:
        with deadline(limit, worker):
            result = run_series(
                claimed.paths, models, claimed.out_dir, spec=spec, entered_ga=claimed.entered_ga
            )
    except Exception as exc:  # every failure is recorded; the error class decides retry
        logger.debug("job %s raised", job_id, exc_info=True)
        return record_failure(session_factory, job_id, exc, run, db_wait_s)
    return record_success(
        session_factory, job_id, result, run, deliver_to=deliver_to, db_wait_s=db_wait_s
    )


def record_failure(
    session_factory: sessionmaker[Session],
    job_id: int,
    exc: Exception,
    run: RunLog,
    db_wait_s: float,
) -> JobState:
    """A failed attempt of running job ``job_id`` recorded (the error class decides retry),
    across a database outage of up to ``db_wait_s``."""
    return with_db_retry(
        lambda: _record_failure(session_factory, job_id, exc, run),
        what=f"recording the failure of job {job_id}",
        total_s=db_wait_s,
    )


def record_success(
    session_factory: sessionmaker[Session],
    job_id: int,
    result: SeriesResult,
    run: RunLog,
    *,
    deliver_to: DeliverTo,
    db_wait_s: float,
) -> JobState:
    """Running job ``job_id``'s result, log and deliveries recorded, across a database outage
    of up to ``db_wait_s``; its stage timings observed."""

    def succeed() -> None:
        with session_factory.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            assert job is not None
            if job.state is JobState.RUNNING:
                store_log(session, job_id, run, result.timings)
            _record_success(session, job, result, deliver_to)

    with_db_retry(succeed, what=f"recording the result of job {job_id}", total_s=db_wait_s)
    observe_pipeline(result.spec.name, result.timings)
    state = JobState(result.status)
    logger.info("job %s %s in %.2f s", job_id, state.value, sum(result.timings.values()))
    return state

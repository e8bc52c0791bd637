"""Cross-series batching: a worker process that claims a job of a single-frame model
(``ModelSpec.batch_series``: fetal head US, chest film) also claims up to
``MEDSEG_BATCH_MAX - 1`` more queued jobs of that model, waiting up to ``MEDSEG_BATCH_WAIT_MS``
for them while the batch is not full, and runs the frames of all of them through the network
in one forward pass (at the predictor's batch size for the device). Each job is then
post-processed, written and recorded on its own, exactly as ``execute_job`` records a job
that ran alone: its own state, attempt, error and retry, stage timings and log lines. A job
whose reading, post-processing or output fails fails alone; an error of the shared forward
pass (out of device memory, say) is every member's, retried as each one's own attempt.

Why the batch is claimed from the database. The database is the queue's source of truth:
the outbox publishes one Celery message per queued job row, a worker claims the job with a
row lock and moves it to RUNNING, and a message whose job is already running or finished is
dropped as a duplicate (``worker.runtime.jobs.claim``). So a worker takes more jobs by
claiming their rows directly (``FOR UPDATE SKIP LOCKED``: two workers filling batches at
once take different jobs, and neither waits on the other's rows); the messages of those
jobs arrive later as duplicates and are dropped on the path that already handles
redelivered messages. Nothing changes in the broker or the gateway, and recovery stays as
it is: batch members carry this worker's node name (its restart hands them back) and their
start time (the sweeper gives back jobs running past Redis' visibility timeout). Consuming
several Celery messages in one task instead (celery.contrib.batches, prefetch > 1) would
reserve messages in one process that other processes could run, and acknowledge them apart
from the jobs' outcomes.

The model's time limit (``MEDSEG_MODEL_TIME_LIMITS``) bounds the whole batch, so a batch
stays within what the Celery backstop, Redis' visibility timeout and the running window
assume of one job; when it fires, the members not yet recorded fail with it (retried).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow
from worker.core.registry import ModelSpec, get_spec
from worker.pipeline.batching import Batching
from worker.pipeline.cache import ModelCache
from worker.pipeline.grouped import (
    Loaded,
    finish_loaded,
    forward_group,
    groupable,
    load_prepared,
)
from worker.pipeline.run import runnable
from worker.runtime.deadline import TimeLimitExceededError, deadline
from worker.runtime.joblog import RunLog
from worker.runtime.joblog import capture as capture_log
from worker.runtime.jobs import (
    Claimed,
    DeliverTo,
    claim,
    record_failure,
    record_success,
    run_claimed,
    take,
)
from worker.shadow.installs import live_spec

if TYPE_CHECKING:
    from pathlib import Path

    from worker.core.timelimits import TimeLimit

logger = logging.getLogger(__name__)

#: Where results go when the caller names no destination (as ``execute_job``'s default).
NOWHERE = DeliverTo()
#: How often a worker filling a batch looks again for newly queued jobs while it waits.
POLL_S = 0.005


@dataclass
class _Member:
    claimed: Claimed
    run: RunLog = field(default_factory=RunLog)
    loaded: Loaded | None = None


def execute_batch(
    session_factory: sessionmaker[Session],
    models: ModelCache,
    results_root: Path,
    job_id: int,
    deliver_to: DeliverTo = NOWHERE,
    *,
    batching: Batching,
    running_window_s: float = 0.0,
    worker: str | None = None,
    db_wait_s: float = 300.0,
    time_limit: Callable[[str], TimeLimit] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[int, JobState]:
    """Run job ``job_id`` and, for a single-frame model and ``batching`` over 1 job, the queued
    jobs of the same model it claims with it; {job id: its next state} of every job run,
    ``job_id`` first (empty: nothing to do, as ``execute_job`` returning None).

    ``running_window_s``, ``worker``, ``db_wait_s``, ``time_limit``: as for ``execute_job``.
    ``clock`` and ``sleep`` time the wait for more jobs (``batching.wait_s``)."""
    leader = claim(session_factory, job_id, results_root, running_window_s, worker)
    if leader is None:
        return {}
    limit = time_limit(leader.model_name) if time_limit is not None else None
    spec = _groupable_spec(session_factory, models, leader.model_name, batching)
    mates: list[Claimed] = []
    if spec is not None:
        mates = claim_mates(
            session_factory, leader, results_root, worker, batching, clock=clock, sleep=sleep
        )
    if spec is None or not mates:  # alone, exactly as execute_job runs it
        with capture_log() as run:
            state = run_claimed(
                session_factory,
                models,
                leader,
                job_id,
                deliver_to=deliver_to,
                db_wait_s=db_wait_s,
                run=run,
                limit=limit,
                worker=worker,
            )
        return {job_id: state}
    logger.info(
        "jobs %s: one batch of %d %s jobs",
        ", ".join(str(c.job_id) for c in [leader, *mates]),
        1 + len(mates),
        spec.name,
    )
    batch = _Batch(session_factory, models, spec, deliver_to, db_wait_s)
    members = [_Member(c) for c in [leader, *mates]]
    try:
        with deadline(limit, worker):
            batch.run(members)
    except TimeLimitExceededError as exc:  # the batch's time is up: the rest fail with it
        for member in members:
            if member.claimed.job_id not in batch.states:
                batch.fail(member, exc)
    return {m.claimed.job_id: batch.states[m.claimed.job_id] for m in members}


def _groupable_spec(
    session_factory: sessionmaker[Session], models: ModelCache, name: str, batching: Batching
) -> ModelSpec | None:
    """The spec that runs ``name``'s jobs (its promoted version, or its fallback where it
    cannot run here) when they run in batches; None: one job at a time. Any error here is
    left to the lone run, which records it as the job's own."""
    if batching.max_jobs <= 1:
        return None
    try:
        spec = runnable(live_spec(session_factory, get_spec(name)))
        return spec if groupable(spec, models) is not None else None
    except Exception:
        logger.debug("%s: not batched", name, exc_info=True)
        return None


def claim_mates(
    session_factory: sessionmaker[Session],
    leader: Claimed,
    results_root: Path,
    worker: str | None,
    batching: Batching,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Claimed]:
    """Up to ``batching.max_jobs - 1`` queued jobs of the leader's model and queue, moved to
    RUNNING for ``worker``, oldest first; while fewer are queued, looked for again every
    ``POLL_S`` until ``batching.wait_s`` after the call."""
    want = batching.max_jobs - 1
    until = clock() + batching.wait_s
    mates = _claim_queued(session_factory, leader, results_root, worker, want)
    while len(mates) < want:
        left = until - clock()
        if left <= 0:
            break
        sleep(min(POLL_S, left))
        mates += _claim_queued(session_factory, leader, results_root, worker, want - len(mates))
    return mates


def _claim_queued(
    session_factory: sessionmaker[Session],
    leader: Claimed,
    results_root: Path,
    worker: str | None,
    count: int,
) -> list[Claimed]:
    with session_factory.begin() as session:
        queue = select(Job.queue).where(Job.id == leader.job_id).scalar_subquery()
        jobs = session.scalars(
            select(Job)
            .where(
                Job.state == JobState.QUEUED,
                Job.model_name == leader.model_name,
                Job.queue == queue,
                or_(Job.not_before.is_(None), Job.not_before <= utcnow()),
            )
            .order_by(Job.id)
            .limit(count)
            .with_for_update(skip_locked=True)
        ).all()
        note = f", batched with job {leader.job_id}"
        return [take(job, results_root, worker, note) for job in jobs]


class _Batch:
    """The members' stages: each read and prepared, one forward pass, each finished and
    recorded as soon as it is done. ``states``: the outcome recorded for each member."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        models: ModelCache,
        spec: ModelSpec,
        deliver_to: DeliverTo,
        db_wait_s: float,
    ) -> None:
        self.session_factory = session_factory
        self.models = models
        self.spec = spec
        self.deliver_to = deliver_to
        self.db_wait_s = db_wait_s
        self.states: dict[int, JobState] = {}

    def fail(self, member: _Member, exc: Exception) -> None:
        job_id = member.claimed.job_id
        logger.debug("job %s raised", job_id, exc_info=exc)
        self.states[job_id] = record_failure(
            self.session_factory, job_id, exc, member.run, self.db_wait_s
        )

    def run(self, members: list[_Member]) -> None:
        ready = [m for m in members if self._load(m)]
        if not ready:
            return
        group = [m.loaded for m in ready if m.loaded is not None]
        try:
            with contextlib.ExitStack() as logs:  # the shared pass's warnings: every member's
                for member in ready:
                    logs.enter_context(capture_log(member.run))
                raws = forward_group(group[0].model, group, self.models)
        except TimeLimitExceededError:
            raise
        except Exception as exc:  # the shared pass failed: each member's attempt failed
            for member in ready:
                self.fail(member, exc)
            return
        for member, raw in zip(ready, raws, strict=True):
            self._finish(member, raw)

    def _load(self, member: _Member) -> bool:
        claimed = member.claimed
        with capture_log(member.run):
            try:
                member.loaded = load_prepared(
                    claimed.paths, self.spec, self.models, entered_ga=claimed.entered_ga
                )
            except TimeLimitExceededError:
                raise
            except Exception as exc:  # this member's own failure
                self.fail(member, exc)
                return False
        return True

    def _finish(self, member: _Member, raw: object) -> None:
        claimed, loaded = member.claimed, member.loaded
        assert loaded is not None
        member.loaded = None  # its frames are freed once it is written
        with capture_log(member.run):
            try:
                result = finish_loaded(loaded, raw, claimed.out_dir)
            except TimeLimitExceededError:
                raise
            except Exception as exc:  # this member's own failure
                self.fail(member, exc)
                return
        self.states[claimed.job_id] = record_success(
            self.session_factory,
            claimed.job_id,
            result,
            member.run,
            deliver_to=self.deliver_to,
            db_wait_s=self.db_wait_s,
        )

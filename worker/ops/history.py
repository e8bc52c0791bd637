"""A job's history as operators read it: its attempts (each with its own error, worker and
stage timings), the lines logged while each ran, and the audit trail of what operators did
to it. Shown on the study page and by ``medseg show``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Job, JobAttempt, JobLogLine, Series


@dataclass
class JobHistory:
    attempts: list[JobAttempt] = field(default_factory=list)  # oldest first
    log: dict[int, list[JobLogLine]] = field(default_factory=dict)  # by attempt number
    audit: list[AuditEvent] = field(default_factory=list)  # oldest first


def job_histories(session: Session, job_ids: Sequence[int]) -> dict[int, JobHistory]:
    """The history of each job named (three queries whatever their number)."""
    found = {job_id: JobHistory() for job_id in job_ids}
    if not found:
        return found
    ids = list(found)
    attempts = session.scalars(
        select(JobAttempt).where(JobAttempt.job_id.in_(ids)).order_by(JobAttempt.number)
    )
    for attempt in attempts:
        found[attempt.job_id].attempts.append(attempt)
    lines = session.scalars(
        select(JobLogLine).where(JobLogLine.job_id.in_(ids)).order_by(JobLogLine.id)
    )
    for line in lines:
        found[line.job_id].log.setdefault(line.attempt, []).append(line)
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.job_id.in_(ids)).order_by(AuditEvent.id)
    )
    for event in events:
        found[event.job_id or 0].audit.append(event)
    return found


def timings_text(attempt: JobAttempt) -> str:
    """``load 0.12 s, infer 1.30 s, export 0.20 s``; empty when none were kept."""
    if not attempt.timings:
        return ""
    values: dict[str, float] = json.loads(attempt.timings)
    return ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in values.items())


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def attempt_text(attempt: JobAttempt) -> str:
    """One line: number, start and end (UTC), worker, outcome and error."""
    outcome = attempt.outcome or "running"
    error = f": {attempt.error}" if attempt.error else ""
    return (
        f"attempt {attempt.number}  {when(attempt.started_at)} -> {when(attempt.finished_at)}"
        f"  on {attempt.worker or '-'}  {outcome}{error}"
    )


def event_text(event: AuditEvent) -> str:
    detail = f": {event.detail}" if event.detail else ""
    target = f" delivery {event.delivery_id}" if event.delivery_id else ""
    return (
        f"{when(event.at)} UTC  {event.actor} ({event.source})  {event.action}{target}"
        f"  {event.outcome}{detail}"
    )


def print_history(session_factory: sessionmaker[Session], study_id: int, out: TextIO) -> None:
    """Each job of the study: attempts with their log lines, then what operators did."""
    with session_factory() as session:
        jobs = session.scalars(
            select(Job).join(Series).where(Series.study_id == study_id).order_by(Job.id)
        ).all()
        histories = job_histories(session, [job.id for job in jobs])
        for job in jobs:
            history = histories[job.id]
            if not history.attempts and not history.audit:
                continue
            print(f"  history of job {job.id} ({job.state.value}):", file=out)
            for attempt in history.attempts:
                print(f"    {attempt_text(attempt)}", file=out)
                for line in history.log.get(attempt.number, []):
                    print(f"      {line.level:<7} {line.message}", file=out)
            for event in history.audit:
                print(f"    {event_text(event)}", file=out)

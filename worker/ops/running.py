"""What a running job is doing: its worker, for how long, and whether that worker is alive.

A job stays ``running`` in the database when its worker dies (killed, out of memory, its
machine gone) until the node restarts and hands it back, or the sweeper gives up on it. The
workers that answer the broker say which runs still have someone behind them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from db.models import Job, JobState, utcnow


@dataclass(frozen=True)
class Run:
    """A running job as an operator reads it."""

    worker: str | None
    running_for_s: float | None
    #: True: the workers were asked and this job's worker is not among them; None: unknown.
    worker_gone: bool | None

    @property
    def running_for(self) -> str:
        return "-" if self.running_for_s is None else duration(self.running_for_s)

    @property
    def label(self) -> str:
        """``medseg@cpu1, 3 min 5 s``, with ``(worker gone)`` when it is."""
        text = f"{self.worker or 'worker unknown'}, {self.running_for}"
        return f"{text} (worker gone)" if self.worker_gone else text


def duration(seconds: float) -> str:
    """ "42 s", "3 min 5 s", "2 h 10 min"."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def run_of(job: Job, workers: Iterable[str] | None, now: datetime | None = None) -> Run | None:
    """The run of ``job`` when it is running, else None. ``workers``: the workers alive (from
    the broker); None when they could not be asked."""
    if job.state is not JobState.RUNNING:
        return None
    now = now or utcnow()
    started = job.started_at
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)  # SQLite returns naive UTC
    alive = None if workers is None else set(workers)
    return Run(
        worker=job.worker,
        running_for_s=max(0.0, (now - started).total_seconds()) if started else None,
        worker_gone=None if alive is None else job.worker not in alive,
    )


def runs(jobs: Iterable[Job], workers: Iterable[str] | None) -> dict[int, Run]:
    """``run_of`` for each running job of ``jobs``, by job ID."""
    now = utcnow()
    alive = None if workers is None else list(workers)
    found = {job.id: run_of(job, alive, now) for job in jobs}
    return {job_id: run for job_id, run in found.items() if run is not None}

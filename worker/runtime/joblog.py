"""Per-job log lines in the database: the warnings logged while a job runs and its stage
timings, kept with the attempt that produced them and shown on the job's page and in
``medseg show``. Bounded: at most ``MAX_LINES`` a run, ``MAX_CHARS`` a line; quoted values
are redacted the way job errors are (they may be patient data)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from db.attempts import record_timings
from db.models import JobLogLine, utcnow

logger = logging.getLogger(__name__)

MAX_LINES = 50
MAX_CHARS = 300


@dataclass
class RunLog:
    """What one run logged: (time, level, message), bounded; ``dropped`` counts the rest."""

    lines: list[tuple[datetime, str, str]] = field(default_factory=list)
    dropped: int = 0

    def add(self, level: str, message: str) -> None:
        from worker.runtime.jobs import redact_values

        if len(self.lines) >= MAX_LINES:
            self.dropped += 1
            return
        text = " ".join(redact_values(message).split())
        if len(text) > MAX_CHARS:
            text = text[: MAX_CHARS - 1] + "…"
        self.lines.append((utcnow(), level, text))


class _Capture(logging.Handler):
    """Warnings and errors logged by this thread while the job runs."""

    def __init__(self, into: RunLog) -> None:
        super().__init__(logging.WARNING)
        self._into = into
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread or record.name == __name__:
            return
        try:
            self._into.add(record.levelname, record.getMessage())
        except Exception:  # a log line must never fail the job
            self.handleError(record)


@contextmanager
def capture(into: RunLog | None = None) -> Iterator[RunLog]:
    """Collect what this thread logs at WARNING and above until the block ends, in ``into``
    (a job's log that several blocks add to, as in a batch of jobs) or a new log."""
    run = RunLog() if into is None else into
    handler = _Capture(run)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield run
    finally:
        root.removeHandler(handler)


def store(session: Session, job_id: int, run: RunLog, timings: dict[str, float]) -> None:
    """Keep ``run``'s lines and ``timings`` with the job's current attempt (same transaction
    as the attempt's outcome)."""
    number = record_timings(session, job_id, timings) if timings else None
    if number is None:
        from db.attempts import current_attempt

        attempt = current_attempt(session, job_id)
        number = attempt.number if attempt is not None else 0
    lines = list(run.lines)
    if timings:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
        lines.append((utcnow(), "INFO", f"stage timings: {stages}"))
    if run.dropped:
        lines.append((utcnow(), "INFO", f"{run.dropped} more line(s) not kept"))
    for at, level, message in lines:
        session.add(
            JobLogLine(job_id=job_id, attempt=number, at=at, level=level[:8], message=message)
        )

"""Background loop of the gateway: complete quiet series, then drain the job outbox."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import utcnow
from dicom_gateway.completion import QuietPolicy, complete_quiet_series, mark_interrupted
from dicom_gateway.indexer import IndexQueue
from dicom_gateway.outbox import Publisher, dispatch_pending
from dicom_gateway.sweeper import republish_lost, sweep
from worker.core.retention import purge_inputs
from worker.core.settings import Settings
from worker.core.timelimits import visibility_timeout_seconds

PURGE_EVERY_SECONDS = 3600.0
SWEEP_MARGIN_SECONDS = 300.0

logger = logging.getLogger(__name__)


class CompletionMonitor(threading.Thread):
    """Runs off the association threads so slow work never delays a C-STORE response.

    ``recover``: the gateway started while the database was away; run first when it answers.

    ``held_task_ids`` asks the broker which messages it still holds (``worker.core.
    broker_held``); with it, a queued job whose message the broker lost is published again
    after ``LOST_MESSAGE_AFTER_SECONDS`` instead of ``REQUEUE_AFTER_SECONDS``.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        publish: Publisher,
        settings: Settings,
        *,
        index: IndexQueue | None = None,
        held_task_ids: Callable[[], set[str]] | None = None,
        recover: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(name="medseg-completion", daemon=True)
        self._session_factory = session_factory
        self._publish = publish
        self._settings = settings
        self._poll = settings.completion_poll_seconds
        self._quiet = QuietPolicy(
            settings.series_quiet_seconds,
            settings.series_quiet_seconds_by_ae,
            settings.series_quiet_seconds_by_model,
        )
        self._running_timeout_s = visibility_timeout_seconds(settings) + SWEEP_MARGIN_SECONDS
        self._next_sweep = 0.0
        self._next_purge = 0.0
        self._stop_event = threading.Event()
        self._index = index
        self._held_task_ids = held_task_ids
        #: Crash recovery not done at start (the database was away): done at the first tick
        #: the database answers, before anything else is written.
        self._recover = recover
        # The series a sender was sending when the previous gateway stopped are quiet only a
        # period after this start; marked at the first tick the database answers.
        self._started_at = utcnow()
        self._interruptions_marked = False

    def tick(self) -> None:
        settings = self._settings
        if self._recover is not None:
            self._recover()
            self._recover = None
            logger.info("database back: stored instances without a record recorded")
        if self._index is not None:
            self._index.flush()  # rows first, so completion sees every stored instance
        if not self._interruptions_marked:
            mark_interrupted(self._session_factory, now=self._started_at)
            self._interruptions_marked = True
        complete_quiet_series(self._session_factory, self._quiet, settings.job_max_attempts)
        if time.monotonic() >= self._next_sweep:
            sweep(
                self._session_factory,
                running_timeout_s=self._running_timeout_s,
                requeue_after_s=settings.requeue_after_seconds,
            )
            self._republish_lost()
            self._next_sweep = time.monotonic() + settings.sweep_interval_seconds
        if settings.retention_days and time.monotonic() >= self._next_purge:
            purge_inputs(self._session_factory, timedelta(days=settings.retention_days))
            self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        dispatch_pending(self._session_factory, self._publish)

    def _republish_lost(self) -> None:
        if self._held_task_ids is None:
            return
        try:
            republish_lost(
                self._session_factory,
                self._held_task_ids,
                lost_after_s=self._settings.lost_message_after_seconds,
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:  # the broker client raises many kinds; all mean "not asked"
            logger.warning("could not ask the broker which messages it holds: %s", exc)

    def run(self) -> None:
        while not self._stop_event.wait(self._poll):
            try:
                self.tick()
            except SQLAlchemyError as exc:
                logger.error("database unavailable in completion monitor: %s", type(exc).__name__)
            except Exception:
                logger.exception("completion monitor tick failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)
        if self._index is not None and self._index.pending():
            try:
                self._index.flush()
            except SQLAlchemyError as exc:
                # The files are on disk: the next start records them (reconcile).
                logger.error("instances left unrecorded at stop: %s", type(exc).__name__)

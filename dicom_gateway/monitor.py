"""Background loop of the gateway: complete quiet series, then drain the job outbox."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway.completion import complete_quiet_series
from dicom_gateway.outbox import Publisher, dispatch_pending

logger = logging.getLogger(__name__)


class CompletionMonitor(threading.Thread):
    """Runs off the association threads so slow work never delays a C-STORE response."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        publish: Publisher,
        *,
        quiet_seconds: float,
        poll_seconds: float,
        max_attempts: int,
    ) -> None:
        super().__init__(name="medseg-completion", daemon=True)
        self._session_factory = session_factory
        self._publish = publish
        self._quiet = quiet_seconds
        self._poll = poll_seconds
        self._max_attempts = max_attempts
        self._stop_event = threading.Event()

    def tick(self) -> None:
        complete_quiet_series(self._session_factory, self._quiet, self._max_attempts)
        dispatch_pending(self._session_factory, self._publish)

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

"""The broker's view, read in a background thread: queue depths and the workers consuming
each queue.

Asking the workers is a broadcast that waits for their replies (1 s) and, with Redis down,
for kombu's reconnection attempts (seconds): it never runs on a request's path. The dashboard
and the gateway's metrics read the latest view (``BrokerProbe.latest``); ``look`` asks once,
for a command (``medseg status``) that wants the answer now.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.core.broker import QUEUES

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
ASK_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class BrokerView:
    #: Messages waiting per queue; None where the broker could not be read.
    queue_depth: dict[str, int | None]
    #: The workers that answered; None: they could not be asked (broker down).
    workers: list[str] | None
    #: The workers consuming each queue; None: they could not be asked.
    consumers: dict[str, list[str]] | None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def queue_depths(redis_client: Any, key_prefix: str = "") -> dict[str, int | None]:
    depth: dict[str, int | None] = {}
    for queue in QUEUES:
        try:
            depth[queue] = int(redis_client.llen(key_prefix + queue))
        except Exception:  # broker down (or no client): say so, never fail the caller
            depth[queue] = None
    return depth


def ask_workers(
    celery_app: Any | None, timeout_s: float = ASK_TIMEOUT_S
) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    """The workers alive and the queues each consumes (one broadcast); (None, None) when
    they cannot be asked."""
    if celery_app is None:
        return None, None
    try:
        replies = celery_app.control.inspect(timeout=timeout_s).active_queues() or {}
    except Exception:  # broker down: say so, do not fail the caller
        return None, None
    consumers: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            consumers.setdefault(str(queue.get("name")), []).append(worker)
    return sorted(replies), consumers


def look(
    redis_client: Any,
    celery_app: Any | None,
    key_prefix: str = "",
    timeout_s: float = ASK_TIMEOUT_S,
) -> BrokerView:
    """Queue depths, then the workers; the workers are not asked when the broker is down."""
    depth = queue_depths(redis_client, key_prefix)
    if any(value is None for value in depth.values()):
        return BrokerView(depth, None, None)
    workers, consumers = ask_workers(celery_app, timeout_s)
    return BrokerView(depth, workers, consumers)


class BrokerProbe:
    """``look`` every ``interval_s`` in a daemon thread; ``latest`` never asks the broker."""

    def __init__(
        self,
        redis_client: Any,
        celery_app: Any | None,
        key_prefix: str = "",
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._args = (redis_client, celery_app, key_prefix)
        self._interval_s = interval_s
        self._view: BrokerView | None = None
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.looks = 0  # how many times the broker was asked (tests, logs)

    def start(self) -> BrokerProbe:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def latest(self, wait_s: float = 0.0) -> BrokerView | None:
        """The latest view; only before the first one exists, wait up to ``wait_s`` for it.
        None when there is none yet."""
        self.start()
        if wait_s > 0:
            self._first.wait(wait_s)
        with self._lock:
            return self._view

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                view = look(*self._args)
            except Exception:  # never let the thread die: the next look may succeed
                logger.exception("broker probe failed")
            else:
                with self._lock:
                    self._view = view
                    self.looks += 1
                self._first.set()
            self._stop.wait(self._interval_s)

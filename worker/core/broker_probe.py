"""The broker's view, read in a background thread: queue depths and the workers consuming
each queue.

Asking the workers is a broadcast that waits for their replies (1 s) and, with Redis down,
for kombu's reconnection attempts (seconds): it never runs on a request's path. The dashboard
and the gateway's metrics read the latest view (``BrokerProbe.latest``). Each probe also
leaves the workers it found in Redis (``VIEW_KEY``, expiring): ``medseg status`` reads them
there when fresh (``look(..., shared_max_age_s=...)``); before that it reads the workers' own
heartbeats (``worker.core.worker_beats``), and asks the workers itself only when neither is
there, so it answers well within a second.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.core.broker import QUEUES

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
ASK_TIMEOUT_S = 1.0
#: Where probes leave the workers they found (JSON, under the broker key prefix).
VIEW_KEY = "medseg:broker-view"


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


def publish_view(
    redis_client: Any, view: BrokerView, key_prefix: str = "", ttl_s: float = 30.0
) -> None:
    """Leave the workers ``view`` found in Redis for ``ttl_s``; nothing when it has none."""
    if view.workers is None or view.consumers is None:
        return
    payload = {
        "workers": view.workers,
        "consumers": view.consumers,
        "checked_at": view.checked_at.isoformat(),
    }
    try:
        redis_client.set(key_prefix + VIEW_KEY, json.dumps(payload), px=int(ttl_s * 1000))
    except Exception:  # broker down: the next look tries again
        logger.debug("could not leave the broker view in Redis", exc_info=True)


def shared_view(
    redis_client: Any, key_prefix: str = "", max_age_s: float = 20.0
) -> tuple[list[str], dict[str, list[str]], datetime] | None:
    """The workers a probe found less than ``max_age_s`` ago (workers, consumers, when)."""
    try:
        raw = redis_client.get(key_prefix + VIEW_KEY)
        if raw is None:
            return None
        payload = json.loads(raw)
        checked_at = datetime.fromisoformat(payload["checked_at"])
        workers = [str(w) for w in payload["workers"]]
        consumers = {str(q): [str(w) for w in ws] for q, ws in payload["consumers"].items()}
    except Exception:  # unreadable or absent: ask the workers instead
        return None
    if (datetime.now(UTC) - checked_at).total_seconds() > max_age_s:
        return None
    return workers, consumers, checked_at


def look(
    redis_client: Any,
    celery_app: Any | None,
    key_prefix: str = "",
    timeout_s: float = ASK_TIMEOUT_S,
    *,
    shared_max_age_s: float | None = None,
    beats_max_age_s: float | None = None,
) -> BrokerView:
    """Queue depths, then the workers; the workers are not asked when the broker is down.
    ``beats_max_age_s``: take the workers from their own heartbeats in Redis
    (``worker.core.worker_beats``), entries that fresh; ``shared_max_age_s``: else the
    workers a probe left in Redis when that fresh. The workers are asked only when neither
    is there."""
    depth = queue_depths(redis_client, key_prefix)
    if any(value is None for value in depth.values()):
        return BrokerView(depth, None, None)
    if beats_max_age_s is not None:
        from worker.core.worker_beats import read_beats

        beats = read_beats(redis_client, key_prefix, beats_max_age_s)
        if beats is not None:
            return BrokerView(depth, beats[0], beats[1])
    if shared_max_age_s is not None:
        shared = shared_view(redis_client, key_prefix, shared_max_age_s)
        if shared is not None:
            return BrokerView(depth, shared[0], shared[1], shared[2])
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
                redis_client, _, key_prefix = self._args
                publish_view(redis_client, view, key_prefix, ttl_s=3 * self._interval_s)
            self._stop.wait(self._interval_s)

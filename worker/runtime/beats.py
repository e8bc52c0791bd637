"""The worker leaves its heartbeat in Redis (``worker.core.worker_beats``) on each Celery
heartbeat, so ``medseg status`` knows who is alive without a broadcast.

Celery sends a heartbeat every 2 s from the worker's main process while task events are on
(``-E``, ``worker_send_task_events``); the ``heartbeat_sent`` signal runs there, not in the
pool's processes, so a long job does not stop it. A failed write is logged at DEBUG and
never disturbs the worker: the next heartbeat tries again.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.signals import heartbeat_sent, worker_shutdown

from worker.core.worker_beats import write_beat, write_stopped

logger = logging.getLogger(__name__)


@functools.cache
def _client() -> tuple[Any, str]:
    """One Redis client per process (short timeouts: this runs on the worker's event loop)."""
    import redis

    from worker.core.settings import get_settings

    settings = get_settings()
    client = redis.Redis.from_url(
        settings.broker_url, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    return client, settings.broker_key_prefix


@heartbeat_sent.connect
def _beat(sender: Any = None, **_: Any) -> None:
    eventer = getattr(sender, "eventer", None)
    node = str(getattr(eventer, "hostname", "") or "")
    if eventer is None or not node:
        return
    try:
        queues = list(eventer.app.amqp.queues.consume_from)
        client, prefix = _client()
        write_beat(client, prefix, node, queues)
    except Exception:  # Redis away for a moment: the next heartbeat writes again
        logger.debug("could not leave this worker's heartbeat in Redis", exc_info=True)


@worker_shutdown.connect
def _stopped(sender: Any = None, **_: Any) -> None:
    node = str(getattr(sender, "hostname", "") or "")
    if not node:
        return
    try:
        client, prefix = _client()
        write_stopped(client, prefix, node)
    except Exception:
        logger.debug("could not mark this worker stopped in Redis", exc_info=True)

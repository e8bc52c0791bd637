"""What the Redis broker still holds: the task ids of the messages waiting in our queues and
of those a worker has taken but not acknowledged.

A job the outbox published whose task id is in neither place was lost (Redis restarted
empty, a FLUSHALL): the gateway publishes it again (``dicom_gateway.sweeper``). The layout is
kombu's Redis transport: a list per queue (plus one per priority step), and a hash
``unacked`` of the messages delivered to a consumer, each ``[message, exchange, routing key]``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from worker.core.broker import QUEUES

logger = logging.getLogger(__name__)

#: kombu's Redis transport: a queue's priority lists are named queue + separator + step.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)  # step 0 is the queue's own list
_UNACKED = "unacked"


class RedisReader(Protocol):
    """The few redis-py calls this module makes."""

    def lrange(self, name: str, start: int, end: int) -> Any: ...

    def hvals(self, name: str) -> Any: ...


def _queue_keys(prefix: str) -> list[str]:
    keys: list[str] = []
    for queue in QUEUES:
        keys.append(prefix + queue)
        keys.extend(f"{prefix}{queue}{_PRIORITY_SEPARATOR}{step}" for step in _PRIORITY_STEPS)
    return keys


def _task_id(message: Any) -> str | None:
    try:
        task_id = message["headers"]["id"]
    except (KeyError, TypeError):
        return None
    return str(task_id) if task_id else None


def held_task_ids(client: RedisReader, key_prefix: str = "") -> set[str]:
    """Task ids of every message waiting in a queue or delivered and not yet acknowledged.

    Raises what redis-py raises when the broker is unreachable: then nothing can be said.
    """
    held: set[str] = set()
    for key in _queue_keys(key_prefix):
        for raw in client.lrange(key, 0, -1):
            try:
                task_id = _task_id(json.loads(raw))
            except ValueError:
                task_id = None
            if task_id is not None:
                held.add(task_id)
    for raw in client.hvals(key_prefix + _UNACKED):
        try:
            message = json.loads(raw)[0]
        except (ValueError, IndexError, KeyError, TypeError):
            continue
        task_id = _task_id(message)
        if task_id is not None:
            held.add(task_id)
    return held


def redis_reader(broker_url: str) -> RedisReader | None:
    """A client reading the broker at ``broker_url``; None when it is not Redis (then lost
    messages are only found by their age, ``REQUEUE_AFTER_SECONDS``)."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    client: RedisReader = redis.Redis.from_url(
        broker_url, socket_timeout=5, socket_connect_timeout=2
    )
    return client

"""The workers' own heartbeats in Redis: who is alive and which queues each consumes, read
with one ``HGETALL`` instead of a Celery broadcast (which waits its whole timeout for replies).

Each worker (``worker.runtime.beats``) writes its entry on every Celery heartbeat (every 2 s,
task events on) into one hash under the broker key prefix: field the node name, value JSON
with the queues it consumes and when. A worker that shuts down marks its entry stopped; a
killed one stops writing and its entry goes stale. The hash expires a day after its last
write, so a stack that no longer runs leaves nothing behind.

Readers (``medseg status``, ``medseg jobs``) take the fresh entries. Where the hash does not
exist (no worker of this version has run against this broker for a day) they cannot tell
"no worker" from "a worker that writes no heartbeats" and ask the workers instead.
"""

from __future__ import annotations

import json
import time
from typing import Any

#: The hash of heartbeats (under the broker key prefix).
BEATS_KEY = "medseg:worker-beats"
#: An entry this old is a worker that stopped beating (killed, frozen, cut off): Celery's
#: heartbeats come every 2 s; five missed ones, and some clock skew, before it is called gone.
BEAT_MAX_AGE_S = 10.0
#: The hash's lifetime after its last write.
BEATS_TTL_S = 24 * 3600


def write_beat(
    client: Any, key_prefix: str, node: str, queues: list[str], now: float | None = None
) -> None:
    """Record that ``node`` is alive and consumes ``queues``."""
    entry = {"queues": sorted(queues), "at": time.time() if now is None else now}
    key = key_prefix + BEATS_KEY
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, node, json.dumps(entry))
    pipe.expire(key, BEATS_TTL_S)
    pipe.execute()


def write_stopped(client: Any, key_prefix: str, node: str) -> None:
    """``node`` shut down: its entry stays (so readers still trust the hash), marked stopped."""
    key = key_prefix + BEATS_KEY
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, node, json.dumps({"queues": [], "at": time.time(), "stopped": True}))
    pipe.expire(key, BEATS_TTL_S)
    pipe.execute()


def read_beats(
    client: Any, key_prefix: str = "", max_age_s: float = BEAT_MAX_AGE_S, now: float | None = None
) -> tuple[list[str], dict[str, list[str]]] | None:
    """The workers alive (sorted) and the workers consuming each queue, as a broadcast to
    the workers would answer; None where there is no heartbeat hash or it cannot be read."""
    try:
        raw = client.hgetall(key_prefix + BEATS_KEY)
    except Exception:  # broker down: the caller says so
        return None
    if not raw:
        return None
    now = time.time() if now is None else now
    workers: list[str] = []
    consumers: dict[str, list[str]] = {}
    for field, value in sorted(raw.items()):
        try:
            entry = json.loads(value)
            at, queues = float(entry["at"]), [str(q) for q in entry["queues"]]
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: not counted as alive
        if entry.get("stopped") or now - at > max_age_s:
            continue
        node = field.decode() if isinstance(field, bytes) else str(field)
        workers.append(node)
        for queue in queues:
            consumers.setdefault(queue, []).append(node)
    return workers, consumers

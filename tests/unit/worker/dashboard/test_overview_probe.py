"""Issue 21 item 9: the overview reads the broker's view from a background probe; the workers'
1 s broadcast (and, with Redis down, the reconnection attempts) never run on a request."""

from __future__ import annotations

import math
import time

import fakeredis
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.support.dashboard_client import logged_in_client
from worker.core.broker import create_celery
from worker.core.broker_probe import DEFAULT_INTERVAL_S, BrokerProbe, look
from worker.core.settings import Settings

BROADCAST_S = 1.0
PAGES = 8


class _SlowWorkers:
    """A Celery app whose one worker takes a second to answer; it counts the broadcasts."""

    def __init__(self) -> None:
        self.asked = 0
        self.control = self

    def inspect(self, timeout: float) -> _SlowWorkers:
        return self

    def active_queues(self) -> dict[str, list[dict[str, str]]]:
        self.asked += 1
        time.sleep(BROADCAST_S)
        return {"medseg@cpu1": [{"name": "cpu"}]}


def _timed_get(client: TestClient, path: str) -> tuple[float, str]:
    start = time.perf_counter()
    response = client.get(path)
    assert response.status_code == 200
    return time.perf_counter() - start, response.text


def test_the_overview_never_asks_the_workers_itself(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    broker = fakeredis.FakeRedis()
    broker.rpush(settings.broker_key_prefix + "gpu", b"m1")
    workers = _SlowWorkers()
    client = logged_in_client(settings, session_factory, redis=broker, celery=workers)
    _timed_get(client, "/")  # the first page may wait for the probe's first look
    start, times = time.monotonic(), []
    for _ in range(PAGES):
        seconds, text = _timed_get(client, "/")
        times.append(seconds)
        assert "1 message(s) waiting in queue gpu and no worker consumes it" in text
    looks = 1 + math.ceil((time.monotonic() - start) / DEFAULT_INTERVAL_S)
    assert workers.asked <= looks < PAGES, "the probe's broadcasts, not one per page"
    assert max(times) < BROADCAST_S, times


def test_with_the_broker_down_the_overview_answers_fast_and_says_so(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    client = logged_in_client(
        down,
        session_factory,
        redis=redis.Redis.from_url(down.broker_url, socket_timeout=1),
        celery=create_celery(down),
    )
    for _ in range(3):
        seconds, text = _timed_get(client, "/")
        assert "broker unreachable" in text
        assert seconds < BROADCAST_S


def test_a_probe_looks_in_the_background_and_keeps_the_latest_view() -> None:
    broker = fakeredis.FakeRedis()
    workers = _SlowWorkers()
    probe = BrokerProbe(broker, workers, interval_s=0.05)
    assert probe.latest() is None or probe.looks >= 1
    view = probe.latest(wait_s=5)
    assert view is not None and view.queue_depth == {"gpu": 0, "cpu": 0}
    assert view.workers == ["medseg@cpu1"] and view.consumers == {"cpu": ["medseg@cpu1"]}
    probe.stop()
    assert look(None, workers).queue_depth == {"gpu": None, "cpu": None}
    assert workers.asked >= 1


def test_a_probe_leaves_its_view_for_the_cli_and_a_stale_one_is_not_used() -> None:
    """Issue 32 item 9: `medseg status` takes the workers a running probe found (no broadcast
    of its own) while that view is fresh, and asks them itself once it is stale."""
    from datetime import UTC, datetime, timedelta

    from worker.core.broker_probe import VIEW_KEY, BrokerView, publish_view

    client = fakeredis.FakeRedis()
    workers = _SlowWorkers()
    probe = BrokerProbe(client, workers, "p:", interval_s=60).start()
    assert probe.latest(wait_s=5) is not None
    probe.stop()
    assert workers.asked == 1 and client.pttl("p:" + VIEW_KEY) > 0
    view = look(client, workers, "p:", shared_max_age_s=20)
    assert view.workers == ["medseg@cpu1"] and view.consumers == {"cpu": ["medseg@cpu1"]}
    assert workers.asked == 1  # read from Redis, not asked again
    old = BrokerView({}, ["medseg@old"], {}, datetime.now(UTC) - timedelta(minutes=1))
    publish_view(client, old, "p:")
    assert look(client, workers, "p:", shared_max_age_s=20).workers == ["medseg@cpu1"]
    assert workers.asked == 2

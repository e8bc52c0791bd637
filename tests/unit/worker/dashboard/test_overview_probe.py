"""Issue 21 item 9: the overview reads the broker's view from a background probe; the workers'
1 s broadcast (and, with Redis down, the reconnection attempts) never run on a request."""

from __future__ import annotations

import re
import time
from typing import Any

import fakeredis
import redis
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from worker.core.broker import create_celery
from worker.core.broker_probe import BrokerProbe, look
from worker.core.settings import Settings
from worker.dashboard.app import create_app
from worker.dashboard.auth import hash_password

PASSWORD = "overview password 1"
BROADCAST_S = 1.0


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


def _client(
    settings: Settings, factory: sessionmaker[Session], redis_client: Any, celery: Any
) -> TestClient:
    configured = settings.model_copy(
        update={"dashboard_password_hash": hash_password(PASSWORD), "dashboard_user": "op"}
    )
    app = create_app(configured, factory, redis_client, celery, probe_interval_s=60)
    client = TestClient(app, follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    data = {"username": "op", "password": PASSWORD, "csrf": token.group(1)}
    assert client.post("/login", data=data).status_code == 303
    return client


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
    client = _client(settings, session_factory, broker, workers)
    _timed_get(client, "/")  # the first page may wait for the probe's first look
    times = []
    for _ in range(5):
        seconds, text = _timed_get(client, "/")
        times.append(seconds)
        assert "1 message(s) waiting in queue gpu and no worker consumes it" in text
    assert workers.asked == 1, "one broadcast in all, by the probe, not one per page"
    assert max(times) < BROADCAST_S, times


def test_with_the_broker_down_the_overview_answers_fast_and_says_so(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    client = _client(
        down,
        session_factory,
        redis.Redis.from_url(down.broker_url, socket_timeout=1),
        create_celery(down),
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

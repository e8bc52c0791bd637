"""The workers' heartbeats in Redis (``worker.core.worker_beats``), the worker's signal handlers
that write them (``worker.runtime.beats``) and ``look`` reading them before asking anyone."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from worker.core.broker_probe import look
from worker.core.worker_beats import (
    BEAT_MAX_AGE_S,
    BEATS_KEY,
    BEATS_TTL_S,
    read_beats,
    write_beat,
    write_stopped,
)
from worker.runtime import beats

PREFIX = "medseg-t:"


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_the_fresh_workers_and_their_queues_as_a_broadcast_answers(
    client: fakeredis.FakeRedis,
) -> None:
    write_beat(client, PREFIX, "medseg@b", ["cpu"], now=1000.0)
    write_beat(client, PREFIX, "medseg@a", ["gpu", "cpu"], now=1001.0)
    assert read_beats(client, PREFIX, now=1002.0) == (
        ["medseg@a", "medseg@b"],
        {"cpu": ["medseg@a", "medseg@b"], "gpu": ["medseg@a"]},
    )
    assert 0 < client.ttl(PREFIX + BEATS_KEY) <= BEATS_TTL_S


def test_a_silent_or_stopped_worker_is_not_alive_but_the_hash_is_trusted(
    client: fakeredis.FakeRedis,
) -> None:
    write_beat(client, PREFIX, "medseg@killed", ["cpu"], now=1000.0)
    write_beat(client, PREFIX, "medseg@alive", ["cpu"], now=1000.0 + BEAT_MAX_AGE_S)
    assert read_beats(client, PREFIX, now=1000.0 + BEAT_MAX_AGE_S + 1) == (
        ["medseg@alive"],
        {"cpu": ["medseg@alive"]},
    )
    write_stopped(client, PREFIX, "medseg@alive")
    assert read_beats(client, PREFIX) == ([], {})  # "none alive", not "ask the workers"


def test_no_hash_or_no_broker_is_none(client: fakeredis.FakeRedis) -> None:
    assert read_beats(client, PREFIX) is None
    client.hset(PREFIX + BEATS_KEY, "medseg@odd", "not json")
    assert read_beats(client, PREFIX) == ([], {})

    class Down:
        def hgetall(self, key: str) -> Any:
            raise ConnectionError("no broker")

    assert read_beats(Down(), PREFIX) is None


class _NoBroadcast:
    """A Celery app whose control must not be touched."""

    @property
    def control(self) -> Any:
        raise AssertionError("the workers were asked")


def test_look_takes_the_heartbeats_before_a_probes_view_or_a_broadcast(
    client: fakeredis.FakeRedis,
) -> None:
    write_beat(client, PREFIX, "medseg@a", ["cpu", "gpu"])
    client.rpush(PREFIX + "cpu", b"job")
    view = look(client, _NoBroadcast(), PREFIX, shared_max_age_s=40, beats_max_age_s=10)
    assert view.queue_depth == {"gpu": 0, "cpu": 1}
    assert view.workers == ["medseg@a"]
    assert view.consumers == {"cpu": ["medseg@a"], "gpu": ["medseg@a"]}


def test_look_without_heartbeats_asks_the_workers(client: fakeredis.FakeRedis) -> None:
    replies = {"medseg@old": [{"name": "cpu"}]}
    inspect = SimpleNamespace(active_queues=lambda: replies)
    app = SimpleNamespace(control=SimpleNamespace(inspect=lambda timeout: inspect))
    view = look(client, app, PREFIX, beats_max_age_s=10)
    assert (view.workers, view.consumers) == (["medseg@old"], {"cpu": ["medseg@old"]})


class _Sender:
    """A signal's sender (hashable, as Celery's dispatcher needs)."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


def _heart(node: str, queues: list[str]) -> _Sender:
    """What Celery's ``heartbeat_sent`` passes: the Heart, with its event dispatcher."""
    app = SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=queues)))
    return _Sender(eventer=SimpleNamespace(hostname=node, app=app))


def test_the_signal_handlers_write_the_beat_and_the_stop(
    client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.signals import heartbeat_sent, worker_shutdown

    monkeypatch.setattr(beats, "_client", lambda: (client, PREFIX))
    heartbeat_sent.send(sender=_heart("medseg@w1", ["gpu", "cpu"]))
    entry = json.loads(client.hget(PREFIX + BEATS_KEY, "medseg@w1") or b"")
    assert entry["queues"] == ["cpu", "gpu"]
    assert read_beats(client, PREFIX) == (
        ["medseg@w1"],
        {"cpu": ["medseg@w1"], "gpu": ["medseg@w1"]},
    )
    worker_shutdown.send(sender=_Sender(hostname="medseg@w1"))
    assert read_beats(client, PREFIX) == ([], {})


def test_a_failed_write_never_disturbs_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> Any:
        raise ConnectionError("no broker")

    monkeypatch.setattr(beats, "_client", down)
    beats._beat(sender=_heart("medseg@w1", ["cpu"]))
    beats._stopped(sender=SimpleNamespace(hostname="medseg@w1"))
    beats._beat(sender=SimpleNamespace())  # no event dispatcher: nothing to write

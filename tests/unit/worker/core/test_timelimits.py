"""Per-model time limits: resolution order, the broker's redelivery timeout, the message."""

from __future__ import annotations

import json

import fakeredis
import pytest
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway.outbox import celery_publisher, dispatch_pending
from tests.support.jobs import add_job
from worker.core.broker import create_celery
from worker.core.registry import get_spec
from worker.core.settings import Settings
from worker.core.timelimits import (
    longest_time_limit_seconds,
    time_limit_seconds,
    visibility_timeout_seconds,
)
from worker.runtime.jobs import describe_failure


def test_override_then_model_default_then_global(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"job_time_limit_seconds": 1000, "model_time_limits": {"lung-ct-threshold": 42}}
    )
    assert time_limit_seconds("lung-ct-threshold", settings) == 42
    own = get_spec("fetal-head-unet").time_limit_seconds
    assert own is not None and time_limit_seconds("fetal-head-unet", settings) == own
    assert time_limit_seconds("no-such-model", settings) == 1000


def test_redelivery_waits_longer_than_the_longest_job(settings: Settings) -> None:
    settings = settings.model_copy(update={"model_time_limits": {"fetal-brain-unet": 7200}})
    assert longest_time_limit_seconds(settings) == 7200
    assert visibility_timeout_seconds(settings) > 7200 + 60
    app = create_celery(settings)
    assert app.conf.broker_transport_options["visibility_timeout"] > 7200 + 60
    assert app.conf.task_time_limit > 7200


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="MEDSEG_MODEL_TIME_LIMITS"):
        Settings(model_time_limits={"fetal-head-unet": 0})


def test_each_job_message_carries_its_model_limits(
    fake_redis: fakeredis.FakeRedis,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    app = create_celery(settings.model_copy(update={"broker_url": "redis://fake:6379/0"}))
    publish = celery_publisher(app, {"m": 25}.__getitem__, hard_margin_s=60)
    add_job(session_factory, "cpu")  # model "m"
    assert dispatch_pending(session_factory, publish) == 1
    (raw,) = fake_redis.lrange("cpu", 0, -1)
    assert json.loads(raw)["headers"]["timelimit"] == [85, 25]  # [hard, soft]


def test_a_soft_time_limit_is_reported_as_such() -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    assert describe_failure(SoftTimeLimitExceeded()).startswith("time limit exceeded")
    assert describe_failure(ValueError("x")) == "ValueError: x"

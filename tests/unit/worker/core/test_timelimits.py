"""Per-model time limits: resolution order, the broker's redelivery timeout, the message."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from unittest.mock import patch

import fakeredis
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from dicom_gateway.outbox import celery_publisher, dispatch_pending
from tests.plugins import sleepy
from tests.support.factories import chest_series
from tests.support.jobs import add_job, queue_test_job, set_job
from worker.core.broker import create_celery
from worker.core.registry import get_spec
from worker.core.settings import Settings
from worker.core.timelimits import (
    TimeLimit,
    longest_time_limit_seconds,
    resolve_time_limit,
    time_limit_seconds,
    visibility_timeout_seconds,
)
from worker.pipeline.cache import ModelCache
from worker.runtime.deadline import TimeLimitExceededError, deadline
from worker.runtime.jobs import describe_failure, execute_job


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


def test_job_messages_carry_no_limits_the_worker_applies_its_own(
    fake_redis: fakeredis.FakeRedis,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    """The gateway's settings do not decide a job's limit (issue 32 item 5): its messages
    carry none, and the worker's Celery limits are only backstops above the longest."""
    app = create_celery(settings.model_copy(update={"broker_url": "redis://fake:6379/0"}))
    add_job(session_factory, "cpu")  # model "m"
    assert dispatch_pending(session_factory, celery_publisher(app)) == 1
    (raw,) = fake_redis.lrange("cpu", 0, -1)
    assert json.loads(raw)["headers"]["timelimit"] == [None, None]
    longest = longest_time_limit_seconds(settings)
    assert app.conf.task_soft_time_limit > longest and app.conf.task_time_limit > longest


def test_the_limit_names_its_setting(settings: Settings) -> None:
    settings = settings.model_copy(update={"model_time_limits": {"lung-ct-threshold": 42}})
    assert resolve_time_limit("lung-ct-threshold", settings) == TimeLimit(
        42, "MEDSEG_MODEL_TIME_LIMITS[lung-ct-threshold]"
    )
    assert "own default" in resolve_time_limit("fetal-head-unet", settings).source
    assert resolve_time_limit("m", settings).source == "MEDSEG_JOB_TIME_LIMIT_SECONDS"


def test_the_worker_stops_a_model_at_its_own_limit(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """``execute_job`` given the worker's limit: the model is stopped inside, the job is
    retried later, and its error says the value, the setting and the worker."""
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=4))
    set_job(session_factory, job_id, model_name="sleep-test")
    limit = TimeLimit(1, "MEDSEG_MODEL_TIME_LIMITS[sleep-test]")
    started = time.monotonic()
    with patch("worker.runtime.jobs.get_spec", return_value=sleepy.SPEC):
        state = execute_job(
            session_factory,
            ModelCache("cpu"),
            tmp_path / "out",
            job_id,
            worker="medseg@here",
            time_limit={"sleep-test": limit}.__getitem__,
        )
    assert time.monotonic() - started < 30
    assert state is JobState.QUEUED  # retried with backoff
    with session_factory() as session:
        error = session.get_one(Job, job_id).error
    assert error == (
        "time limit exceeded: the model ran past its limit of 1 s "
        "(MEDSEG_MODEL_TIME_LIMITS[sleep-test], read on worker medseg@here)"
    )
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the timer is cleared


def test_a_deadline_not_reached_leaves_nothing_behind() -> None:
    before = signal.getsignal(signal.SIGALRM)
    with deadline(TimeLimit(5, "x")):
        pass
    assert signal.getsignal(signal.SIGALRM) == before
    with pytest.raises(TimeLimitExceededError, match="limit of 1 s"), deadline(TimeLimit(1, "x")):
        time.sleep(5)


def test_a_soft_time_limit_is_reported_as_such() -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    assert describe_failure(SoftTimeLimitExceeded()).startswith("time limit exceeded")
    assert describe_failure(ValueError("x")) == "ValueError: x"

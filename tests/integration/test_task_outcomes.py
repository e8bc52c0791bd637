"""What Celery (and so Flower) sees of a job: a real worker (prefork) on real Redis, tasks
published as the gateway does, Celery's task events received as Flower receives them.

A failed job is a failed task, a succeeded one a successful task; the failure is recorded
once, the message is acknowledged and not run again. The worker's /metrics then has the
per-stage timings of the job that ran.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from dicom_gateway.outbox import celery_publisher
from tests.support.factories import chest_series
from tests.support.jobs import add_job, queue_test_job, set_job
from tests.support.tools import scrape_metrics
from worker.core.broker import TASK_RUN_JOB, create_celery
from worker.core.settings import Settings
from worker.devtools.localstack import free_port, start_medseg, stop, wait_for_port

pytestmark = pytest.mark.integration


@dataclass
class Events:
    """Celery's events, received in a thread: Flower's view of the workers and tasks."""

    by_task: dict[str, list[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    exceptions: dict[str, str] = field(default_factory=dict)
    types: set[str] = field(default_factory=set)
    receiver: Any = None

    def handle(self, event: dict[str, Any]) -> None:
        self.types.add(str(event.get("type", "")))
        if event.get("uuid"):
            self.by_task.setdefault(str(event["uuid"]), []).append(str(event["type"]))
            if event.get("name"):
                self.names[str(event["uuid"])] = str(event["name"])
            if event.get("exception"):
                self.exceptions[str(event["uuid"])] = str(event["exception"])


@dataclass
class WorkerStack:
    app: Celery
    settings: Settings
    prefix: str
    metrics_port: int
    events: Events
    log: Path


def _listen(app: Celery, events: Events) -> None:
    with app.connection_for_read() as connection:
        events.receiver = app.events.Receiver(connection, handlers={"*": events.handle})
        events.receiver.capture(limit=None, timeout=None, wakeup=True)


@pytest.fixture
def stack(
    settings: Settings,
    session_factory: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> Iterator[WorkerStack]:
    with _worker_stack(settings, redis_url, tmp_path, {}) as running:
        yield running


@contextlib.contextmanager
def _worker_stack(
    settings: Settings, redis_url: str, tmp_path: Path, extra_env: dict[str, str]
) -> Iterator[WorkerStack]:
    """A real worker (prefork, one process, queue cpu) on real Redis, its task events heard."""
    prefix = f"medseg-outcomes-{uuid.uuid4().hex[:8]}:"
    settings = settings.model_copy(update={"broker_url": redis_url, "broker_key_prefix": prefix})
    metrics_port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(settings.data_dir),
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": prefix,
        "MEDSEG_DEVICE": "cpu",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        # Set on the worker alone: the tests publish without limits, as the gateway does.
        "MEDSEG_MODEL_PLUGINS": json.dumps(["tests.plugins.sleepy"]),
        "MEDSEG_MODEL_TIME_LIMITS": json.dumps({"sleep-test": 2}),
        **extra_env,
    }
    log = tmp_path / "worker.log"
    worker = start_medseg(
        ["worker", "--queues", "cpu", "--concurrency", "1", "--metrics-port", str(metrics_port)],
        env,
        log,
    )
    app = create_celery(settings)
    events = Events()
    try:
        wait_for_port(metrics_port, timeout=60, process=worker)
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=1.0):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
        threading.Thread(target=_listen, args=(app, events), daemon=True).start()
        # No enable_events() (what Flower asks when it connects): the worker sends task events
        # from its start (issue 32 item 2).
        while "worker-heartbeat" not in events.types:  # the receiver is listening
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        yield WorkerStack(app, settings, prefix, metrics_port, events, log)
    finally:
        if events.receiver is not None:
            events.receiver.should_stop = True
        stop(worker)


def _outcome(stack: WorkerStack, job_id: int, timeout: float = 90.0, model: str = "m") -> str:
    """Publish job ``job_id`` as the gateway does; the task's final event."""
    return _final_event(stack, _publish(stack, job_id, model), job_id, timeout)


def _publish(stack: WorkerStack, job_id: int, model: str = "m") -> str:
    return celery_publisher(stack.app)(TASK_RUN_JOB, job_id, "cpu", model)


def _final_event(stack: WorkerStack, task_id: str, job_id: int, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        final = [
            e
            for e in stack.events.by_task.get(task_id, [])
            if e in ("task-succeeded", "task-failed", "task-retried")
        ]
        if final:
            return final[-1]
        time.sleep(0.2)
    raise AssertionError(f"no final event for job {job_id}\n{stack.log.read_text()[-3000:]}")


def test_failed_job_is_a_failed_task_and_a_succeeded_one_a_success(
    stack: WorkerStack, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    good = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=6))
    bad = add_job(session_factory, "cpu")  # its model "m" is not registered: a permanent error

    assert _outcome(stack, bad) == "task-failed"
    assert _outcome(stack, good, model="lung-ct-threshold") == "task-succeeded"
    # Jobs are named by model in the events (Flower's Name column), apart from deliveries.
    wanted, until = (
        {"medseg.run_job[m]", "medseg.run_job[lung-ct-threshold]"},
        time.monotonic() + 10,
    )
    while not wanted <= set(stack.events.names.values()) and time.monotonic() < until:
        time.sleep(0.2)  # the task-received event may trail the final one
    assert wanted <= set(stack.events.names.values()), stack.events.names

    with session_factory() as session:
        failed, succeeded = session.get_one(Job, bad), session.get_one(Job, good)
        assert failed.state is JobState.FAILED and failed.attempts == 1
        assert failed.error and "m" in failed.error
        assert succeeded.state is JobState.SUCCEEDED and succeeded.attempts == 1
    # Acknowledged, not redelivered nor retried by Celery: nothing waits, nothing is held.
    client = redis.Redis.from_url(stack.settings.broker_url)
    assert client.llen(stack.prefix + "cpu") == 0
    assert client.hlen(stack.prefix + "unacked") == 0
    log = stack.log.read_text(errors="replace")
    assert "JobFailedError" in log and "Traceback" not in log, "one line, no traceback"


def test_a_time_limit_set_on_the_worker_alone_applies(
    stack: WorkerStack, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """MEDSEG_MODEL_TIME_LIMITS on the worker only (issue 32 item 5): the gateway's message
    carries no limit, the worker stops the model at 2 s and the error says where it was set."""
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 2, slices=4))
    set_job(session_factory, job_id, model_name="sleep-test")
    started = time.monotonic()
    assert _outcome(stack, job_id) == "task-failed"
    assert time.monotonic() - started < 60  # not the plugin's 600 s, nor Celery's 1830 s
    with session_factory() as session:
        job = session.get_one(Job, job_id)
    assert job.state is JobState.QUEUED and job.attempts == 1
    assert job.error is not None and job.error.startswith(
        "time limit exceeded: the model ran past its limit of 2 s "
        "(MEDSEG_MODEL_TIME_LIMITS[sleep-test], read on worker "
    ), job.error


def test_worker_metrics_have_each_stage_of_a_real_job(
    stack: WorkerStack, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 1, slices=6))
    assert _outcome(stack, job_id) == "task-succeeded"
    counts = {
        dict(labels)["stage"]: value
        for (name, labels), value in scrape_metrics(stack.metrics_port).items()
        if name == "medseg_pipeline_stage_seconds_count"
        and dict(labels).get("model") == "lung-ct-threshold"
    }
    assert {counts.get(s) for s in ("load", "load_model", "infer", "export")} == {1.0}


def test_the_gateway_counts_the_live_workers_and_the_consumers_of_each_queue(
    stack: WorkerStack, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(stack.settings.data_dir),
        "MEDSEG_BROKER_URL": stack.settings.broker_url,
        "MEDSEG_BROKER_KEY_PREFIX": stack.prefix,
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(free_port()),
        "MEDSEG_METRICS_PORT": str(metrics_port),
        "MEDSEG_MIN_FREE_BYTES": "0",
    }
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log")
    try:
        wait_for_port(metrics_port, timeout=60, process=gateway)
        deadline, samples = time.monotonic() + 60, scrape_metrics(metrics_port)
        while ("medseg_workers_alive", ()) not in samples and time.monotonic() < deadline:
            time.sleep(1)  # the probe's first look, a 1 s broadcast, runs in the background
            samples = scrape_metrics(metrics_port)
        assert samples.get(("medseg_workers_alive", ())) == 1.0, samples
        assert samples[("medseg_queue_consumers", (("queue", "cpu"),))] == 1.0
        assert samples[("medseg_queue_consumers", (("queue", "gpu"),))] == 0.0
    finally:
        stop(gateway)


def test_the_tasks_of_a_killed_worker_are_closed_when_it_comes_back(
    stack: WorkerStack, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Issue 32 item 2: a worker killed mid-job (SIGKILL, no goodbye) left its task STARTED in
    Flower forever; when the node starts again it hands the job back and sends task-failed."""
    import os
    import signal

    env = {
        "MEDSEG_DATA_DIR": str(stack.settings.data_dir),
        "MEDSEG_BROKER_URL": stack.settings.broker_url,
        "MEDSEG_BROKER_KEY_PREFIX": stack.prefix,
        "MEDSEG_DEVICE": "cpu",
        "MEDSEG_MODEL_PLUGINS": json.dumps(["tests.plugins.sleepy"]),
        "MEDSEG_MODEL_TIME_LIMITS": json.dumps({"sleep-test": 300}),
    }
    args = ["worker", "--queues", "gpu", "--concurrency", "1", "--name", "medseg-doomed@test"]
    doomed = start_medseg(args, env, tmp_path / "doomed.log", new_session=True)
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 3, slices=4))
    set_job(session_factory, job_id, model_name="sleep-test", queue="gpu")
    task_id = celery_publisher(stack.app)(TASK_RUN_JOB, job_id, "gpu", "sleep-test")
    set_job(session_factory, job_id, celery_task_id=task_id)
    deadline = time.monotonic() + 90
    while True:  # the model is running (the job claimed, not only the task started)
        with session_factory() as session:
            if session.get_one(Job, job_id).state is JobState.RUNNING:
                break
        assert time.monotonic() < deadline, (tmp_path / "doomed.log").read_text()
        time.sleep(0.2)
    assert "task-started" in stack.events.by_task.get(task_id, [])
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(30)
    with session_factory() as session:
        assert session.get_one(Job, job_id).state is JobState.RUNNING  # as it was left

    again = start_medseg(args, env, tmp_path / "again.log", new_session=True)
    try:
        while "task-failed" not in stack.events.by_task.get(task_id, []):
            assert time.monotonic() < deadline, (tmp_path / "again.log").read_text()
            time.sleep(0.2)
        assert "medseg-doomed@test died while running it" in stack.events.exceptions[task_id]
        with session_factory() as session:
            job = session.get_one(Job, job_id)
            assert job.state is JobState.QUEUED and "restarted while running" in (job.error or "")
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(30)


def test_a_batching_worker_runs_queued_us_jobs_in_one_batch_and_each_once(
    settings: Settings, session_factory: sessionmaker[Session], redis_url: str, tmp_path: Path
) -> None:
    """MEDSEG_BATCH_MAX=4 on a CPU worker: the first message's task claims the other two
    queued fetal head jobs and runs the three in one forward pass; their own messages are
    then dropped as duplicates (successful no-op tasks). Each job ran once, its result and
    its metrics recorded once, every message acknowledged."""
    from worker.models.fetal_head.us_dicom import write_us_phantom

    jobs = []
    for seed in (200201, 200202, 200203):
        path = write_us_phantom(tmp_path / "in" / f"us{seed}.dcm", seed).path
        job_id = queue_test_job(session_factory, [path])
        set_job(session_factory, job_id, model_name="fetal-head-unet", model_version="2.0.0")
        jobs.append(job_id)
    extra = {"MEDSEG_BATCH_MAX": "4", "MEDSEG_BATCH_WAIT_MS": "0"}
    with _worker_stack(settings, redis_url, tmp_path, extra) as running:
        tasks = [_publish(running, job_id, "fetal-head-unet") for job_id in jobs]
        outcomes = [_final_event(running, t, j) for t, j in zip(tasks, jobs, strict=True)]
        assert outcomes == ["task-succeeded"] * 3
        samples = scrape_metrics(running.metrics_port)
        client = redis.Redis.from_url(running.settings.broker_url)
        assert client.llen(running.prefix + "cpu") == 0
        assert client.hlen(running.prefix + "unacked") == 0
        log = running.log.read_text(errors="replace")
    assert f"jobs {jobs[0]}, {jobs[1]}, {jobs[2]}: one batch of 3 fetal-head-unet jobs" in log
    with session_factory() as session:
        rows = [session.get_one(Job, job_id) for job_id in jobs]
        assert all(job.state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW) for job in rows)
        assert [(job.attempts, len(job.results)) for job in rows] == [(1, 1)] * 3
        assert len({job.worker for job in rows}) == 1
    finished = sum(
        value
        for (name, labels), value in samples.items()
        if name == "medseg_jobs_finished_total" and dict(labels)["model"] == "fetal-head-unet"
    )
    assert finished == 3  # the batch mates counted once, not again for their duplicates

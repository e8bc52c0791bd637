"""Prometheus metrics of the Celery workers: per-stage latencies, inference time, GPU memory.

Celery's prefork pool runs tasks in child processes, so the metrics use prometheus_client's
multiprocess mode: every process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
and the worker's main process serves their sum on ``medseg worker --metrics-port``. Samples are
taken after each task (Celery's ``task_postrun``), one primary-key query each; the pipeline's
own stage timings are observed where the job runs (``observe_pipeline``); nothing is recorded
when metrics are off.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.jobstate import FINISHED_WITH_RESULT
from db.models import Delivery, DeliveryState, Job, JobState, Result

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
INFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
PIPELINE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
#: Stages of one job inside the worker (worker.pipeline.run's timings, and the delivery task).
PIPELINE_STAGES = ("load", "load_model", "preprocess", "infer", "postprocess", "export", "deliver")


@lru_cache(maxsize=1)
def _metrics() -> dict[str, Any]:
    """Built on first use in each process, after PROMETHEUS_MULTIPROC_DIR is set."""
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "stage": Histogram(
            "medseg_job_stage_seconds",
            "Time between job stages: complete_to_queued, queued_to_started, "
            "started_to_finished, finished_to_delivered",
            ["stage"],
            buckets=STAGE_BUCKETS,
        ),
        "pipeline": Histogram(
            "medseg_pipeline_stage_seconds",
            "Time spent in each stage inside the worker, by model: load (read and decode the "
            "series), load_model (first use in a process), preprocess, infer, postprocess "
            "(models that split predict; others count all of it as infer), export (SEG, SR, "
            "report), deliver (one delivery attempt, any outcome)",
            ["model", "stage"],
            buckets=PIPELINE_BUCKETS,
        ),
        "inference": Histogram(
            "medseg_inference_seconds",
            "Model inference time per successful job",
            ["model"],
            buckets=INFERENCE_BUCKETS,
        ),
        "finished": Counter(
            "medseg_jobs_finished", "Job attempts ended, by model and state", ["model", "state"]
        ),
        "flagged": Counter(
            "medseg_results_flagged",
            "Results the model's quality gate flagged (needs_review), by model and reason code "
            "(reason_code: the reason's text before the first '(' or ':', slugified)",
            ["model", "reason"],
        ),
        "deliveries": Counter(
            "medseg_deliveries_finished", "Delivery attempts ended, by state", ["state"]
        ),
        "delivery_failed": Counter(
            "medseg_deliveries_failed",
            "Deliveries that failed for good (attempts used up), by destination",
            ["destination"],
        ),
        "gpu": Gauge(
            "medseg_gpu_memory_peak_bytes",
            "Peak CUDA memory allocated by a worker process (largest over live processes)",
            ["device"],
            multiprocess_mode="livemax",
        ),
    }


_NOT_SLUG = re.compile(r"[^a-z0-9]+")
REASON_CODE_MAX = 40


def reason_code(reason: str) -> str:
    """A bounded Prometheus label for a free-text review reason: the text before the first
    "(" or ":" (where the numbers start), lower case, runs of other characters as "_",
    at most 40 characters; "other" when nothing is left. "mask is not elliptical (IoU 0.91
    < 0.96)" -> "mask_is_not_elliptical"."""
    head = re.split(r"[(:]", reason, maxsplit=1)[0].lower()
    slug = _NOT_SLUG.sub("_", head).strip("_")[:REASON_CODE_MAX].rstrip("_")
    return slug or "other"


def reason_codes(review: str | None) -> list[str]:
    """One code per distinct reason of a result's review text (one reason a line)."""
    return sorted({reason_code(line) for line in (review or "").splitlines() if line.strip()})


def enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite gives naive UTC back
    return value


def observe_pipeline(model: str, timings: Mapping[str, float]) -> None:
    """The stage timings of one job that ran ``model``; nothing when metrics are off."""
    if not enabled():
        return
    histogram = _metrics()["pipeline"]
    for stage, seconds in timings.items():
        if stage in PIPELINE_STAGES and seconds >= 0:
            histogram.labels(model=model, stage=stage).observe(seconds)


def _observe(stage: str, start: datetime | None, end: datetime | None) -> None:
    start, end = _aware(start), _aware(end)
    if start is not None and end is not None and end >= start:
        _metrics()["stage"].labels(stage=stage).observe((end - start).total_seconds())


def record_job(session_factory: sessionmaker[Session], job_id: int) -> None:
    """Samples of job ``job_id`` after a worker ran it (any outcome)."""
    with session_factory() as session:
        job = session.get(
            Job, job_id, options=[selectinload(Job.series), selectinload(Job.results)]
        )
        if job is None or job.state is JobState.RUNNING:
            return
        if job.attempts == 1:  # later attempts were given back after a failure, not queued anew
            # From the job's own queueing: its series' completion for the job made then, the
            # operator's request for a re-run or a retry (never the original completion).
            _observe("complete_to_queued", queued_since(job), job.enqueued_at)
        _observe("queued_to_started", job.enqueued_at, job.started_at)
        _observe("started_to_finished", job.started_at, job.finished_at)
        metrics = _metrics()
        metrics["finished"].labels(model=job.model_name, state=job.state.value).inc()
        if job.state in FINISHED_WITH_RESULT and job.results:
            result: Result = job.results[-1]
            metrics["inference"].labels(model=result.model_name).observe(result.inference_seconds)
            if job.state is JobState.NEEDS_REVIEW:
                for code in reason_codes(result.review):
                    metrics["flagged"].labels(model=result.model_name, reason=code).inc()
    _record_gpu_memory()


def queued_since(job: Job) -> datetime | None:
    """When ``job`` entered the queue (``queued_at``; rows older than it: the completion)."""
    return _aware(job.queued_at) or _aware(job.series.completed_at)


def _record_gpu_memory() -> None:
    torch = sys.modules.get("torch")  # only when a model imported it: never import it here
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        peak = float(torch.cuda.max_memory_allocated(index))
        _metrics()["gpu"].labels(device=f"cuda:{index}").set(peak)


def record_delivery(
    session_factory: sessionmaker[Session], delivery_id: int, seconds: float | None = None
) -> None:
    """Samples of delivery ``delivery_id`` after an attempt that took ``seconds``."""
    with session_factory() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            return
        if seconds is not None:
            stage = _metrics()["pipeline"]
            stage.labels(model=delivery.result.model_name, stage="deliver").observe(seconds)
        if delivery.state is DeliveryState.SENT:
            _observe(
                "finished_to_delivered", delivery.result.job.finished_at, delivery.delivered_at
            )
        _metrics()["deliveries"].labels(state=delivery.state.value).inc()
        if delivery.state is DeliveryState.FAILED:
            _metrics()["delivery_failed"].labels(destination=delivery.destination).inc()


#: perf_counter at the start of each running task, by task id (one process runs one at a time).
_started: dict[str, float] = {}


def _before_task(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _after_task(
    sender: Any = None,
    args: Any = None,
    task_id: str | None = None,
    retval: Any = None,
    **_: Any,
) -> None:
    from worker.core.broker import TASK_DELIVER, TASK_RUN_JOB
    from worker.runtime.tasks import context

    started = _started.pop(task_id, None) if task_id else None
    name = getattr(sender, "name", "")
    if name not in (TASK_RUN_JOB, TASK_DELIVER) or not args:
        return
    if name == TASK_RUN_JOB and retval is None:
        return  # a duplicate message (a job run in another's batch, say): nothing ran
    try:
        if name == TASK_RUN_JOB:
            record_job(context().session_factory, int(args[0]))
        else:
            seconds = time.perf_counter() - started if started is not None else None
            record_delivery(context().session_factory, int(args[0]), seconds)
    except Exception as exc:  # metrics never break a task
        logger.warning("metrics of %s not recorded: %s", name, type(exc).__name__)


def _process_gone(**_: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def start_worker_metrics(port: int, host: str) -> Path:
    """In the worker's main process, before the pool starts: multiprocess files, the HTTP
    endpoint, and the signal handlers the pool processes inherit. Returns the folder."""
    folder = Path(os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="medseg-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # samples of an earlier run of this worker
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)

    from celery.signals import task_postrun, task_prerun, worker_process_shutdown
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    task_prerun.connect(_before_task, weak=False)
    task_postrun.connect(_after_task, weak=False)
    worker_process_shutdown.connect(_process_gone, weak=False)
    logger.info("worker metrics on http://%s:%d/metrics (files in %s)", host, port, folder)
    return folder
